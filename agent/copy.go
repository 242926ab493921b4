package agent

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
	"github.com/berth-dev/berth/snapshotter"
	"github.com/berth-dev/berth/snapshotter/layer"
)

// Copying in and out of a container works on its root filesystem as the
// host sees it: the task's mounted rootfs (<bundle>/rootfs) while it has a
// task, otherwise its snapshot mounted for the copy at <state>/berth-cp-*
// and unmounted after. Mounts made inside the container (volumes, tmpfs)
// are not seen. Every path is resolved with openat2(RESOLVE_IN_ROOT), so a
// symlink in the container cannot lead outside its rootfs.

// copyResolve is the resolution of container paths: absolute symlinks and
// ".." stay inside the root, magic links are refused.
const copyResolve = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// withRootfs calls fn with the directory of the container's root
// filesystem, holding the container's task lock so that it is neither
// started nor removed meanwhile.
func (a *Agent) withRootfs(ctx context.Context, c *berthv1.Container, fn func(dir string) error) error {
	ns := namespaces.FromContext(ctx)
	defer a.taskLocks.lock(ns, c.Id)()
	if t, err := a.runtime.Get(ns, c.Id); err == nil {
		return fn(filepath.Join(t.Bundle, "rootfs"))
	}
	if c.GetSnapshotKey() == "" {
		return fmt.Errorf("container %s has no root filesystem: %w", c.Name, errdefs.ErrFailedPrecondition)
	}
	mounts, err := a.snapshots.Mounts(ctx, c.GetSnapshotKey())
	if err != nil {
		return fmt.Errorf("root filesystem of %s: %w", c.Name, err)
	}
	dir, err := os.MkdirTemp(a.cfg.State, "berth-cp-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	if err := snapshotter.MountAll(mounts, dir); err != nil {
		return fmt.Errorf("mount the root filesystem of %s: %w", c.Name, err)
	}
	defer func() {
		if err := snapshotter.Unmount(dir); err != nil {
			a.log.Warn("unmount a container's rootfs after a copy", "container", c.Id, "dir", dir, "err", err)
		}
	}()
	return fn(dir)
}

// openInRoot opens p inside the directory root as an O_PATH descriptor,
// not following a symlink in the last component.
func openInRoot(root, p string, flags uint64) (int, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(rfd)
	rel := strings.TrimLeft(path.Clean("/"+p), "/")
	if rel == "" {
		rel = "."
	}
	for {
		fd, err := unix.Openat2(rfd, rel, &unix.OpenHow{Flags: flags | unix.O_PATH | unix.O_CLOEXEC, Resolve: copyResolve})
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// chunkWriter sends what is written to it as CopyFromContainer chunks.
type chunkWriter struct {
	stream berthv1.ContainersService_CopyFromContainerServer
}

func (w chunkWriter) Write(p []byte) (int, error) {
	if err := w.stream.Send(&berthv1.CopyFromContainerResponse{Chunk: append([]byte(nil), p...)}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// CopyFromContainer streams a tar of a path in the container: one entry
// named after the path's last element (the link itself for a symlink), and
// for a directory everything below it, as `docker cp` does.
func (s *containersService) CopyFromContainer(req *berthv1.CopyFromContainerRequest, stream berthv1.ContainersService_CopyFromContainerServer) error {
	ctx := stream.Context()
	c, err := s.a.db.Containers().Resolve(ctx, req.GetId())
	if err != nil {
		return fieldErr("id", err)
	}
	if req.GetPath() == "" {
		return fmt.Errorf("path: give the path to copy from the container: %w", errdefs.ErrInvalidArgument)
	}
	return s.a.withRootfs(ctx, c, func(root string) error {
		p := req.GetPath()
		fd, err := openInRoot(root, p, unix.O_NOFOLLOW)
		if err != nil {
			return copyPathErr(c, p, err)
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return copyPathErr(c, p, err)
		}
		name := path.Base(path.Clean("/" + p))
		if name == "/" {
			name = "."
		}
		bw := bufio.NewWriterSize(chunkWriter{stream}, 256<<10)
		tw := tar.NewWriter(bw)
		hdr, err := statHeader(fd, name, &st)
		if err != nil {
			return copyPathErr(c, p, err)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			f, err := os.Open(fdPath(fd))
			if err != nil {
				return copyPathErr(c, p, err)
			}
			_, err = io.CopyN(tw, f, hdr.Size)
			f.Close()
			if err != nil {
				return fmt.Errorf("copy %s from %s: %w", p, c.Name, err)
			}
		case unix.S_IFDIR:
			if err := s.a.tarTree(ctx, tw, fdPath(fd), name); err != nil {
				return fmt.Errorf("copy %s from %s: %w", p, c.Name, err)
			}
		}
		if err := tw.Close(); err != nil {
			return err
		}
		return bw.Flush()
	})
}

// tarTree writes the entries below dir into tw, their names prefixed with
// prefix/. It reuses layer.DiffDirs against an empty directory, which walks
// the tree by file descriptors without following symlinks.
func (a *Agent) tarTree(ctx context.Context, tw *tar.Writer, dir, prefix string) error {
	empty, err := os.MkdirTemp(a.cfg.State, "berth-cp-empty-")
	if err != nil {
		return err
	}
	defer os.Remove(empty)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := layer.DiffDirs(ctx, empty, dir, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	defer func() {
		pr.CloseWithError(errors.New("copy ended"))
		<-done
	}()
	tr := tar.NewReader(pr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		hdr.Name = path.Join(prefix, hdr.Name)
		if hdr.FileInfo().IsDir() {
			hdr.Name += "/"
		}
		if hdr.Typeflag == tar.TypeLink {
			hdr.Linkname = path.Join(prefix, hdr.Linkname)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}

// statHeader builds the tar header of the file open (O_PATH) at fd.
func statHeader(fd int, name string, st *unix.Stat_t) (*tar.Header, error) {
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(st.Mode & 07777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		Format:  tar.FormatPAX,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case unix.S_IFLNK:
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return nil, err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, string(buf[:n])
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return nil, fmt.Errorf("cannot copy a socket: %w", errdefs.ErrInvalidArgument)
	}
	return hdr, nil
}

func copyPathErr(c *berthv1.Container, p string, err error) error {
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("could not find the file %s in container %s: %w", p, c.Name, errdefs.ErrNotFound)
	}
	if errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("%s in container %s: a path component is not a directory: %w", p, c.Name, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("%s in container %s: %w", p, c.Name, err)
}

// chunkReader reads the chunks of a CopyToContainer stream.
type chunkReader struct {
	stream berthv1.ContainersService_CopyToContainerServer
	buf    []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		msg, err := r.stream.Recv()
		if err != nil {
			return 0, err
		}
		r.buf = msg.GetChunk()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// CopyToContainer extracts a tar into the container. When options.path is
// an existing directory the archive is extracted into it; otherwise into
// its parent, with the archive's first path element renamed to the path's
// last (`docker cp file ctr:/new-name`). Entries replace what is at their
// path (except directory over directory); nothing lands outside the
// rootfs (layer.Apply).
func (s *containersService) CopyToContainer(stream berthv1.ContainersService_CopyToContainerServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	opts := first.GetOptions()
	if opts == nil {
		return fmt.Errorf("the first message must be the options (id, path): %w", errdefs.ErrInvalidArgument)
	}
	c, err := s.a.db.Containers().Resolve(ctx, opts.GetId())
	if err != nil {
		return fieldErr("options.id", err)
	}
	p := opts.GetPath()
	if p == "" {
		return fmt.Errorf("options.path: give the directory to copy into: %w", errdefs.ErrInvalidArgument)
	}
	err = s.a.withRootfs(ctx, c, func(root string) error {
		var r io.Reader = &chunkReader{stream: stream}
		dir, rename := p, ""
		fd, err := openInRoot(root, p, 0)
		var st unix.Stat_t
		if err == nil {
			if err = unix.Fstat(fd, &st); err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
				unix.Close(fd)
				fd, err = -1, unix.ENOTDIR
			}
		}
		if err != nil {
			if strings.HasSuffix(p, "/") || (!errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR)) {
				return copyPathErr(c, p, err)
			}
			dir, rename = path.Dir(path.Clean("/"+p)), path.Base(path.Clean("/"+p))
			if fd, err = openInRoot(root, dir, unix.O_DIRECTORY); err != nil {
				return copyPathErr(c, dir, err)
			}
		}
		defer unix.Close(fd)
		if rename != "" {
			pr, pw := io.Pipe()
			done := make(chan struct{})
			go func(src io.Reader) {
				defer close(done)
				pw.CloseWithError(renameFirst(src, pw, rename))
			}(r)
			defer func() {
				pr.CloseWithError(errors.New("copy ended"))
				<-done
			}()
			r = pr
		}
		_, err = layer.Apply(ctx, fdPath(fd), r, layer.WithWhiteoutMode(layer.WhiteoutDelete), layer.WithLogger(s.a.log))
		if err != nil {
			return fmt.Errorf("copy into %s of container %s: %w", p, c.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return stream.SendAndClose(&berthv1.CopyToContainerResponse{})
}

// renameFirst copies the tar r to w with every entry's first path element
// (and a hard link's target's) replaced by name.
func renameFirst(r io.Reader, w io.Writer, name string) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	re := func(s string) string {
		s = strings.TrimPrefix(s, "./")
		if s == "." || s == "" {
			return name
		}
		if _, rest, ok := strings.Cut(s, "/"); ok {
			return name + "/" + rest
		}
		return name
	}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return tw.Close()
		}
		if err != nil {
			return fmt.Errorf("read the archive: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		hdr.Name = re(hdr.Name)
		if hdr.Typeflag == tar.TypeDir && !strings.HasSuffix(hdr.Name, "/") {
			hdr.Name += "/"
		}
		if hdr.Typeflag == tar.TypeLink {
			hdr.Linkname = re(hdr.Linkname)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}
