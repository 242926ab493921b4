package layer

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

// DiffOption configures Diff.
type DiffOption func(*diffConfig)

type diffConfig struct {
	epoch *time.Time
	log   *slog.Logger
}

// WithSourceDateEpoch clamps every mtime in the layer to at most t, so that
// rebuilding the same content gives the same diff ID (the
// SOURCE_DATE_EPOCH convention of reproducible builds).
func WithSourceDateEpoch(t time.Time) DiffOption {
	return func(c *diffConfig) { c.epoch = &t }
}

// WithDiffLogger sets the logger for entries Diff skips (sockets).
func WithDiffLogger(l *slog.Logger) DiffOption {
	return func(c *diffConfig) { c.log = l }
}

// Diff writes the OCI layer tar (uncompressed) of an overlay upper
// directory to w and returns its diff ID and size.
//
// Overlayfs's whiteouts become OCI ones: a 0:0 character device <name>
// becomes an empty ".wh.<name>", and a directory with
// trusted.overlay.opaque=y is followed by its ".wh..wh..opq". Files sharing
// an inode become hard links to the first of them in walk order, xattrs are
// kept (overlayfs's own trusted.overlay.* excepted), and entries come in
// lexical order with no user or group names and no access or change times,
// so the same tree always gives the same bytes.
//
// A directory overlayfs renamed (trusted.overlay.redirect) or a file copied
// up as metadata only (trusted.overlay.metacopy) has content that is not in
// upper; Diff refuses those with ErrNotImplemented rather than write a layer
// that silently lacks it. Mount overlays for commit without redirect_dir and
// metacopy (the kernel defaults).
//
// The upper directory may belong to a running container: every file is
// opened relative to its parent's fd without following symlinks, so a
// container swapping a directory for a symlink cannot make Diff read a file
// of the host.
func Diff(ctx context.Context, upper string, w io.Writer, opts ...DiffOption) (Result, error) {
	cfg := diffConfig{log: slog.Default()}
	for _, o := range opts {
		o(&cfg)
	}
	rootfd, err := unix.Open(upper, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Result{}, fmt.Errorf("open %s: %w", upper, err)
	}
	defer unix.Close(rootfd)

	h := &countingHash{h: sha256.New()}
	tw := tar.NewWriter(io.MultiWriter(w, h))
	d := &differ{
		ctx:   ctx,
		cfg:   &cfg,
		tw:    tw,
		links: make(map[inode]string),
		buf:   make([]byte, copyBufSize),

		whiteouts: true,
	}
	if err := d.walk(rootfd, ""); err != nil {
		return Result{}, err
	}
	if err := tw.Close(); err != nil {
		return Result{}, fmt.Errorf("finish layer tar: %w", err)
	}
	return Result{DiffID: digest.NewDigest(digest.SHA256, h.h), Size: h.n}, nil
}

type inode struct{ dev, ino uint64 }

type differ struct {
	ctx   context.Context
	cfg   *diffConfig
	tw    *tar.Writer
	links map[inode]string
	buf   []byte
	// whiteouts: the tree is an overlay upper dir, whose 0:0 char devices
	// and opaque xattrs are overlayfs's whiteouts.
	whiteouts bool
	// dirs is the stack of directories DiffDirs is in, to write the
	// headers of a changed entry's parents before it.
	dirs []dirFrame
}

func (d *differ) walk(dirfd int, rel string) error {
	names, err := readDirNamesAt(dirfd, ".")
	if err != nil {
		return fmt.Errorf("list %q: %w", rel, err)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := d.ctx.Err(); err != nil {
			return err
		}
		p := name
		if rel != "" {
			p = rel + "/" + name
		}
		if err := d.entry(dirfd, name, p); err != nil {
			return fmt.Errorf("diff entry %q: %w", p, err)
		}
	}
	return nil
}

func (d *differ) entry(dirfd int, name, rel string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return nil // removed under us by a running container
		}
		return err
	}
	hdr, opaque, err := d.header(dirfd, name, rel, &st)
	if err != nil || hdr == nil {
		return err
	}
	return d.write(dirfd, name, rel, hdr, opaque, &st, true)
}

// header builds the tar header of an entry (nil for one tar cannot hold),
// and reports whether it is an opaque overlay directory. With whiteouts
// (overlay upper dirs) a 0:0 char device becomes its ".wh." entry.
func (d *differ) header(dirfd int, name, rel string, st *unix.Stat_t) (hdr *tar.Header, opaque bool, err error) {
	hdr = &tar.Header{
		Name:    rel,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: d.clamp(time.Unix(st.Mtim.Sec, st.Mtim.Nsec)),
		Format:  tar.FormatPAX,
	}

	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		if st.Rdev == 0 && d.whiteouts {
			parent, _ := splitName(rel)
			wh := whiteoutPrefix + name
			if parent != "" {
				wh = parent + "/" + wh
			}
			return &tar.Header{
				Typeflag: tar.TypeReg, Name: wh, Uid: hdr.Uid, Gid: hdr.Gid, ModTime: hdr.ModTime, Format: tar.FormatPAX,
			}, false, nil
		}
		hdr.Typeflag = tar.TypeChar
	case unix.S_IFBLK:
		hdr.Typeflag = tar.TypeBlock
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	case unix.S_IFLNK:
		target, err := readlinkat(dirfd, name)
		if err != nil {
			return nil, false, err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
	case unix.S_IFSOCK:
		// Sockets are runtime artefacts and tar has no type for them.
		d.cfg.log.Debug("skipping socket", "entry", rel)
		return nil, false, nil
	case unix.S_IFDIR:
		hdr.Typeflag, hdr.Name = tar.TypeDir, rel+"/"
	case unix.S_IFREG:
		hdr.Typeflag = tar.TypeReg
	default:
		return nil, false, fmt.Errorf("unknown file type %o: %w", st.Mode&unix.S_IFMT, errdefs.ErrNotImplemented)
	}
	if hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock {
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	}
	opaque, err = d.xattrs(dirfd, name, hdr)
	if err != nil {
		return nil, false, err
	}
	return hdr, opaque && d.whiteouts, nil
}

// write writes an entry built by header: a file's content, a hard link to
// an inode already written, and for a directory (with recurse) everything
// below it.
func (d *differ) write(dirfd int, name, rel string, hdr *tar.Header, opaque bool, st *unix.Stat_t, recurse bool) error {
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := d.tw.WriteHeader(hdr); err != nil {
			return err
		}
		if opaque {
			if err := d.tw.WriteHeader(&tar.Header{
				Typeflag: tar.TypeReg, Name: rel + "/" + whiteoutOpaque, ModTime: hdr.ModTime, Format: tar.FormatPAX,
			}); err != nil {
				return err
			}
		}
		if !recurse {
			return nil
		}
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return d.walk(fd, rel)
	case tar.TypeReg:
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return d.tw.WriteHeader(hdr) // a whiteout, from a char device
		}
		if st.Nlink > 1 {
			key := inode{st.Dev, st.Ino}
			if first, ok := d.links[key]; ok {
				hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
				return d.tw.WriteHeader(hdr)
			}
			d.links[key] = rel
		}
		return d.regular(dirfd, name, hdr, st)
	default:
		return d.tw.WriteHeader(hdr)
	}
}

func (d *differ) regular(dirfd int, name string, hdr *tar.Header, st *unix.Stat_t) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	// The size goes in the header before the content, so take it from the
	// open file, and make sure that is the inode we looked at.
	var fst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil {
		return err
	}
	if fst.Ino != st.Ino || fst.Dev != st.Dev {
		return fmt.Errorf("replaced while reading: %w", errdefs.ErrAborted)
	}
	hdr.Size = fst.Size
	if err := d.tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.CopyBuffer(d.tw, io.LimitReader(f, hdr.Size), d.buf)
	if err != nil {
		return fmt.Errorf("copy content: %w", err)
	}
	if n != hdr.Size {
		return fmt.Errorf("shrank from %d to %d bytes while reading: %w", hdr.Size, n, errdefs.ErrAborted)
	}
	return nil
}

// xattrs puts the entry's xattrs into hdr and reports whether it is an
// opaque directory. The path goes through /proc/self/fd/<dirfd> with the l*
// calls, so the last component is never followed.
func (d *differ) xattrs(dirfd int, name string, hdr *tar.Header) (opaque bool, err error) {
	p := procPath(dirfd) + "/" + name
	list, err := listXattrs(p)
	if err != nil {
		return false, err
	}
	for _, x := range list {
		v, err := getXattr(p, x)
		if err == unix.ENODATA {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("get xattr %s: %w", x, err)
		}
		if rest, ok := strings.CutPrefix(x, overlayXattrPrefix); ok {
			switch rest {
			case "opaque":
				opaque = v == "y"
			case "redirect", "metacopy":
				return false, fmt.Errorf("overlay %s: content lives in a lower layer: %w", x, errdefs.ErrNotImplemented)
			}
			continue // origin, impure, nlink...: overlayfs bookkeeping
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = make(map[string]string)
		}
		hdr.PAXRecords[paxXattrPrefix+x] = v
	}
	return opaque, nil
}

func (d *differ) clamp(t time.Time) time.Time {
	if d.cfg.epoch != nil && t.After(*d.cfg.epoch) {
		return *d.cfg.epoch
	}
	return t
}

func listXattrs(p string) ([]string, error) {
	buf := make([]byte, 1024)
	for {
		n, err := unix.Llistxattr(p, buf)
		if err == unix.ERANGE {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if err == unix.ENOTSUP {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		var out []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				out = append(out, s)
			}
		}
		return out, nil
	}
}

func getXattr(p, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		if err == unix.ERANGE {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}

func readlinkat(dirfd int, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", fmt.Errorf("readlink: %w", err)
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, len(buf)*4)
	}
}
