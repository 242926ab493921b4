package container

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
)

// applySeccomp installs the spec's filter on the calling thread.
// TODO(seccomp): compile spec.Linux.Seccomp with libseccomp; until then a
// spec asking for seccomp fails rather than running unconfined.
func applySeccomp(s *specs.LinuxSeccomp) error {
	return fmt.Errorf("seccomp: %w", errdefs.ErrNotImplemented)
}
