package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// dirFrame is a directory present in both trees that DiffDirs descends
// into; its header is written only once something below it changed, so
// that the layer still lists the parents of every entry it carries.
type dirFrame struct {
	parentfd int
	name     string
	rel      string
	written  bool
}

// DiffDirs writes the OCI layer tar (uncompressed) that turns the tree
// lower into the tree upper, for snapshotters without an upper dir of their
// own (native: upper is a full copy of lower, then changed), and returns its
// diff ID and size.
//
// An entry is written when it is new, of another type, or differs in mode,
// owner, size, mtime, device, link target or xattrs; a regular file whose
// metadata all match but whose mtime has no sub-second part (it may have
// been truncated by a copy) is compared byte for byte. Entries only in
// lower become ".wh.<name>" whiteouts; a directory in both is descended
// into, its header written only if it or something below it changed. The
// order is lexical and the output deterministic, as for Diff.
func DiffDirs(ctx context.Context, lower, upper string, w io.Writer, opts ...DiffOption) (Result, error) {
	cfg := diffConfig{log: slog.Default()}
	for _, o := range opts {
		o(&cfg)
	}
	lfd, err := unix.Open(lower, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Result{}, fmt.Errorf("open %s: %w", lower, err)
	}
	defer unix.Close(lfd)
	ufd, err := unix.Open(upper, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Result{}, fmt.Errorf("open %s: %w", upper, err)
	}
	defer unix.Close(ufd)

	h := &countingHash{h: sha256.New()}
	tw := tar.NewWriter(io.MultiWriter(w, h))
	d := &differ{
		ctx:   ctx,
		cfg:   &cfg,
		tw:    tw,
		links: make(map[inode]string),
		buf:   make([]byte, copyBufSize),
	}
	if err := d.compare(lfd, ufd, ""); err != nil {
		return Result{}, err
	}
	if err := tw.Close(); err != nil {
		return Result{}, fmt.Errorf("finish layer tar: %w", err)
	}
	return Result{DiffID: digest.NewDigest(digest.SHA256, h.h), Size: h.n}, nil
}

func (d *differ) compare(lfd, ufd int, rel string) error {
	lnames, err := readDirNamesAt(lfd, ".")
	if err != nil {
		return fmt.Errorf("list lower %q: %w", rel, err)
	}
	unames, err := readDirNamesAt(ufd, ".")
	if err != nil {
		return fmt.Errorf("list upper %q: %w", rel, err)
	}
	all := append(lnames, unames...)
	slices.Sort(all)
	all = slices.Compact(all)
	inLower := make(map[string]bool, len(lnames))
	for _, n := range lnames {
		inLower[n] = true
	}
	inUpper := make(map[string]bool, len(unames))
	for _, n := range unames {
		inUpper[n] = true
	}
	for _, name := range all {
		if err := d.ctx.Err(); err != nil {
			return err
		}
		child := name
		if rel != "" {
			child = rel + "/" + name
		}
		var err error
		switch {
		case !inUpper[name]:
			err = d.deleted(rel, name)
		case !inLower[name]:
			if err = d.parents(); err == nil {
				err = d.entry(ufd, name, child)
			}
		default:
			err = d.both(lfd, ufd, name, child)
		}
		if err != nil {
			return fmt.Errorf("diff entry %q: %w", child, err)
		}
	}
	return nil
}

func (d *differ) deleted(rel, name string) error {
	if err := d.parents(); err != nil {
		return err
	}
	wh := whiteoutPrefix + name
	if rel != "" {
		wh = rel + "/" + wh
	}
	// Time zero: a deletion has no time of its own, and any other choice
	// would make the layer depend on when it was written.
	return d.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: wh, ModTime: time.Unix(0, 0), Format: tar.FormatPAX})
}

// parents writes the headers of the directories DiffDirs is in that have
// not been written yet.
func (d *differ) parents() error {
	for i := range d.dirs {
		f := &d.dirs[i]
		if f.written {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(f.parentfd, f.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		hdr, _, err := d.header(f.parentfd, f.name, f.rel, &st)
		if err != nil {
			return err
		}
		if err := d.write(f.parentfd, f.name, f.rel, hdr, false, &st, false); err != nil {
			return err
		}
		f.written = true
	}
	return nil
}

func (d *differ) both(lfd, ufd int, name, rel string) error {
	var lst, ust unix.Stat_t
	if err := unix.Fstatat(lfd, name, &lst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if err := unix.Fstatat(ufd, name, &ust, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	uhdr, _, err := d.header(ufd, name, rel, &ust)
	if err != nil || uhdr == nil {
		return err
	}
	lhdr, _, err := d.header(lfd, name, rel, &lst)
	if err != nil {
		return err
	}

	isDir := ust.Mode&unix.S_IFMT == unix.S_IFDIR
	if isDir && lst.Mode&unix.S_IFMT == unix.S_IFDIR {
		f := dirFrame{parentfd: ufd, name: name, rel: rel}
		if !sameHeader(lhdr, uhdr) {
			if err := d.parents(); err != nil {
				return err
			}
			if err := d.write(ufd, name, rel, uhdr, false, &ust, false); err != nil {
				return err
			}
			f.written = true
		}
		cl, err := unix.Openat(lfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(cl)
		cu, err := unix.Openat(ufd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(cu)
		d.dirs = append(d.dirs, f)
		defer func() { d.dirs = d.dirs[:len(d.dirs)-1] }()
		return d.compare(cl, cu, rel)
	}

	same := lhdr != nil && sameHeader(lhdr, uhdr) && lst.Size == ust.Size
	if same && uhdr.Typeflag == tar.TypeReg && ust.Mtim.Nsec == 0 {
		if same, err = sameContent(lfd, ufd, name); err != nil {
			return err
		}
	}
	if same {
		return nil
	}
	if err := d.parents(); err != nil {
		return err
	}
	// A directory over a non-directory, or the reverse: the new entry
	// replaces the old one on apply, so writing it in full is enough.
	return d.write(ufd, name, rel, uhdr, false, &ust, true)
}

// sameHeader compares what DiffDirs counts as an entry's identity.
func sameHeader(a, b *tar.Header) bool {
	if a.Typeflag != b.Typeflag || a.Mode != b.Mode || a.Uid != b.Uid || a.Gid != b.Gid ||
		!a.ModTime.Equal(b.ModTime) || a.Linkname != b.Linkname ||
		a.Devmajor != b.Devmajor || a.Devminor != b.Devminor || len(a.PAXRecords) != len(b.PAXRecords) {
		return false
	}
	for k, v := range a.PAXRecords {
		if w, ok := b.PAXRecords[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func sameContent(lfd, ufd int, name string) (bool, error) {
	open := func(dirfd int) (*os.File, error) {
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		return os.NewFile(uintptr(fd), name), nil
	}
	lf, err := open(lfd)
	if err != nil {
		return false, err
	}
	defer lf.Close()
	uf, err := open(ufd)
	if err != nil {
		return false, err
	}
	defer uf.Close()
	lb, ub := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		n, lerr := io.ReadFull(lf, lb)
		m, uerr := io.ReadFull(uf, ub)
		if n != m || !bytes.Equal(lb[:n], ub[:m]) {
			return false, nil
		}
		lend := lerr == io.EOF || lerr == io.ErrUnexpectedEOF
		uend := uerr == io.EOF || uerr == io.ErrUnexpectedEOF
		if lend || uend {
			return lend && uend, nil
		}
		if lerr != nil {
			return false, lerr
		}
		if uerr != nil {
			return false, uerr
		}
	}
}
