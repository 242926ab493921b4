package snapshotter

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDiskUsageCountsWhatDuCounts: the fd-based walk gives the allocated
// bytes and the distinct inodes of a tree (hard links once, symlinks and
// empty files too), as a walk that lstats every path does.
func TestDiskUsageCountsWhatDuCounts(t *testing.T) {
	dir := t.TempDir()
	mk := func(rel, content string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("a.txt", "hello")
	mk("empty", "")
	mk("d1/d2/d3/deep.bin", strings.Repeat("x", 70000))
	for i := range 300 { // more than one Readdirnames batch
		mk(filepath.Join("many", string(rune('a'+i%26))+strings.Repeat("f", i/26+1)), "y")
	}
	if err := os.Link(filepath.Join(dir, "d1/d2/d3/deep.bin"), filepath.Join(dir, "hard.bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a.txt", filepath.Join(dir, "d1/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "emptydir"), 0o700); err != nil {
		t.Fatal(err)
	}

	var want Usage
	seen := map[uint64]bool{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if !seen[st.Ino] {
			seen[st.Ino] = true
			want.Inodes++
			want.Size += st.Blocks * 512
		}
		return nil
	})
	got, err := diskUsage(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("diskUsage = %+v, want %+v", got, want)
	}
	// 1 root + a.txt + empty + d1, d2, d3, deep.bin (hard.bin is the same
	// inode) + link + many + 300 files + emptydir.
	if want.Inodes != 1+2+4+1+1+300+1 {
		t.Errorf("the reference walk found %d inodes: the tree is not what the test meant", want.Inodes)
	}
	if _, err := diskUsage(context.Background(), filepath.Join(dir, "missing")); err == nil {
		t.Error("diskUsage of a missing dir succeeded")
	}
}
