// Command berthctl is Berth's command line client.
package main

import "github.com/berth-dev/berth/ctl"

func main() { ctl.Run() }
