// Command berthctl is Berth's command line client.
package main

import (
	"github.com/berth-dev/berth/ctl"
	// Start-up time: see the package.
	_ "github.com/berth-dev/berth/internal/hugeheap/atstart"
)

func main() { ctl.Run() }
