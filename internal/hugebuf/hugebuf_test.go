package hugebuf

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/berth-dev/berth/internal/directio"
)

// mapped reports whether addr lies in one of this process's mappings.
func mapped(t *testing.T, addr uintptr) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		lo, hi, ok := strings.Cut(strings.Fields(line + " x")[0], "-")
		if !ok {
			continue
		}
		a, _ := strconv.ParseUint(lo, 16, 64)
		b, _ := strconv.ParseUint(hi, 16, 64)
		if uint64(addr) >= a && uint64(addr) < b {
			return true
		}
	}
	return false
}

func TestGetPutReuseRelease(t *testing.T) {
	Release()
	b := Get(1 << 20)
	if len(b) != 1<<20 || cap(b) != 1<<20 {
		t.Fatalf("len %d cap %d, want 1 MiB", len(b), cap(b))
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if p%Huge != 0 || !directio.Aligned(b) {
		t.Errorf("buffer at %#x is not huge-page aligned", p)
	}
	for i := range b {
		if b[i] != 0 {
			t.Fatalf("a new buffer is not zero at %d", i)
		}
	}
	copy(b, "used")
	if inUse, free := Stats(); inUse != 1 || free != 0 {
		t.Errorf("in use %d, free %d; want 1, 0", inUse, free)
	}
	Put(b[:10]) // a slice of it that starts where it does
	if inUse, free := Stats(); inUse != 0 || free != 1 {
		t.Errorf("after Put: in use %d, free %d; want 0, 1", inUse, free)
	}
	// The same size class (up to 2 MiB) gets the same mapping back, and
	// Put ignores what Get did not hand out.
	c := Get(2 << 20)
	if q := uintptr(unsafe.Pointer(unsafe.SliceData(c))); q != p || len(c) != 2<<20 {
		t.Errorf("Get after Put: %#x len %d, want the freed mapping %#x again", q, len(c), p)
	}
	Put(make([]byte, 4096))
	Put(nil)
	Put(c)
	if !mapped(t, p) {
		t.Fatal("a free buffer was unmapped before Release")
	}
	Release()
	if inUse, free := Stats(); inUse != 0 || free != 0 {
		t.Errorf("after Release: in use %d, free %d", inUse, free)
	}
	if mapped(t, p) {
		t.Error("Release left the free buffer mapped")
	}
}

func TestLargeBuffersSpanHugePages(t *testing.T) {
	b := Get(8<<20 + 1)
	defer Put(b)
	if len(b) != 8<<20+1 {
		t.Fatalf("len %d", len(b))
	}
	b[len(b)-1] = 1 // the last byte is inside the mapping
	if !mapped(t, uintptr(unsafe.Pointer(&b[len(b)-1]))) {
		t.Fatal("the end of the buffer is not mapped")
	}
}
