package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// validateBindSources checks that the source of every bind mount exists
// on the host, so a mistyped path fails CreateContainer with an error that
// names it (rather than the container's init failing at start, after a
// container and its rootfs were made). Docker's `-v` would create the
// directory; Berth refuses, as Docker's `--mount type=bind` does.
func validateBindSources(spec *berthv1.ContainerSpec) error {
	for i, m := range spec.GetMounts() {
		if m.GetType() != "bind" {
			continue
		}
		if _, err := os.Stat(m.GetSource()); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("spec.mounts[%d]: bind source path %s does not exist: create it or fix the path: %w", i, m.GetSource(), errdefs.ErrInvalidArgument)
			}
			return fmt.Errorf("spec.mounts[%d]: bind source path %s: %v: %w", i, m.GetSource(), err, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}
