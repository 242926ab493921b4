package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

// Overlay is a Snapshotter that stacks snapshot directories with overlayfs.
// Each snapshot stores only its own changes in <root>/snapshots/<id>/fs, the
// upper dir while it is Active and a lower dir once Committed.
//
// Mounts by kind and depth of the parent chain:
//
//	Active, no parent      bind <id>/fs, rw
//	Active, parents        overlay lowerdir=<parents' fs, nearest first>,upperdir=<id>/fs,workdir=<id>/work
//	View,   no parent      bind <id>/fs (empty), ro
//	View,   one in chain   bind <parent>/fs, ro
//	View,   longer chain   overlay lowerdir=<parents' fs> (read-only by construction)
//
// The kernel copies at most a page of mount options; Mount.Mount shortens a
// longer lowerdir list to paths relative to <root>/snapshots (see
// mountRelative), which fits the kernel's limit of 500 layers.
type Overlay struct {
	*core
}

// NewOverlay opens (creating if needed) an overlay snapshotter in root. It
// does not test that overlayfs works there; call Supported first to choose
// between Overlay and Native.
func NewOverlay(root string, opts ...Option) (*Overlay, error) {
	c, err := newCore(root, overlayDriver{}, opts)
	if err != nil {
		return nil, err
	}
	return &Overlay{core: c}, nil
}

// CommitOnto implements Rebaser: an overlay snapshot's directory is its
// upper dir alone, whatever lies below it.
func (o *Overlay) CommitOnto(ctx context.Context, name, key, parent string, sync bool) error {
	return o.commit(ctx, name, key, sync, &parent, nil)
}

// LowerDirs implements Rebaser.
func (o *Overlay) LowerDirs(ctx context.Context, parent string) ([]string, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	var dirs []string
	err := o.db.View(func(tx *bolt.Tx) error {
		ids, err := o.parentChain(tx, "lower dirs", parent)
		if err != nil {
			return err
		}
		for _, d := range o.dirs(ids) {
			dirs = append(dirs, filepath.Join(d, "fs"))
		}
		return nil
	})
	return dirs, err
}

type overlayDriver struct{}

func (overlayDriver) build(ctx context.Context, dir string, kind Kind, parents []string) error {
	if err := os.Mkdir(filepath.Join(dir, "fs"), 0o755); err != nil {
		return err
	}
	if kind == KindActive {
		return os.Mkdir(filepath.Join(dir, "work"), 0o711)
	}
	return nil
}

func (overlayDriver) mounts(dir string, kind Kind, parents []string) []Mount {
	fsDir := filepath.Join(dir, "fs")
	switch {
	case kind == KindActive && len(parents) == 0:
		return []Mount{{Type: "bind", Source: fsDir, Options: []string{"rbind", "rw"}}}
	case kind == KindActive:
		return []Mount{{Type: "overlay", Source: "overlay", Options: []string{
			"lowerdir=" + lowerdirs(parents),
			"upperdir=" + fsDir,
			"workdir=" + filepath.Join(dir, "work"),
		}}}
	case len(parents) == 0:
		return []Mount{{Type: "bind", Source: fsDir, Options: []string{"rbind", "ro"}}}
	case len(parents) == 1:
		return []Mount{{Type: "bind", Source: filepath.Join(parents[0], "fs"), Options: []string{"rbind", "ro"}}}
	default:
		return []Mount{{Type: "overlay", Source: "overlay", Options: []string{"ro", "lowerdir=" + lowerdirs(parents)}}}
	}
}

func lowerdirs(parents []string) string {
	fs := make([]string, len(parents))
	for i, p := range parents {
		fs[i] = filepath.Join(p, "fs")
	}
	return strings.Join(fs, ":")
}

// Supported reports whether overlayfs can be used under root by mounting a
// two-layer overlay with an upper dir in a temporary directory there (a
// module check is not enough: overlay refuses some upper filesystems, e.g.
// overlay itself). The error wraps ErrNotImplemented when overlay does not
// work and says why.
func Supported(root string) error {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("overlay check: %w", err)
	}
	tmp, err := os.MkdirTemp(root, "overlay-check-")
	if err != nil {
		return fmt.Errorf("overlay check: %w", err)
	}
	err = tryOverlay(root, tmp)
	if rerr := os.RemoveAll(tmp); rerr != nil && err == nil {
		err = fmt.Errorf("overlay check: clean up: %w", rerr)
	}
	return err
}

// tryOverlay mounts and unmounts a two-layer overlay with an upper dir in tmp.
func tryOverlay(root, tmp string) error {
	for _, d := range []string{"l1", "l2", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o700); err != nil {
			return fmt.Errorf("overlay check: %w", err)
		}
	}
	merged := filepath.Join(tmp, "merged")
	m := Mount{Type: "overlay", Source: "overlay", Options: []string{
		"lowerdir=" + filepath.Join(tmp, "l2") + ":" + filepath.Join(tmp, "l1"),
		"upperdir=" + filepath.Join(tmp, "upper"),
		"workdir=" + filepath.Join(tmp, "work"),
	}}
	if err := m.Mount(merged); err != nil {
		hint := ""
		if errors.Is(err, unix.ENODEV) {
			hint = " (overlay module not loaded?)"
		}
		return fmt.Errorf("overlay cannot mount under %s%s; use the native snapshotter: %v: %w", root, hint, err, errdefs.ErrNotImplemented)
	}
	if err := Unmount(merged); err != nil {
		return fmt.Errorf("overlay check: %w", err)
	}
	return nil
}

// Both implementations satisfy the interfaces the agent and the layer
// applier use.
var (
	_ Snapshotter   = (*Overlay)(nil)
	_ WritableDirer = (*Overlay)(nil)
	_ Snapshotter   = (*Native)(nil)
	_ WritableDirer = (*Native)(nil)
)
