// Package hugebuf hands out the large I/O buffers of a pull (download
// chunks, the follow rings, the unpack's copy buffers) from anonymous
// mappings backed by transparent huge pages, and keeps them for reuse
// until Release.
//
// Why: a pull moves hundreds of MB through a few dozen MB of buffers, and
// every 4 KiB page of a fresh buffer costs a page fault on first touch.
// On a VM a fault is expensive (measured 15-19 µs here, against 1-2 on
// bare metal): the buffers of a 6-layer pull took ~18,000 faults, about
// 0.3 s of CPU. A 2 MiB huge page is one fault for 512 pages (64 MiB
// touched: 250 ms in 4 KiB pages, 5-25 ms in huge pages), and a buffer
// used again costs none. Go's heap does not ask for huge pages, and
// returns freed pages to the kernel, so the next layer faults again.
//
// A buffer from Get must go back with Put (or be dropped for good, which
// leaks its mapping until the process ends); Put ignores buffers it did
// not hand out. Where mmap fails, Get falls back to the Go heap. Free
// buffers are unmapped by Release, or on their own once none has been in
// use for idleRelease.
package hugebuf

import (
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/directio"
)

// Huge is the size of a transparent huge page on amd64 and arm64 (with 4
// KiB base pages); mappings are sized and aligned to it.
const Huge = 2 << 20

// idleRelease is how long the free buffers stay mapped once none is in
// use: long enough to span the gaps between the layers of a pull.
const idleRelease = 2 * time.Second

var pool = struct {
	mu    sync.Mutex
	free  map[int][][]byte // mapping size → free buffers (full mappings)
	owned map[uintptr]int  // start of each mapping handed out or free → its size
	inUse int
	timer *time.Timer // the pending idle release, if any
}{free: map[int][][]byte{}, owned: map[uintptr]int{}}

// mapHuge maps size bytes (a multiple of Huge), Huge-aligned, and asks for
// huge pages. An unaligned mapping would only get huge pages for the
// aligned 2 MiB ranges inside it.
func mapHuge(size int) ([]byte, error) {
	// MmapPtr and MunmapPtr, not Mmap and Munmap: those track whole
	// mappings and refuse to unmap a part of one.
	raw, err := unix.MmapPtr(-1, 0, nil, uintptr(size+Huge), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	base := uintptr(raw)
	head := (Huge - base%Huge) % Huge
	// Unmap the slack on both sides, page-aligned as mmap made them.
	if head > 0 {
		unix.MunmapPtr(raw, head)
	}
	if tail := Huge - head; tail > 0 {
		unix.MunmapPtr(unsafe.Add(raw, head+uintptr(size)), tail)
	}
	b := unsafe.Slice((*byte)(unsafe.Add(raw, head)), size)
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE) // a hint: EINVAL without THP
	return b, nil
}

// Get returns a buffer of n bytes (length and capacity n) whose start is
// aligned for O_DIRECT. Its content is unspecified: zero when new, the
// last user's bytes when reused.
func Get(n int) []byte {
	size := (n + Huge - 1) &^ (Huge - 1)
	pool.mu.Lock()
	if l := pool.free[size]; len(l) > 0 {
		b := l[len(l)-1]
		pool.free[size] = l[:len(l)-1]
		pool.inUse++
		pool.mu.Unlock()
		return b[:n:n]
	}
	pool.mu.Unlock()
	b, err := mapHuge(size)
	if err != nil {
		return directio.Buf(n)
	}
	pool.mu.Lock()
	pool.owned[start(b)] = size
	pool.inUse++
	pool.mu.Unlock()
	return b[:n:n]
}

// Put gives back a buffer from Get (any slice of it that starts where it
// does) for reuse. The caller must not touch it afterwards.
func Put(b []byte) {
	if cap(b) == 0 {
		return
	}
	p := start(b)
	pool.mu.Lock()
	defer pool.mu.Unlock()
	size, ok := pool.owned[p]
	if !ok {
		return // from the heap fallback, or not ours
	}
	full := unsafe.Slice(unsafe.SliceData(b), size)
	pool.free[size] = append(pool.free[size], full)
	pool.inUse--
	if pool.inUse == 0 && pool.timer == nil {
		pool.timer = time.AfterFunc(idleRelease, func() {
			pool.mu.Lock()
			defer pool.mu.Unlock()
			pool.timer = nil
			if pool.inUse == 0 {
				releaseLocked()
			}
		})
	}
}

// Release unmaps the buffers not in use, handing their memory back to the
// kernel: after a pull, as berthd then idles.
func Release() {
	pool.mu.Lock()
	defer pool.mu.Unlock()
	releaseLocked()
}

func releaseLocked() {
	for size, l := range pool.free {
		for _, b := range l {
			delete(pool.owned, start(b))
			unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b)))
		}
		delete(pool.free, size)
	}
}

// Stats reports the mappings handed out and the free ones, for tests.
func Stats() (inUse, free int) {
	pool.mu.Lock()
	defer pool.mu.Unlock()
	for _, l := range pool.free {
		free += len(l)
	}
	return pool.inUse, free
}

func start(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
