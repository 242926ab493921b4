package layer

import (
	"archive/tar"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/internal/directio"
	"github.com/berth-dev/berth/internal/hugebuf"
)

// Large files are written with O_DIRECT, past the page cache. On a VM
// every new page-cache page can cost a fault in the host, and a buffered
// write of a large file costs about as much CPU again as decompressing it;
// the pages would also have to be written back by the syncfs at Commit.
// A direct write hands the buffer to the device and leaves no dirty page.
// Small files stay buffered: a direct write waits for the device, and for
// a few KiB that wait costs more than the copy.
const (
	// directMin is the size from which a regular file is written direct.
	directMin   = 1 << 20
	directAlign = directio.Align
)

// setDirect switches O_DIRECT on or off for fd.
func setDirect(fd int, on bool) error {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if on {
		fl |= unix.O_DIRECT
	} else {
		fl &^= unix.O_DIRECT
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	return err
}

// fill reads from r until buf is full or the entry ends; eof reports the
// end of the entry.
func fill(r io.Reader, buf []byte) (n int, eof bool, err error) {
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, true, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, false, nil
}

// copyContent writes the entry's content from tr to fd, an empty file.
// Files of directMin bytes or more go direct when the filesystem allows
// it; if it refuses (EINVAL: tmpfs on old kernels, some FUSE and network
// filesystems) the copy goes on buffered, and so do later files.
func (a *applier) copyContent(fd int, hdr *tar.Header, tr io.Reader) (int64, error) {
	if hdr.Size < directMin || a.noDirect || setDirect(fd, true) != nil {
		return a.copyBuffered(fd, tr, 0)
	}
	// The first buffer is written here, which tells whether the
	// filesystem takes direct writes at all.
	n, eof, rerr := fill(tr, a.buf)
	whole := n &^ (directAlign - 1)
	if err := directio.PwriteAll(fd, a.buf[:whole], 0); err == unix.EINVAL {
		a.noDirect = true
		whole = 0
	} else if err != nil {
		return 0, fmt.Errorf("write: %w", err)
	}
	off := int64(whole)
	tail := a.buf[whole:n]
	if !a.noDirect && !eof && rerr == nil {
		var err error
		if off, tail, err = a.pipeDirect(fd, tr, off); err != nil {
			return off, err
		}
	}
	// The tail, less than a block, is written through the page cache;
	// O_DIRECT is cleared only now that no direct write is in flight.
	if err := setDirect(fd, false); err != nil {
		return off, fmt.Errorf("write: clear O_DIRECT: %w", err)
	}
	if err := directio.PwriteAll(fd, tail, off); err != nil {
		return off, fmt.Errorf("write: %w", err)
	}
	off += int64(len(tail))
	if rerr != nil {
		return off, readErr(rerr)
	}
	if a.noDirect && !eof {
		return a.copyBuffered(fd, tr, off)
	}
	return off, nil
}

// copyBuffered copies the rest of r to fd from offset off.
func (a *applier) copyBuffered(fd int, r io.Reader, off int64) (int64, error) {
	for {
		n, eof, rerr := fill(r, a.buf)
		if err := directio.PwriteAll(fd, a.buf[:n], off); err != nil {
			return off, fmt.Errorf("write: %w", err)
		}
		off += int64(n)
		if rerr != nil {
			return off, readErr(rerr)
		}
		if eof {
			return off, nil
		}
	}
}

// directBuffers is how many buffers pipeDirect cycles through: one being
// filled, one being written, one waiting between them.
const directBuffers = 3

// pipeDirect copies the rest of r to fd (open O_DIRECT) from offset off:
// this goroutine fills buffers while a second one writes their whole
// blocks, so the wait for the device overlaps decompression and hashing.
// It returns the offset the direct writes reached and the tail of the
// content (less than a block, in one of the buffers) for the caller to
// write buffered. The writer goroutine is owned by the call, which closes
// its work channel and waits for it on every path.
func (a *applier) pipeDirect(fd int, r io.Reader, off int64) (int64, []byte, error) {
	if a.dbufs == nil {
		for range directBuffers {
			a.dbufs = append(a.dbufs, hugebuf.Get(copyBufSize))
		}
	}
	type job struct {
		b   []byte
		off int64
	}
	work := make(chan job, len(a.dbufs))
	free := make(chan []byte, len(a.dbufs))
	for _, b := range a.dbufs {
		free <- b
	}
	werrc := make(chan error, 1)
	go func() {
		var werr error
		for j := range work {
			if werr == nil {
				werr = directio.PwriteAll(fd, j.b, j.off)
			}
			free <- j.b
		}
		werrc <- werr
	}()
	var tail []byte
	var rerr error
	for {
		buf := <-free
		n, eof, err := fill(r, buf)
		whole := n &^ (directAlign - 1)
		if whole > 0 {
			work <- job{buf[:whole], off}
			off += int64(whole)
		}
		if eof || err != nil {
			// buf[:whole] may still be being written; the tail after it
			// is not touched by anyone until the next Apply.
			tail, rerr = buf[whole:n], err
			break
		}
	}
	close(work)
	if werr := <-werrc; werr != nil {
		return off, nil, fmt.Errorf("write: %w", werr)
	}
	if rerr != nil {
		return off, nil, readErr(rerr)
	}
	return off, tail, nil
}

// release gives the applier's buffers back; no write is in flight once
// Apply returns (pipeDirect waits for its writer).
func (a *applier) release() {
	hugebuf.Put(a.buf)
	for _, b := range a.dbufs {
		hugebuf.Put(b)
	}
	a.buf, a.dbufs = nil, nil
}

func readErr(err error) error {
	return fmt.Errorf("read content: %w: %w", errdefs.ErrInvalidArgument, err)
}
