//go:build linux

package hugeheap

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Where the host allows huge pages, Collapse gives the heap some.
func TestHeapStartsOnHugePages(t *testing.T) {
	mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || bytes.Contains(mode, []byte("[never]")) {
		t.Skipf("transparent huge pages are off on this host (%q): nothing to collapse", bytes.TrimSpace(mode))
	}
	Collapsed := Collapse()
	if Collapsed == 0 {
		t.Fatal("no heap chunk was backed by a huge page")
	}
	rollup, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(rollup), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "AnonHugePages:" {
			kb, _ := strconv.Atoi(f[1])
			if kb < 2048*Collapsed {
				t.Fatalf("AnonHugePages %d kB, want at least %d kB for %d collapsed chunks", kb, 2048*Collapsed, Collapsed)
			}
			return
		}
	}
	t.Fatal("no AnonHugePages line in /proc/self/smaps_rollup")
}
