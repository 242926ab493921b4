package container

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
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

// Mounts that need the cgroup wait for it, with every mount that overlaps
// one of them (so the tree is what spec order makes); the rest, Docker's
// usual /proc, /dev, /sys, binds, are made while the cgroup is being made.
func TestSplitForCgroup(t *testing.T) {
	ms := []specs.Mount{
		{Destination: "/proc", Type: "proc"},
		{Destination: "/sys/fs/cgroup/keep", Type: "bind"}, // before the cgroup mount: spec order holds
		{Destination: "/dev", Type: "tmpfs"},
		{Destination: "/sys", Type: "sysfs"},
		{Destination: "/sys/fs/cgroup", Type: "cgroup"},
		{Destination: "/dev/mqueue", Type: "mqueue"},
		{Destination: "/sys/fs/cgroup/extra", Type: "bind"}, // inside it
		{Destination: "sys/fs", Type: "tmpfs"},              // contains it (relative)
		{Destination: "/etc/hosts", Type: "bind"},
		{Destination: "/sys/fs/other", Type: "bind"}, // inside the deferred /sys/fs
	}
	now, later := splitForCgroup(ms)
	dests := func(ms []specs.Mount) []string {
		var d []string
		for _, m := range ms {
			d = append(d, m.Destination)
		}
		return d
	}
	wantNow := []string{"/proc", "/sys/fs/cgroup/keep", "/dev", "/sys", "/dev/mqueue", "/etc/hosts"}
	wantLater := []string{"/sys/fs/cgroup", "/sys/fs/cgroup/extra", "sys/fs", "/sys/fs/other"}
	if !slices.Equal(dests(now), wantNow) || !slices.Equal(dests(later), wantLater) {
		t.Fatalf("now %v, later %v; want %v, %v", dests(now), dests(later), wantNow, wantLater)
	}
	if now, later := splitForCgroup(ms[:4]); len(later) != 0 || len(now) != 4 {
		t.Fatalf("no cgroup mount: deferred %v", dests(later))
	}
}
