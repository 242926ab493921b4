package snapshotter

import (
	"context"
	"os"
	"path/filepath"
)

// Native is a Snapshotter for filesystems where overlayfs cannot mount. An
// Active snapshot is a full copy of its parent in <root>/snapshots/<id>/fs
// (modes, ownership, times, xattrs, symlinks, hard links, devices and fifos
// preserved) and is bind-mounted read-write; a View bind-mounts its
// parent's directory read-only, which costs no copy because a Committed
// snapshot never changes.
//
// Prepare costs time and space proportional to the parent's size, so Native
// is the fallback, not the default.
type Native struct {
	*core
}

// NewNative opens (creating if needed) a native snapshotter in root.
func NewNative(root string, opts ...Option) (*Native, error) {
	c, err := newCore(root, nativeDriver{}, opts)
	if err != nil {
		return nil, err
	}
	return &Native{core: c}, nil
}

type nativeDriver struct{}

func (nativeDriver) build(ctx context.Context, dir string, kind Kind, parents []string) error {
	dst := filepath.Join(dir, "fs")
	if kind == KindActive && len(parents) > 0 {
		return copyTree(ctx, filepath.Join(parents[0], "fs"), dst)
	}
	return os.Mkdir(dst, 0o755)
}

func (nativeDriver) mounts(dir string, kind Kind, parents []string) []Mount {
	switch {
	case kind == KindActive:
		return []Mount{{Type: "bind", Source: filepath.Join(dir, "fs"), Options: []string{"rbind", "rw"}}}
	case len(parents) == 0:
		return []Mount{{Type: "bind", Source: filepath.Join(dir, "fs"), Options: []string{"rbind", "ro"}}}
	default:
		return []Mount{{Type: "bind", Source: filepath.Join(parents[0], "fs"), Options: []string{"rbind", "ro"}}}
	}
}
