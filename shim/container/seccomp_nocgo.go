//go:build !cgo

package container

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
)

// seccompCompilerID is empty without a compiler: nothing is cached.
func seccompCompilerID() string { return "" }

// compileSeccomp needs libseccomp, hence cgo: a spec that asks for seccomp
// fails rather than running unconfined.
func compileSeccomp(*specs.LinuxSeccomp) (*seccompProgram, error) {
	return nil, fmt.Errorf("seccomp needs a cgo build with libseccomp: %w", errdefs.ErrNotImplemented)
}
