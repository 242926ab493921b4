// Command berth-shim supervises one container for berthd: it owns the
// container's namespaces, cgroup and stdio and outlives berthd restarts.
// berthd starts it; it is not meant to be run by hand.
//
// This release carries the binary and its version handshake only; the
// shim service lands with the shim and runtime issue.
package main

import (
	"fmt"
	"os"

	"github.com/berth-dev/berth/version"
)

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Printf("berth-shim %s (%s)\n", version.Version, version.GitCommit)
		return
	}
	fmt.Fprintln(os.Stderr, "berth-shim: started by berthd, not by hand; this build serves no tasks yet")
	os.Exit(2)
}
