package content

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/directio"
	"github.com/berth-dev/berth/internal/hugebuf"
)

// Blobs are written and read for unpacking with O_DIRECT, past the page
// cache: a Writer writes direct whatever it is given in aligned blocks at
// aligned offsets (Fetch gives it 1 MiB chunks), and buffered the rest, so
// a Write that returned is in the file as before, even if the process is
// killed right after. On a VM a new page-cache page can cost a fault in the host: a
// buffered write of a 400 MB pull costs about 1 s of CPU, and reading the
// blob back when it is not cached costs as much again, against ~0.15 s
// direct. The data a direct write leaves is on the device already, so the
// fsync at Commit has only the metadata and the device cache to flush.
const (
	// directChunk is the size of a direct write or read: large enough that
	// the per-call wait for the device is small against the copy.
	directChunk = 1 << 20
	directAlign = directio.Align
)

// openDirect opens path a second time, for direct writes; -1 where the
// filesystem does not do O_DIRECT.
func openDirect(path string) int {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
}

// directOK reports whether p can be written direct at off.
func directOK(p []byte, off int64) bool {
	return len(p) > 0 && len(p)%directAlign == 0 && off%directAlign == 0 &&
		directio.Aligned(p)
}

// StreamProvider is implemented by stores that can stream a whole blob
// more cheaply than through ReaderAt: the unpacker reads each layer once,
// from start to end.
type StreamProvider interface {
	// Stream opens the blob desc.Digest for one sequential read. Errors
	// are those of Provider.ReaderAt.
	Stream(ctx context.Context, desc Descriptor) (io.ReadCloser, error)
}

var _ StreamProvider = (*LocalStore)(nil)

// Stream implements StreamProvider with direct reads, which leave the page
// cache alone; where the filesystem does not do O_DIRECT it reads
// buffered.
func (s *LocalStore) Stream(ctx context.Context, desc Descriptor) (io.ReadCloser, error) {
	if err := validateDigest(desc.Digest); err != nil {
		return nil, err
	}
	p := s.blobPath(desc.Digest)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err == unix.EINVAL {
		f, err := os.Open(p)
		if err != nil {
			return nil, blobErr(desc.Digest, err)
		}
		return f, nil
	}
	if err != nil {
		return nil, blobErr(desc.Digest, &os.PathError{Op: "open", Path: p, Err: err})
	}
	return &directReader{fd: fd, chunk: hugebuf.Get(directChunk), direct: true}, nil
}

// directReader reads a file from start to end in aligned chunks.
type directReader struct {
	fd     int
	chunk  []byte // aligned, directChunk long
	buf    []byte // unread bytes of the last chunk read
	off    int64  // file offset of the next chunk
	eof    bool
	direct bool // O_DIRECT still set on fd
}

func (r *directReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.eof {
			return 0, io.EOF
		}
		n, err := unix.Pread(r.fd, r.chunk, r.off)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EINVAL && r.direct {
			// The open took O_DIRECT but the read does not (a device
			// with larger blocks): read buffered instead.
			r.direct = false
			if _, err := unix.FcntlInt(uintptr(r.fd), unix.F_SETFL, 0); err != nil {
				return 0, fmt.Errorf("read blob: clear O_DIRECT: %w", err)
			}
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("read blob at %d: %w", r.off, err)
		}
		// A short read happens only at the end of the file: the next
		// offset would not be aligned.
		r.eof = n < len(r.chunk)
		r.off += int64(n)
		r.buf = r.chunk[:n]
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *directReader) Close() error {
	if r.fd < 0 {
		return errors.New("blob stream already closed")
	}
	err := unix.Close(r.fd)
	r.fd = -1
	hugebuf.Put(r.chunk)
	r.chunk, r.buf = nil, nil
	return err
}
