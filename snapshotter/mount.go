package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

// Mount is one mount(2) call, in the form the OCI runtime spec uses for
// root filesystems, so that it can be stored, sent over the API and replayed
// by the shim.
type Mount struct {
	// Type is the filesystem type: "overlay", or "bind" for a bind mount.
	Type string
	// Source is the device or directory; "overlay" for overlay mounts.
	Source string
	// Options are mount(8)-style options. Flags (ro, bind, nosuid, ...) become
	// mount flags; the rest (lowerdir=..., upperdir=...) become the data string.
	Options []string
}

// flagOptions maps the options that are mount flags. clear means the option
// removes the flag (rw removes MS_RDONLY).
var flagOptions = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro":          {false, unix.MS_RDONLY},
	"rw":          {true, unix.MS_RDONLY},
	"bind":        {false, unix.MS_BIND},
	"rbind":       {false, unix.MS_BIND | unix.MS_REC},
	"nosuid":      {false, unix.MS_NOSUID},
	"suid":        {true, unix.MS_NOSUID},
	"nodev":       {false, unix.MS_NODEV},
	"dev":         {true, unix.MS_NODEV},
	"noexec":      {false, unix.MS_NOEXEC},
	"exec":        {true, unix.MS_NOEXEC},
	"noatime":     {false, unix.MS_NOATIME},
	"atime":       {true, unix.MS_NOATIME},
	"nodiratime":  {false, unix.MS_NODIRATIME},
	"relatime":    {false, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME},
	"sync":        {false, unix.MS_SYNCHRONOUS},
	"async":       {true, unix.MS_SYNCHRONOUS},
	"dirsync":     {false, unix.MS_DIRSYNC},
	"remount":     {false, unix.MS_REMOUNT},
	"mand":        {false, unix.MS_MANDLOCK},
	"nomand":      {true, unix.MS_MANDLOCK},
}

// parseOptions splits options into mount flags and the data string.
func parseOptions(options []string) (flags uintptr, data []string) {
	for _, o := range options {
		if f, ok := flagOptions[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		if o == "defaults" {
			continue
		}
		data = append(data, o)
	}
	return flags, data
}

// pageSize is the limit the kernel puts on the mount data string (it copies
// one page and truncates; overlay then fails with a confusing error).
var pageSize = os.Getpagesize()

// Mount mounts m at target, which must exist.
//
// A read-only bind mount needs two calls, since the kernel ignores MS_RDONLY
// on the initial MS_BIND: bind, then remount read-only.
//
// An overlay mount whose data exceeds a page (long lowerdir lists on deep
// images) is retried with paths relative to the longest common directory of
// its layers, from a thread that has its own working directory (see
// mountRelative), so the agent's working directory is never changed.
func (m Mount) Mount(target string) error {
	flags, data := parseOptions(m.Options)
	typ := m.Type
	if typ == "bind" {
		flags |= unix.MS_BIND
	}
	if flags&unix.MS_BIND != 0 {
		typ = ""
	}
	dataStr := strings.Join(data, ",")
	if typ == "overlay" && len(dataStr) >= pageSize {
		return mountRelative(m.Source, target, flags, data)
	}
	first := flags
	if flags&unix.MS_BIND != 0 {
		// The kernel ignores these on a new bind mount; they are applied by
		// the remount below.
		first &^= bindRemountFlags
	}
	if err := unix.Mount(m.Source, target, typ, first, dataStr); err != nil {
		return fmt.Errorf("mount %s %q at %q (options %s): %w", m.Type, m.Source, target, strings.Join(m.Options, ","), err)
	}
	if flags&unix.MS_BIND != 0 && flags&bindRemountFlags != 0 && flags&unix.MS_REMOUNT == 0 {
		rflags := unix.MS_REMOUNT | unix.MS_BIND | flags&bindRemountFlags
		if err := unix.Mount("", target, "", rflags, ""); err != nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			return fmt.Errorf("remount bind of %q at %q with %s: %w", m.Source, target, strings.Join(m.Options, ","), err)
		}
	}
	return nil
}

// bindRemountFlags are the per-mount flags a bind mount only takes on a
// remount.
const bindRemountFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME | unix.MS_STRICTATIME

// mountRelative mounts an overlay whose option string is too long by making
// the layer paths relative to their common parent directory and mounting
// from that directory.
//
// chdir is per process in Go (all threads share one fs context), so it runs
// on a goroutine locked to its thread after unshare(CLONE_FS), which gives
// the thread a private cwd. The goroutine returns without unlocking, so the
// runtime retires the thread rather than reuse one with a stray cwd.
func mountRelative(source, target string, flags uintptr, data []string) error {
	var paths []string
	for _, o := range data {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			continue
		}
		switch k {
		case "lowerdir", "upperdir", "workdir":
			paths = append(paths, strings.Split(v, ":")...)
		}
	}
	base := commonDir(paths)
	if base == "" || base == "/" {
		return fmt.Errorf("mount overlay at %q: options are %d bytes, over the %d-byte page limit, and the layers share no directory to shorten them against: %w",
			target, len(strings.Join(data, ",")), pageSize, errdefs.ErrInvalidArgument)
	}
	rel := make([]string, len(data))
	for i, o := range data {
		k, v, ok := strings.Cut(o, "=")
		switch {
		case ok && (k == "lowerdir" || k == "upperdir" || k == "workdir"):
			parts := strings.Split(v, ":")
			for j, p := range parts {
				r, err := filepath.Rel(base, p)
				if err != nil {
					return fmt.Errorf("mount overlay at %q: %w", target, err)
				}
				parts[j] = r
			}
			rel[i] = k + "=" + strings.Join(parts, ":")
		default:
			rel[i] = o
		}
	}
	dataStr := strings.Join(rel, ",")
	if len(dataStr) >= pageSize {
		return fmt.Errorf("mount overlay at %q: options are %d bytes even relative to %q, over the %d-byte page limit; the image has too many layers for overlay (the kernel allows at most 500): %w",
			target, len(dataStr), base, pageSize, errdefs.ErrResourceExhausted)
	}
	absTarget, err := filepath.Abs(target)
	if err != nil {
		return fmt.Errorf("mount overlay at %q: %w", target, err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: this thread's cwd differs from the process's.
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare(CLONE_FS) to mount overlay at %q: %w", target, err)
			return
		}
		if err := unix.Chdir(base); err != nil {
			errc <- fmt.Errorf("chdir %q to mount overlay at %q: %w", base, target, err)
			return
		}
		if err := unix.Mount(source, absTarget, "overlay", flags, dataStr); err != nil {
			errc <- fmt.Errorf("mount overlay at %q with layers relative to %q (%d bytes of options): %w", target, base, len(dataStr), err)
			return
		}
		errc <- nil
	}()
	return <-errc
}

// commonDir returns the longest directory that contains every path.
func commonDir(paths []string) string {
	if len(paths) == 0 {
		return ""
	}
	common := filepath.Dir(filepath.Clean(paths[0]))
	for _, p := range paths[1:] {
		p = filepath.Clean(p)
		for common != "/" && !strings.HasPrefix(p, common+"/") {
			common = filepath.Dir(common)
		}
	}
	return common
}

// MountAll mounts every mount in order at target, which must exist; a
// failure unmounts what was mounted. A snapshotter returns one mount, but a
// list keeps the door open for stacked mounts.
func MountAll(mounts []Mount, target string) error {
	if len(mounts) == 0 {
		return fmt.Errorf("mount at %q: no mounts given: %w", target, errdefs.ErrInvalidArgument)
	}
	for i, m := range mounts {
		if err := m.Mount(target); err != nil {
			for j := 0; j < i; j++ {
				_ = unix.Unmount(target, unix.MNT_DETACH)
			}
			return err
		}
	}
	return nil
}

// Unmount unmounts every mount stacked at target. A busy mount is retried a
// few times (a process may be exiting) and then detached with MNT_DETACH,
// which frees the mount point at once and the filesystem when its last user
// goes. A target with nothing mounted is not an error, so Unmount is safe in
// cleanup paths.
func Unmount(target string) error {
	// Bounded so a target that keeps reporting success (a propagation
	// loop) cannot spin forever.
	for i := 0; i < 64; i++ {
		err := unmountOnce(target)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil // not a mount point (any more), or gone
		}
		if err != nil {
			return fmt.Errorf("unmount %q: %w", target, err)
		}
	}
	return fmt.Errorf("unmount %q: still mounted after 64 unmounts: %w", target, errdefs.ErrFailedPrecondition)
}

func unmountOnce(target string) error {
	var err error
	for i := 0; i < 5; i++ {
		err = unix.Unmount(target, 0)
		if !errors.Is(err, unix.EBUSY) {
			return err
		}
		time.Sleep(time.Duration(i+1) * 10 * time.Millisecond)
	}
	return unix.Unmount(target, unix.MNT_DETACH)
}

// WritableDir returns the directory that holds the Active snapshot key's own
// writes, for a layer applier that unpacks without mounting. It asks the
// snapshotter if it implements WritableDirer and otherwise derives the
// directory from the snapshot's mounts: the overlay upperdir, or the source
// of a read-write bind mount.
func WritableDir(ctx context.Context, s Snapshotter, key string) (string, error) {
	if w, ok := s.(WritableDirer); ok {
		return w.WritableDir(ctx, key)
	}
	mounts, err := s.Mounts(ctx, key)
	if err != nil {
		return "", err
	}
	return WritableDirOf(mounts)
}

// WritableDirOf derives the writable directory from a snapshot's mounts: the
// upperdir of an overlay or the source of a read-write bind mount.
func WritableDirOf(mounts []Mount) (string, error) {
	if len(mounts) != 1 {
		return "", fmt.Errorf("%d mounts: want exactly one to find a writable directory: %w", len(mounts), errdefs.ErrInvalidArgument)
	}
	m := mounts[0]
	flags, data := parseOptions(m.Options)
	switch {
	case m.Type == "overlay":
		for _, o := range data {
			if v, ok := strings.CutPrefix(o, "upperdir="); ok {
				return v, nil
			}
		}
		return "", fmt.Errorf("overlay mount has no upperdir, so it is read-only (a View?): %w", errdefs.ErrFailedPrecondition)
	case m.Type == "bind" || flags&unix.MS_BIND != 0:
		if flags&unix.MS_RDONLY != 0 {
			return "", fmt.Errorf("bind mount of %q is read-only (a View?): %w", m.Source, errdefs.ErrFailedPrecondition)
		}
		return m.Source, nil
	}
	return "", fmt.Errorf("mount type %q has no known writable directory: %w", m.Type, errdefs.ErrNotImplemented)
}
