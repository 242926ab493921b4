package layer

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"strings"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/internal/hugebuf"
)

// WhiteoutMode says how Apply carries out the deletions a layer records.
type WhiteoutMode int

const (
	// WhiteoutDelete removes what whiteouts name, for a directory that
	// already holds a full copy of the parent layers (the native
	// snapshotter). An opaque directory loses the children it had before
	// this layer, but keeps those this layer has written.
	WhiteoutDelete WhiteoutMode = iota
	// WhiteoutOverlay converts whiteouts to overlayfs's own form, for an
	// overlay upper directory whose lower layers are mounted beneath it:
	// ".wh.<name>" becomes a 0:0 character device <name>, and
	// ".wh..wh..opq" the xattr trusted.overlay.opaque=y on its directory.
	WhiteoutOverlay
)

const (
	whiteoutPrefix     = ".wh."
	whiteoutMetaPrefix = ".wh..wh."
	whiteoutOpaque     = ".wh..wh..opq"

	paxXattrPrefix = "SCHILY.xattr."
	// overlayXattrPrefix xattrs steer overlayfs (opaque, redirect,
	// metacopy...). A layer must never set them itself: a crafted
	// trusted.overlay.redirect could make the merged view show files from
	// anywhere in the lower layers.
	overlayXattrPrefix = "trusted.overlay."
)

// Result describes an applied or written layer.
type Result struct {
	// DiffID is the sha256 digest of the uncompressed tar, the identity an
	// image config lists in rootfs.diff_ids.
	DiffID digest.Digest
	// Size is the length of the uncompressed tar in bytes.
	Size int64
	// Implicit lists, parents first, the directories Apply made on the
	// way to entries whose parents the layer does not list, when asked to
	// with WithDeferredParents: ResolveImplicit gives them the metadata of
	// the lower layers once those exist.
	Implicit []string
}

// Option configures Apply.
type Option func(*applyConfig)

type applyConfig struct {
	parents   []string
	deferred  bool
	expected  digest.Digest
	whiteouts WhiteoutMode
	mediaType string
	log       *slog.Logger
}

// WithExpectedDiffID makes Apply fail with ErrDataLoss unless the layer's
// diff ID is d. The check can only happen once the whole stream is read, so
// the directory then holds the bad layer: the caller removes the snapshot.
func WithExpectedDiffID(d digest.Digest) Option {
	return func(c *applyConfig) { c.expected = d }
}

// WithWhiteoutMode selects how whiteouts are applied; the default is
// WhiteoutDelete.
func WithWhiteoutMode(m WhiteoutMode) Option {
	return func(c *applyConfig) { c.whiteouts = m }
}

// WithParents names the lower directories of the overlay whose upper
// directory Apply writes to, topmost first. With them, WhiteoutOverlay mode
// keeps the merged view right where a layer omits the entries of its
// parent directories: a directory made on the way copies the owner, mode
// and mtime of the one it shadows, and a path that goes through a symlink
// of a lower layer (lib -> usr/lib, then lib/x) is refused with
// ErrFailedPrecondition, because writing it into upper would replace the
// symlink by a directory; the caller then applies through a mounted
// overlay in WhiteoutDelete mode instead.
func WithParents(lowerdirs ...string) Option {
	return func(c *applyConfig) { c.parents = lowerdirs }
}

// WithDeferredParents is WithParents for a layer applied before its lower
// layers exist (a pull unpacking several layers at once): directories made
// on the way get the default metadata, and Result.Implicit lists them for
// ResolveImplicit, which must run, with the lower directories, before the
// layer is used. Entries the layer lists itself need no lower layer.
func WithDeferredParents() Option {
	return func(c *applyConfig) { c.deferred = true }
}

// WithMediaType decompresses by the manifest's media type (see
// DecompressMediaType) instead of by magic bytes alone.
func WithMediaType(mediaType string) Option {
	return func(c *applyConfig) { c.mediaType = mediaType }
}

// WithLogger sets the logger for the few things Apply skips rather than
// fails on (xattrs the filesystem refuses, unknown entry types).
func WithLogger(l *slog.Logger) Option {
	return func(c *applyConfig) { c.log = l }
}

// copyBufSize is the read size for file contents: big enough that large
// files go in few syscalls, and allocated once per Apply.
const copyBufSize = 1 << 20

// fallocateMin is the size from which regular files are preallocated; below
// it the extra syscall costs more than the fragmentation it saves.
const fallocateMin = 1 << 20

// Apply extracts the layer read from r (a tar, gzip'd or zstd'd) into dir
// and returns its diff ID and uncompressed size.
//
// Entries keep their type, content, owner, mode (set-id and sticky bits
// included), mtime and xattrs. An entry replaces whatever is at its path
// unless both are directories. No entry can create or change anything
// outside dir, whatever its name, link target or the symlinks before it: see
// the package documentation.
//
// The stream is read to its very end, past the tar's end-of-archive blocks,
// so the digest covers exactly what the registry served. Decompression
// runs on a second goroutine, which has stopped reading r by the time Apply
// returns. On error dir is left half-written; the caller removes the
// snapshot.
func Apply(ctx context.Context, dir string, r io.Reader, opts ...Option) (Result, error) {
	cfg := applyConfig{log: slog.Default()}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.expected != "" {
		if err := cfg.expected.Validate(); err != nil {
			return Result{}, fmt.Errorf("expected diff ID %q: %w: %w", cfg.expected, errdefs.ErrInvalidArgument, err)
		}
	}

	var rc io.ReadCloser
	var err error
	if cfg.mediaType != "" {
		rc, err = DecompressMediaType(r, cfg.mediaType)
	} else {
		rc, err = Decompress(r)
	}
	if err != nil {
		return Result{}, err
	}
	h := &countingHash{h: sha256.New()}
	// The hash is taken on the readahead goroutine, before the tar reader
	// sees the bytes; it is complete once stream has returned io.EOF.
	stream := newReadahead(struct {
		io.Reader
		io.Closer
	}{io.TeeReader(rc, h), rc})
	defer stream.Close()

	rt, err := openRoot(dir)
	if err != nil {
		return Result{}, err
	}
	defer rt.close()

	if cfg.whiteouts == WhiteoutOverlay && len(cfg.parents) > 0 {
		lowers, err := openLowers(cfg.parents)
		if err != nil {
			return Result{}, err
		}
		defer lowers.close()
		rt.implicit = lowers.lookupDir
	}
	a := &applier{
		root:     rt,
		cfg:      &cfg,
		buf:      hugebuf.Get(copyBufSize),
		dirTimes: make(map[string][2]unix.Timespec),
	}
	defer a.release()
	if cfg.whiteouts == WhiteoutDelete {
		a.written = make(map[string]struct{})
	}
	rt.made = func(rel string, st *unix.Stat_t) {
		a.dirTimes[rel] = [2]unix.Timespec{st.Atim, st.Mtim}
	}
	if cfg.whiteouts == WhiteoutOverlay && cfg.deferred {
		a.implicit = make(map[string]int)
		rt.bare = func(rel string) {
			a.implicit[rel] = len(a.implicitOrder)
			a.implicitOrder = append(a.implicitOrder, rel)
		}
	}

	tr := tar.NewReader(stream)
	for {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		// Names that are not local are ours to contain (cleanName), not a
		// reason to refuse the layer, whatever GODEBUG says.
		if err != nil && !(errors.Is(err, tar.ErrInsecurePath) && hdr != nil) {
			return Result{}, fmt.Errorf("read layer tar after %d bytes: %w: %w", stream.n, errdefs.ErrInvalidArgument, err)
		}
		if err := a.entry(hdr, tr); err != nil {
			return Result{}, fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
		rt.release()
	}
	// Whatever follows the end-of-archive blocks is part of the blob the
	// diff ID was computed over (usually zero padding to a record size).
	if _, err := io.CopyBuffer(io.Discard, stream, a.buf); err != nil {
		return Result{}, fmt.Errorf("read layer tail: %w", err)
	}
	if err := a.finish(); err != nil {
		return Result{}, err
	}

	res := Result{DiffID: digest.NewDigest(digest.SHA256, h.h), Size: h.n}
	for i, rel := range a.implicitOrder {
		if j, ok := a.implicit[rel]; ok && j == i {
			res.Implicit = append(res.Implicit, rel)
		}
	}
	if cfg.expected != "" && cfg.expected != res.DiffID {
		return res, fmt.Errorf("layer diff ID mismatch: expected %s, got %s: %w", cfg.expected, res.DiffID, errdefs.ErrDataLoss)
	}
	return res, nil
}

// countingHash hashes and counts what is written to it.
type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

// applier holds the state of one Apply.
type applier struct {
	root *root
	cfg  *applyConfig
	buf  []byte
	// dirTimes are set at the end: creating entries in a directory would
	// bump its mtime again.
	dirTimes map[string][2]unix.Timespec
	// written holds the paths this layer has put in place, with all their
	// ancestors, so that an opaque directory (delete mode only) can tell
	// what it must keep.
	written map[string]struct{}
	// implicit maps the directories made on the way in deferred mode to
	// their latest index in implicitOrder; an entry listing one itself
	// removes it, as its metadata is then the layer's.
	implicit      map[string]int
	implicitOrder []string
	// noDirect is set once the filesystem has refused O_DIRECT.
	noDirect bool
	// dbufs are pipeDirect's aligned buffers, allocated on first use.
	dbufs [][]byte
}

func (a *applier) entry(hdr *tar.Header, tr *tar.Reader) error {
	rel := cleanName(hdr.Name)
	if rel == "" {
		// "./" in a layer sets the root's metadata; anything else there
		// would replace the snapshot itself.
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("non-directory entry at the layer root: %w", errdefs.ErrInvalidArgument)
		}
		return a.setMeta(a.root.fd, "", hdr, a.root.fd, true)
	}
	parent, base := splitName(rel)

	if strings.HasPrefix(base, whiteoutPrefix) {
		return a.whiteout(parent, base, hdr)
	}

	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink,
		tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	case tar.TypeXGlobalHeader:
		return nil
	default:
		a.cfg.log.Warn("skipping layer entry of unsupported type", "entry", hdr.Name, "type", string(hdr.Typeflag))
		return nil
	}

	pfd, err := a.root.dir(parent, true)
	if err != nil {
		return fmt.Errorf("parent directory %q: %w", parent, pathErr(err))
	}

	if hdr.Typeflag == tar.TypeLink && cleanName(hdr.Linkname) == rel {
		return nil // a link to itself: the file is already there
	}
	if a.written != nil {
		a.markWritten(rel)
	}

	switch hdr.Typeflag {
	case tar.TypeReg:
		delete(a.dirTimes, rel)
		return a.regular(pfd, base, hdr, tr)
	case tar.TypeDir:
		if err := a.create(pfd, base, true, func() error { return unix.Mkdirat(pfd, base, 0o700) }); err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open directory: %w", err)
		}
		defer unix.Close(fd)
		if err := a.setMeta(fd, "", hdr, fd, false); err != nil {
			return err
		}
		a.dirTimes[rel] = times(hdr)
		delete(a.implicit, rel)
		return nil
	case tar.TypeSymlink:
		delete(a.dirTimes, rel)
		if err := a.create(pfd, base, false, func() error { return unix.Symlinkat(hdr.Linkname, pfd, base) }); err != nil {
			return fmt.Errorf("symlink: %w", err)
		}
		return a.setMeta(pfd, base, hdr, -1, false)
	case tar.TypeLink:
		delete(a.dirTimes, rel)
		return a.hardlink(pfd, base, hdr)
	default: // char, block, fifo
		delete(a.dirTimes, rel)
		mode := uint32(hdr.Mode) & 0o7777
		switch hdr.Typeflag {
		case tar.TypeChar:
			mode |= unix.S_IFCHR
		case tar.TypeBlock:
			mode |= unix.S_IFBLK
		default:
			mode |= unix.S_IFIFO
		}
		dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		if err := a.create(pfd, base, false, func() error { return unix.Mknodat(pfd, base, mode, dev) }); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		fd, err := unix.Openat(pfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open special file: %w", err)
		}
		defer unix.Close(fd)
		return a.setMeta(pfd, base, hdr, fd, false)
	}
}

func (a *applier) regular(pfd int, base string, hdr *tar.Header, tr *tar.Reader) error {
	var fd int
	err := a.create(pfd, base, false, func() (err error) {
		// O_EXCL: never write into an existing file, which could be a
		// hard link shared with a file of a lower layer.
		fd, err = unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		return err
	})
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	defer unix.Close(fd)
	if hdr.Size >= fallocateMin {
		// Best effort: one extent for the whole file, and ENOSPC now rather
		// than halfway. Filesystems without fallocate just skip it.
		_ = unix.Fallocate(fd, 0, 0, hdr.Size)
	}
	written, err := a.copyContent(fd, hdr, tr)
	if err != nil {
		return err
	}
	if written < hdr.Size {
		// Preallocation made the file long already; a short body is a
		// corrupt tar, which tar.Reader reports, but be explicit.
		return fmt.Errorf("content is %d bytes, header says %d: %w", written, hdr.Size, errdefs.ErrInvalidArgument)
	}
	return a.setMeta(pfd, base, hdr, fd, false)
}

func (a *applier) hardlink(pfd int, base string, hdr *tar.Header) error {
	target := cleanName(hdr.Linkname)
	if target == "" {
		return fmt.Errorf("hard link to the layer root: %w", errdefs.ErrInvalidArgument)
	}
	tparent, tbase := splitName(target)
	// The target's parent is resolved in root like any other path, so a
	// link "through" a symlink to /etc lands on <dir>/etc, never /etc.
	tfd, err := a.root.dir(tparent, false)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", hdr.Linkname, pathErr(err))
	}
	// Flags 0: never follow a symlink target, link the symlink itself, as
	// tar means.
	if err := a.create(pfd, base, false, func() error { return unix.Linkat(tfd, tbase, pfd, base, 0) }); err != nil {
		return fmt.Errorf("hard link to %q: %w", hdr.Linkname, pathErr(err))
	}
	return nil
}

// create runs mk to make base in pfd. If something is there already it
// applies Docker's rule, a directory over a directory merges and anything
// else replaces what was there, and runs mk again. Trying first saves a
// stat per entry in the common case, a fresh snapshot.
func (a *applier) create(pfd int, base string, dir bool, mk func() error) error {
	err := mk()
	if err != unix.EEXIST {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stat existing: %w", err)
	}
	if dir && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil
	}
	a.root.invalidate()
	if err := removeAllAt(pfd, base); err != nil {
		return fmt.Errorf("remove existing: %w", err)
	}
	return mk()
}

// setMeta sets owner, xattrs, mode and times, in that order: chown clears
// set-id bits and file capabilities, so the mode and the xattrs come after
// it. fd is an fd of the entry itself when the caller has one (-1 for
// symlinks, which are set through pfd+base without following); isRoot
// marks the root directory, whose times are deferred like any directory.
func (a *applier) setMeta(pfd int, base string, hdr *tar.Header, fd int, isRoot bool) error {
	isDir := hdr.Typeflag == tar.TypeDir
	if fd >= 0 {
		if err := unix.Fchownat(fd, "", hdr.Uid, hdr.Gid, unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	} else if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("lchown: %w", err)
	}

	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, paxXattrPrefix)
		if !ok {
			continue
		}
		if err := a.setXattr(pfd, base, fd, hdr, name, v); err != nil {
			return err
		}
	}

	if hdr.Typeflag != tar.TypeSymlink {
		mode := uint32(hdr.Mode) & 0o7777
		// fchmod does not work on O_PATH fds (EBADF); their /proc alias
		// does. Regular files and directories have real fds: one syscall.
		err := unix.Fchmod(fd, mode)
		if err == unix.EBADF {
			err = unix.Fchmodat(unix.AT_FDCWD, procPath(fd), mode, 0)
		}
		if err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}

	if isDir {
		if isRoot {
			a.dirTimes[""] = times(hdr)
		}
		return nil
	}
	ts := times(hdr)
	if err := unix.UtimesNanoAt(pfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

func (a *applier) setXattr(pfd int, base string, fd int, hdr *tar.Header, name, value string) error {
	if strings.HasPrefix(name, overlayXattrPrefix) {
		a.cfg.log.Warn("dropping overlay xattr carried by layer", "entry", hdr.Name, "xattr", name)
		return nil
	}
	var err error
	if fd >= 0 {
		err = unix.Fsetxattr(fd, name, []byte(value), 0)
		if err == unix.EBADF { // an O_PATH fd
			err = unix.Setxattr(procPath(fd), name, []byte(value), 0)
		}
	} else {
		err = unix.Lsetxattr(procPath(pfd)+"/"+base, name, []byte(value), 0)
	}
	if err == nil {
		return nil
	}
	// security.* (SELinux labels, capabilities) may be refused by the LSM
	// or unsupported by the filesystem; the image still works without them
	// in most setups, so skipping is better than failing the pull.
	if strings.HasPrefix(name, "security.") &&
		(err == unix.EPERM || err == unix.EACCES || err == unix.ENOTSUP || err == unix.EINVAL) {
		a.cfg.log.Debug("skipping xattr", "entry", hdr.Name, "xattr", name, "err", err)
		return nil
	}
	return fmt.Errorf("set xattr %s: %w", name, err)
}

func times(hdr *tar.Header) [2]unix.Timespec {
	mtime := unix.NsecToTimespec(hdr.ModTime.UnixNano())
	atime := mtime
	if !hdr.AccessTime.IsZero() {
		atime = unix.NsecToTimespec(hdr.AccessTime.UnixNano())
	}
	return [2]unix.Timespec{atime, mtime}
}

func (a *applier) whiteout(parent, base string, hdr *tar.Header) error {
	if base == whiteoutOpaque {
		return a.opaque(parent)
	}
	if strings.HasPrefix(base, whiteoutMetaPrefix) {
		// AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content.
		return nil
	}
	name := strings.TrimPrefix(base, whiteoutPrefix)
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("whiteout of %q: %w", name, errdefs.ErrInvalidArgument)
	}
	rel := name
	if parent != "" {
		rel = parent + "/" + name
	}
	delete(a.dirTimes, rel)

	if a.cfg.whiteouts == WhiteoutOverlay {
		pfd, err := a.root.dir(parent, true)
		if err != nil {
			return fmt.Errorf("parent directory %q: %w", parent, pathErr(err))
		}
		a.root.invalidate()
		if err := removeAllAt(pfd, name); err != nil {
			return fmt.Errorf("remove before whiteout: %w", err)
		}
		if err := unix.Mknodat(pfd, name, unix.S_IFCHR, 0); err != nil {
			return fmt.Errorf("create whiteout device: %w", err)
		}
		// The whiteout entry's owner and time go on the device, so that
		// Diff of this upper dir gives back the same entry.
		if err := unix.Fchownat(pfd, name, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown whiteout device: %w", err)
		}
		ts := times(hdr)
		if err := unix.UtimesNanoAt(pfd, name, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set times of whiteout device: %w", err)
		}
		return nil
	}

	pfd, err := a.root.dir(parent, false)
	if err == unix.ENOENT || err == unix.ENOTDIR {
		return nil // nothing there to delete
	}
	if err != nil {
		return fmt.Errorf("parent directory %q: %w", parent, pathErr(err))
	}
	a.root.invalidate()
	if err := removeAllAt(pfd, name); err != nil {
		return fmt.Errorf("remove whited-out %q: %w", rel, err)
	}
	return nil
}

func (a *applier) opaque(dir string) error {
	fd, err := a.root.dir(dir, true)
	if err != nil {
		return fmt.Errorf("opaque directory %q: %w", dir, pathErr(err))
	}
	if a.cfg.whiteouts == WhiteoutOverlay {
		if err := unix.Setxattr(procPath(fd), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
			return fmt.Errorf("mark %q opaque: %w", dir, err)
		}
		return nil
	}
	a.root.invalidate()
	return a.prune(fd, dir)
}

// prune removes everything under the directory dirfd (at rel) that this
// layer has not written, keeping the ancestors of what it has.
func (a *applier) prune(dirfd int, rel string) error {
	names, err := readDirNamesAt(dirfd, ".")
	if err != nil {
		return fmt.Errorf("list %q: %w", rel, err)
	}
	for _, n := range names {
		child := n
		if rel != "" {
			child = rel + "/" + n
		}
		if _, ok := a.written[child]; !ok {
			if err := removeAllAt(dirfd, n); err != nil {
				return fmt.Errorf("remove %q under opaque directory: %w", child, err)
			}
			continue
		}
		cfd, err := unix.Openat(dirfd, n, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOTDIR || err == unix.ELOOP {
			continue
		}
		if err != nil {
			return fmt.Errorf("open %q: %w", child, err)
		}
		err = a.prune(cfd, child)
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) markWritten(rel string) {
	for {
		if _, ok := a.written[rel]; ok {
			return // its ancestors are in already
		}
		a.written[rel] = struct{}{}
		i := strings.LastIndexByte(rel, '/')
		if i < 0 {
			return
		}
		rel = rel[:i]
	}
}

// finish sets directory times, now that nothing more is written in them.
func (a *applier) finish() error {
	for rel, ts := range a.dirTimes {
		var err error
		if rel == "" {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, procPath(a.root.fd), ts[:], 0)
		} else {
			parent, base := splitName(rel)
			var pfd int
			pfd, err = a.root.dir(parent, false)
			if err == nil {
				err = unix.UtimesNanoAt(pfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW)
			}
		}
		if err != nil && err != unix.ENOENT && err != unix.ENOTDIR {
			return fmt.Errorf("set times of directory %q: %w", rel, err)
		}
		a.root.release()
	}
	return nil
}

// pathErr marks the errors of a path a layer names but that this snapshot
// cannot resolve (missing, not a directory, a symlink loop, a directory as
// a hard link target) as the layer's fault, ErrInvalidArgument; other
// errors (no space, I/O) keep their own meaning.
func pathErr(err error) error {
	switch err {
	case unix.ENOENT, unix.ENOTDIR, unix.ELOOP, unix.EPERM, unix.EXDEV:
		return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	return err
}
