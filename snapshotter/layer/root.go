package layer

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

// resolveFlags confine a lookup to the tree under the root fd: ".." stops at
// the root, absolute symlinks restart at the root, and /proc magic links
// (which could jump anywhere) are refused outright.
const resolveFlags = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// maxCachedDirs bounds the parent-directory fd cache. Layers are written in
// walk order, so consecutive entries nearly always share a parent; a small
// cache gets almost every hit without holding many fds.
const maxCachedDirs = 64

// root is a directory that every path is resolved under. It owns an fd of
// the directory itself and a cache of O_PATH fds of directories below it,
// keyed by their cleaned relative path.
type root struct {
	fd   int
	dirs map[string]int
	// implicit, when set, is asked before a missing directory is made on
	// the way to an entry; it may refuse, or return the metadata the new
	// directory should copy (see WithParents).
	implicit func(rel string) (*unix.Stat_t, error)
	// made is told of every directory implicit gave metadata for.
	made func(rel string, st *unix.Stat_t)
	// bare, when set, is told of every directory made on the way with
	// the default metadata (see WithDeferredParents).
	bare func(rel string)
	// stale holds cached fds invalidated during the current entry; they are
	// closed at the entry's end because the entry may still be using one.
	stale []int
}

func openRoot(dir string) (*root, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("open %s: %w", dir, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	return &root{fd: fd, dirs: make(map[string]int)}, nil
}

func (r *root) close() {
	r.invalidate()
	r.release()
	unix.Close(r.fd)
}

// invalidate drops the cache. Called whenever something is removed or
// replaced, since a cached fd could then point at a detached directory (a
// write there would be lost, not escape, but lost is wrong too).
func (r *root) invalidate() {
	for k, fd := range r.dirs {
		r.stale = append(r.stale, fd)
		delete(r.dirs, k)
	}
}

// release closes the fds invalidated so far; call it between entries.
func (r *root) release() {
	for _, fd := range r.stale {
		unix.Close(fd)
	}
	r.stale = r.stale[:0]
	if len(r.dirs) > maxCachedDirs {
		r.invalidate()
		r.release()
	}
}

// cleanName turns a tar entry name into a path relative to the root, with
// no "..", no leading "/" and no "." components; "" is the root itself.
// Cleaning against "/" is what contains names like "../../etc/passwd" or
// "/etc/passwd": they become "etc/passwd" inside the root. (Symlinks are not
// considered here; the kernel resolves those under RESOLVE_IN_ROOT.)
func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// splitName returns the parent directory ("" for the root) and the last
// component of a cleaned, non-empty relative path.
func splitName(rel string) (dir, base string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

func openat2(dirfd int, p string, flags uint64) (int, error) {
	return openat2Resolve(dirfd, p, flags, resolveFlags)
}

func openat2Resolve(dirfd int, p string, flags, resolve uint64) (int, error) {
	how := unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: resolve}
	for range 64 {
		fd, err := unix.Openat2(dirfd, p, &how)
		// EAGAIN: a concurrent rename elsewhere on the filesystem made the
		// kernel unsure the lookup stayed inside; it asks us to retry.
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		return fd, err
	}
	return -1, unix.EAGAIN
}

// dir returns a borrowed O_PATH fd of the directory rel, resolved inside the
// root. With create, missing directories on the way are made (mode 0755,
// owned by root) as tar writers often omit parent entries.
func (r *root) dir(rel string, create bool) (int, error) {
	if rel == "" {
		return r.fd, nil
	}
	if fd, ok := r.dirs[rel]; ok {
		return fd, nil
	}
	fd, err := openat2(r.fd, rel, unix.O_PATH|unix.O_DIRECTORY)
	if err == unix.ENOENT && create {
		fd, err = r.mkdirAll(rel)
	}
	if err != nil {
		return -1, err
	}
	r.dirs[rel] = fd
	return fd, nil
}

func (r *root) mkdirAll(rel string) (int, error) {
	parent, base := splitName(rel)
	pfd, err := r.dir(parent, true)
	if err != nil {
		return -1, err
	}
	var like *unix.Stat_t
	if r.implicit != nil {
		if like, err = r.implicit(rel); err != nil {
			return -1, err
		}
	}
	// base is a single component, so mkdirat cannot be steered elsewhere;
	// if base exists as a symlink the openat2 below follows it, in root.
	created := true
	if err := unix.Mkdirat(pfd, base, 0o755); err == unix.EEXIST {
		created = false
	} else if err != nil {
		return -1, err
	}
	fd, err := openat2(r.fd, rel, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil || !created {
		return fd, err // what existed keeps its metadata
	}
	// The mode is set explicitly: mkdirat's is cut by the process umask,
	// and a daemon's umask says nothing about what images need.
	mode := uint32(0o755)
	if like != nil {
		mode = like.Mode & 0o7777
		if err := unix.Fchownat(fd, "", int(like.Uid), int(like.Gid), unix.AT_EMPTY_PATH); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	if err := unix.Fchmodat(unix.AT_FDCWD, procPath(fd), mode, 0); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if like != nil {
		r.made(rel, like)
	} else if r.bare != nil {
		r.bare(rel)
	}
	return fd, nil
}

// procPath names an fd (an O_PATH one included) through /proc, the only
// way to set xattrs and modes on an inode held by an O_PATH fd. Only ever
// used on fds we opened ourselves, so the magic link points where we meant.
func procPath(fd int) string {
	return "/proc/self/fd/" + strconv.Itoa(fd)
}

// removeAllAt removes name in dirfd and, for a directory, everything below
// it, never following symlinks.
func removeAllAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	names, err := readDirNamesAt(dirfd, name)
	if err != nil {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for _, n := range names {
		if err := removeAllAt(fd, n); err != nil {
			return err
		}
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return err
	}
	return nil
}

// readDirNamesAt lists the directory name in dirfd ("." for dirfd itself).
func readDirNamesAt(dirfd int, name string) ([]string, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	return f.Readdirnames(-1)
}
