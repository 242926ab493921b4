// Package directio holds what O_DIRECT I/O needs in more than one place
// (the content store's blob writes and reads, the layer applier's large
// files): the alignment, aligned buffers and positioned writes.
package directio

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Align is the alignment O_DIRECT needs for buffers, file offsets and
// lengths: the logical block size of every common device is 512 or 4096.
const Align = 4096

// Buf returns a buffer of n bytes (capacity n) whose start is
// Align-aligned.
func Buf(n int) []byte {
	b := make([]byte, n+Align)
	off := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) % Align); r != 0 {
		off = Align - r
	}
	return b[off : off+n : off+n]
}

// Aligned reports whether p's start is Align-aligned.
func Aligned(p []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(p)))%Align == 0
}

// PwriteAll writes p to fd at off, retrying short and interrupted writes.
// Explicit offsets keep a direct write that failed halfway from shifting
// what follows.
func PwriteAll(fd int, p []byte, off int64) error {
	for len(p) > 0 {
		n, err := unix.Pwrite(fd, p, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		p = p[n:]
		off += int64(n)
	}
	return nil
}
