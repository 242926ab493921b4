//go:build linux

// Package hugeheap puts the start of the Go heap on transparent huge
// pages, for a short-lived process whose run time is mostly its start-up:
// berthctl imports hugeheap/atstart (for its side effect), and a
// preforked container init calls Collapse while it waits.
//
// Why: a Go binary the size of berthctl touches about 700 pages before
// main runs, more than half of them fresh heap pages, each a page fault.
// Where faults are dear (on a VM with shadow paging, as this project's CI
// machine, one costs 15-20 µs) that is most of a 22 ms `berthctl --help`.
// Backing the heap's first 4 MiB with two huge pages (MADV_COLLAPSE, Linux
// 6.1+; it works whatever the THP mode, except "never") leaves about 370
// faults and took `berthctl --help` from 22 to 17 ms here (perf stat -r
// 40). The cost is up to 4 MiB of resident memory for the command's short
// life. Without THP, or on an older kernel, the madvise calls fail and
// nothing changes.
//
// The package imports only syscall and unsafe, so that atstart's init runs
// among the first (packages initialise in import-path order, as soon as
// their imports are done), before the bulk of the allocations (protobuf's
// registry, gRPC, cobra) touch the heap.
package hugeheap

import (
	"syscall"
	"unsafe"
)

const (
	hugePage     = 2 << 20
	madvHugepage = 14 // MADV_HUGEPAGE
	madvCollapse = 25 // MADV_COLLAPSE
)

// anchor is a heap object: its address says where the heap is.
var anchor *[64]byte

// Collapse backs the 2 MiB chunk of the heap that holds a fresh object,
// and the next one, with huge pages, and returns how many it did.
func Collapse() int {
	anchor = new([64]byte)
	n := 0
	a := uintptr(unsafe.Pointer(anchor)) &^ (hugePage - 1)
	for _, c := range []uintptr{a, a + hugePage} {
		// MADV_HUGEPAGE first, so the kernel keeps the huge page (and
		// khugepaged does not skip the range); a chunk outside the heap's
		// mapping fails both, harmlessly.
		if _, _, e := syscall.RawSyscall(syscall.SYS_MADVISE, c, hugePage, madvHugepage); e != 0 {
			continue
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_MADVISE, c, hugePage, madvCollapse); e == 0 {
			n++
		}
	}
	return n
}
