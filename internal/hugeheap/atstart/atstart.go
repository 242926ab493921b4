// Package atstart collapses the Go heap's start onto huge pages (see
// hugeheap) as the process starts: import it for its side effect from the
// main package of a short-lived command.
package atstart

import "github.com/berth-dev/berth/internal/hugeheap"

func init() { hugeheap.Collapse() }
