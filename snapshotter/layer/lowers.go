package layer

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

// lowers are the read-only layers under an overlay upper directory, as fds
// of their roots, topmost first.
type lowers []int

func openLowers(dirs []string) (lowers, error) {
	var ls lowers
	for _, d := range dirs {
		fd, err := unix.Open(d, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			ls.close()
			return nil, fmt.Errorf("open lower %s: %w", d, err)
		}
		ls = append(ls, fd)
	}
	return ls, nil
}

func (ls lowers) close() {
	for _, fd := range ls {
		unix.Close(fd)
	}
}

// lookupDir finds what the merged view shows at rel, for a directory about
// to be made there in upper. It returns the stat of a lower directory to
// copy, nil when the merged view has nothing there (or a non-directory the
// new directory rightly replaces), or an error when rel is a symlink below.
//
// It follows overlayfs's rules in the small: the topmost lower holding rel
// wins, a 0:0 char device is a whiteout, and an opaque ancestor in a layer
// hides everything below it in the layers beneath.
func (ls lowers) lookupDir(rel string) (*unix.Stat_t, error) {
	parent, base := splitName(rel)
	for _, lfd := range ls {
		var st unix.Stat_t
		err := ls.statIn(lfd, parent, base, &st)
		if err == nil {
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFDIR:
				return &st, nil
			case unix.S_IFLNK:
				return nil, fmt.Errorf("%q is a symlink in a lower layer; apply through a mounted overlay: %w", rel, errdefs.ErrFailedPrecondition)
			}
			return nil, nil // a whiteout, or a file the directory replaces
		}
		if opaqueAncestor(lfd, rel) {
			return nil, nil
		}
	}
	return nil, nil
}

// statIn stats parent/base in one lower without following any symlink: a
// lower's own symlinks mean nothing until the layers are merged.
func (ls lowers) statIn(lfd int, parent, base string, st *unix.Stat_t) error {
	pfd := lfd
	if parent != "" {
		fd, err := openat2Resolve(lfd, parent, unix.O_PATH|unix.O_DIRECTORY,
			unix.RESOLVE_IN_ROOT|unix.RESOLVE_NO_SYMLINKS|unix.RESOLVE_NO_MAGICLINKS)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		pfd = fd
	}
	return unix.Fstatat(pfd, base, st, unix.AT_SYMLINK_NOFOLLOW)
}

func opaqueAncestor(lfd int, rel string) bool {
	buf := make([]byte, 1)
	for {
		i := strings.LastIndexByte(rel, '/')
		if i < 0 {
			return false
		}
		rel = rel[:i]
		fd, err := openat2Resolve(lfd, rel, unix.O_PATH|unix.O_DIRECTORY,
			unix.RESOLVE_IN_ROOT|unix.RESOLVE_NO_SYMLINKS|unix.RESOLVE_NO_MAGICLINKS)
		if err != nil {
			continue
		}
		n, err := unix.Getxattr(procPath(fd), "trusted.overlay.opaque", buf)
		unix.Close(fd)
		if err == nil && n == 1 && buf[0] == 'y' {
			return true
		}
	}
}

// ResolveImplicit completes a layer applied with WithDeferredParents, once
// its lower layers exist: each directory Apply made on the way (implicit,
// from Result.Implicit, parents first) gets what WithParents would have
// given it, the owner, mode and times of the directory it shadows in
// lowerdirs (topmost first), and one that would shadow a symlink of a
// lower layer fails with ErrFailedPrecondition: the layer must then be
// applied again through a mounted overlay. A directory a later entry of
// the layer replaced is left alone.
func ResolveImplicit(dir string, implicit, lowerdirs []string) error {
	if len(implicit) == 0 || len(lowerdirs) == 0 {
		return nil
	}
	ls, err := openLowers(lowerdirs)
	if err != nil {
		return err
	}
	defer ls.close()
	rt, err := openRoot(dir)
	if err != nil {
		return err
	}
	defer rt.close()
	for _, rel := range implicit {
		like, err := ls.lookupDir(rel)
		if err != nil {
			return err
		}
		if like == nil {
			continue
		}
		fd, err := openat2Resolve(rt.fd, rel, unix.O_PATH|unix.O_DIRECTORY,
			unix.RESOLVE_IN_ROOT|unix.RESOLVE_NO_SYMLINKS|unix.RESOLVE_NO_MAGICLINKS)
		switch err {
		case nil:
		case unix.ENOENT, unix.ENOTDIR, unix.ELOOP:
			continue
		default:
			return fmt.Errorf("directory %q: %w", rel, err)
		}
		err = copyDirMeta(fd, like)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("directory %q: %w", rel, err)
		}
	}
	return nil
}

// copyDirMeta gives the directory fd (O_PATH) the owner, mode and times of
// st; chown first, as it clears set-id bits.
func copyDirMeta(fd int, st *unix.Stat_t) error {
	if err := unix.Fchownat(fd, "", int(st.Uid), int(st.Gid), unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if err := unix.Fchmodat(unix.AT_FDCWD, procPath(fd), st.Mode&0o7777, 0); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, procPath(fd), ts, 0); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}
