package snapshotter

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSnapshotsDirIsTopDir: the snapshots directory carries chattr +T where
// the filesystem has the flag, so that new snapshots spread over block
// groups (see markTopDir).
func TestSnapshotsDirIsTopDir(t *testing.T) {
	root := t.TempDir()
	s, err := NewNative(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, err := os.Open(filepath.Join(root, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Skipf("filesystem without inode flags: %v", err)
	}
	if flags&fsTopdirFL == 0 {
		if os.Geteuid() != 0 {
			t.Skip("setting FS_TOPDIR_FL may need root")
		}
		t.Errorf("snapshots dir flags %#x lack FS_TOPDIR_FL", flags)
	}
}
