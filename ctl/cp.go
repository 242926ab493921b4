package ctl

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func newCpCommand(c *CLI) *cobra.Command {
	return &cobra.Command{
		Use:   "cp CONTAINER:SRC_PATH DEST_PATH|-\n  berthctl cp SRC_PATH|- CONTAINER:DEST_PATH",
		Short: "Copy files between a container and the local filesystem",
		Long: `Copy files between a container and the local filesystem.

SRC_PATH ending in /. copies a directory's contents rather than the
directory. A DEST_PATH that is an existing directory receives the source
inside it; otherwise the source is copied as DEST_PATH. "-" reads (or
writes) a tar archive on stdin (stdout); into a container it is extracted
in the directory DEST_PATH.`,
		Args: args(2, 2),
		RunE: func(cmd *cobra.Command, a []string) error {
			srcCtr, srcPath := splitCpArg(a[0])
			dstCtr, dstPath := splitCpArg(a[1])
			switch {
			case srcCtr != "" && dstCtr != "":
				return usageError{errors.New("copying between containers is not supported")}
			case srcCtr == "" && dstCtr == "":
				return usageError{errors.New("must specify at least one container source")}
			}
			cl, err := c.Client()
			if err != nil {
				return err
			}
			if srcCtr != "" {
				return c.copyFrom(cmd, cl, srcCtr, srcPath, dstPath)
			}
			return c.copyTo(cmd, cl, srcPath, dstCtr, dstPath)
		},
	}
}

// splitCpArg splits CONTAINER:PATH; a path that starts with / or . (or
// has no colon) is local.
func splitCpArg(s string) (ctr, p string) {
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") {
		return "", s
	}
	if ctr, p, ok := strings.Cut(s, ":"); ok {
		return ctr, p
	}
	return "", s
}

func (c *CLI) copyFrom(cmd *cobra.Command, cl *Client, ref, src, dst string) error {
	ctx := cmd.Context()
	ctr, err := resolve(ctx, cl, ref)
	if err != nil {
		return err
	}
	stream, err := cl.Containers.CopyFromContainer(ctx, &berthv1.CopyFromContainerRequest{Id: ctr.Id, Path: src})
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				pw.CloseWithError(err)
				return
			}
			if _, err := pw.Write(msg.GetChunk()); err != nil {
				return
			}
		}
	}()
	defer pr.Close()
	if dst == "-" {
		_, err := io.Copy(c.Out, pr)
		return err
	}
	// Where the archive's first element goes: into dst, as dst, or (for
	// SRC/.) its contents into dst.
	contents := strings.HasSuffix(src, "/.") || src == "."
	st, statErr := os.Stat(dst)
	dstIsDir := statErr == nil && st.IsDir()
	if statErr != nil && !errors.Is(statErr, fs.ErrNotExist) {
		return statErr
	}
	tr := tar.NewReader(pr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.TrimSuffix(path.Clean(hdr.Name), "/")
		_, rest, _ := strings.Cut(name, "/")
		var target string
		switch {
		case contents:
			target = filepath.Join(dst, rest)
		case dstIsDir:
			target = filepath.Join(dst, name)
		default:
			target = filepath.Join(dst, rest)
		}
		if err := extractEntry(tr, hdr, target, dst); err != nil {
			return err
		}
	}
}

// extractEntry writes one archive entry at target, which must stay under
// root (or be root).
func extractEntry(tr *tar.Reader, hdr *tar.Header, target, root string) error {
	if rel, err := filepath.Rel(root, target); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("archive entry %q points outside %s", hdr.Name, root)
	}
	mode := os.FileMode(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(target, mode); err != nil {
			return err
		}
	case tar.TypeReg:
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		os.Remove(target)
		f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, tr); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		os.Chmod(target, mode)
	case tar.TypeSymlink:
		os.Remove(target)
		if err := os.Symlink(hdr.Linkname, target); err != nil {
			return err
		}
		return nil
	case tar.TypeLink:
		// Hard links point at an earlier entry of the same archive.
		return nil
	default:
		return nil
	}
	return os.Chtimes(target, hdr.ModTime, hdr.ModTime)
}

func (c *CLI) copyTo(cmd *cobra.Command, cl *Client, src, ref, dst string) error {
	ctx := cmd.Context()
	ctr, err := resolve(ctx, cl, ref)
	if err != nil {
		return err
	}
	stream, err := cl.Containers.CopyToContainer(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&berthv1.CopyToContainerRequest{Part: &berthv1.CopyToContainerRequest_Options{Options: &berthv1.CopyToOptions{Id: ctr.Id, Path: dst}}}); err != nil {
		return err
	}
	cw := &copyToWriter{stream: stream}
	var werr error
	if src == "-" {
		_, werr = io.Copy(cw, os.Stdin)
	} else {
		werr = tarLocal(cw, src)
	}
	if werr != nil && !errors.Is(werr, io.EOF) {
		stream.CloseSend()
		return werr
	}
	_, err = stream.CloseAndRecv()
	return err
}

type copyToWriter struct {
	stream berthv1.ContainersService_CopyToContainerClient
}

func (w *copyToWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += 1 << 20 {
		end := min(len(p), off+1<<20)
		if err := w.stream.Send(&berthv1.CopyToContainerRequest{Part: &berthv1.CopyToContainerRequest_Chunk{Chunk: append([]byte(nil), p[off:end]...)}}); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

// tarLocal writes a tar of src: rooted at its base name, or at "." for
// SRC/. (its contents).
func tarLocal(w io.Writer, src string) error {
	root := filepath.Base(filepath.Clean(src))
	if strings.HasSuffix(src, "/.") || src == "." {
		root = "."
	}
	if _, err := os.Lstat(src); err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	err := filepath.Walk(src, func(p string, info fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = path.Join(root, filepath.ToSlash(rel))
		if info.IsDir() {
			hdr.Name += "/"
		}
		// As docker cp: what is copied in belongs to the container's root.
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(tw, f); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
