package container

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSecureJoin(t *testing.T) {
	root := t.TempDir()
	for _, l := range [][2]string{
		{"/etc", "abs"},        // absolute: resolved inside root
		{"../../../etc", "up"}, // relative escape: stops at root
		{"sub/x", "rel"},
	} {
		if err := os.Symlink(l[0], filepath.Join(root, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("loop", filepath.Join(root, "loop")); err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"/proc":           "/proc",
		"/abs/passwd":     "/etc/passwd",
		"/up/passwd":      "/etc/passwd",
		"/../../etc":      "/etc",
		"/rel/y":          "/sub/x/y",
		"a/./b/../c":      "/a/c",
		"/missing/deeper": "/missing/deeper",
	} {
		got, err := secureJoin(root, in)
		if err != nil || got != filepath.Join(root, want) {
			t.Errorf("secureJoin(%q) = %q, %v; want %q", in, got, err, filepath.Join(root, want))
		}
	}
	if _, err := secureJoin(root, "/loop/x"); err == nil {
		t.Error("symlink loop not detected")
	}
}

func TestParseMountOptions(t *testing.T) {
	flags, prop, data := parseMountOptions([]string{"rbind", "ro", "nosuid", "rw", "rslave", "mode=755", "size=1m"})
	if want := uintptr(unix.MS_BIND | unix.MS_REC | unix.MS_NOSUID); flags != want {
		t.Errorf("flags %#x, want %#x", flags, want)
	}
	if len(prop) != 1 || prop[0] != unix.MS_SLAVE|unix.MS_REC {
		t.Errorf("propagation %v", prop)
	}
	if data != "mode=755,size=1m" {
		t.Errorf("data %q", data)
	}
}
