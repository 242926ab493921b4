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
