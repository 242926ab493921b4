package layer

import (
	"archive/tar"
	"fmt"
	"io"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
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
	directMin = 1 << 20
	// directAlign is the alignment O_DIRECT needs for the buffer, the file
	// offset and the length: the logical block size of every common
	// device is 512 or 4096.
	directAlign = 4096
)

// alignedBuf returns a buffer of n bytes whose start is directAlign-aligned.
func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	off := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) % directAlign); r != 0 {
		off = directAlign - r
	}
	return b[off : off+n : off+n]
}

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

// writeAll writes p to fd at off, retrying short writes. Explicit offsets
// keep a direct write that failed halfway from shifting what follows.
func writeAll(fd int, p []byte, off int64) error {
	for len(p) > 0 {
		m, err := unix.Pwrite(fd, p, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		p = p[m:]
		off += int64(m)
	}
	return nil
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

// copyContent writes the entry's content from tr to fd, an empty file. Files of directMin bytes or more go direct
// when the filesystem allows it; if it refuses (EINVAL: tmpfs on old
// kernels, some FUSE and network filesystems) the copy goes on buffered.
func (a *applier) copyContent(fd int, hdr *tar.Header, tr *tar.Reader) (int64, error) {
	direct := hdr.Size >= directMin && !a.noDirect && setDirect(fd, true) == nil
	var written int64
	for {
		n, eof, rerr := fill(tr, a.buf)
		chunk := a.buf[:n]
		if direct {
			// Only whole blocks go direct; the tail of the file, at the
			// end of its content, is written through the page cache.
			whole := n &^ (directAlign - 1)
			if err := writeAll(fd, chunk[:whole], written); err == unix.EINVAL && written == 0 {
				a.noDirect = true // refused: do not try again in this Apply
				whole = 0
			} else if err != nil {
				return written, fmt.Errorf("write: %w", err)
			}
			written += int64(whole)
			chunk = chunk[whole:]
			if len(chunk) > 0 || a.noDirect {
				if err := setDirect(fd, false); err != nil {
					return written, fmt.Errorf("write: clear O_DIRECT: %w", err)
				}
				direct = false
			}
		}
		if err := writeAll(fd, chunk, written); err != nil {
			return written, fmt.Errorf("write: %w", err)
		}
		written += int64(len(chunk))
		if rerr != nil {
			return written, fmt.Errorf("read content: %w: %w", errdefs.ErrInvalidArgument, rerr)
		}
		if eof {
			return written, nil
		}
	}
}
