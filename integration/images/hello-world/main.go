// Command hello-world is the program of Berth's hello-world image: a tiny
// static binary that tells the user what Berth just did to run it.
package main

import (
	"fmt"
	"os"
	"runtime"
)

const message = `
Hello from Berth!
This message shows that your installation appears to be working correctly.

To generate this message, Berth took the following steps:
 1. The berthctl client contacted the berthd agent.
 2. The agent pulled the "hello-world" image from the registry.
    (%s)
 3. The agent created a new container from that image, and the container's
    own berth-shim ran the program that produced the output you are now
    reading.
 4. The agent streamed that output to the berthctl client, which sent it
    to your terminal.

To try something more ambitious, you can run a busybox container with:
 $ berthctl run -it busybox sh

For more examples and ideas, see the README.
`

func main() {
	if _, err := fmt.Fprintf(os.Stdout, message, runtime.GOARCH); err != nil {
		os.Exit(1)
	}
}
