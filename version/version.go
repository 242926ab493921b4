// Package version holds the build's version, set with -ldflags by the
// Makefile, and the API version every binary speaks.
package version

import "runtime"

// Set at link time by the Makefile.
var (
	Version   = "dev"
	GitCommit = "unknown"
)

// APIVersion is the public gRPC API's package.
const APIVersion = "berth.v1"

// GoVersion is the Go toolchain the binary was built with.
func GoVersion() string { return runtime.Version() }
