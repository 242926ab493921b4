// Package directio holds what O_DIRECT I/O needs in more than one place
// (the content store's blob writes and reads, the layer applier's large
// files): the alignment and aligned buffers.
package directio

import "unsafe"

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
