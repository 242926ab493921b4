package snapshotter

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/berth-dev/berth/errdefs"
)

// Open returns the snapshotter berthd uses under dir: Overlay in
// dir/overlay where overlayfs can mount, else Native in dir/native.
//
// A root that already holds metadata keeps its snapshotter, so a change in
// what the host supports never strands existing snapshots: native data stays
// native even once overlay works, and overlay data on a host where overlay no
// longer mounts is an error rather than a silent switch to an empty store.
func Open(dir string, opts ...Option) (Snapshotter, error) {
	o := options{log: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	overlayRoot, nativeRoot := filepath.Join(dir, "overlay"), filepath.Join(dir, "native")
	hasOverlay, err := exists(filepath.Join(overlayRoot, "metadata.db"))
	if err != nil {
		return nil, err
	}
	hasNative, err := exists(filepath.Join(nativeRoot, "metadata.db"))
	if err != nil {
		return nil, err
	}
	switch {
	case hasNative && !hasOverlay:
		return NewNative(nativeRoot, opts...)
	case hasOverlay:
		if err := Supported(overlayRoot); err != nil {
			return nil, fmt.Errorf("%s holds overlay snapshots but overlay does not mount there any more (move the data to a filesystem overlay supports, or remove it to start over with native): %w", overlayRoot, err)
		}
		return NewOverlay(overlayRoot, opts...)
	}
	if err := Supported(overlayRoot); err != nil {
		if !errors.Is(err, errdefs.ErrNotImplemented) {
			return nil, err
		}
		o.log.Warn("overlayfs unavailable, using the native (copy) snapshotter: every container start copies its image", "dir", nativeRoot, "reason", err)
		_ = os.Remove(overlayRoot) // created by the check; empty
		return NewNative(nativeRoot, opts...)
	}
	return NewOverlay(overlayRoot, opts...)
}

func exists(p string) (bool, error) {
	_, err := os.Stat(p)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}
