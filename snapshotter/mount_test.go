package snapshotter

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

func TestValidateKey(t *testing.T) {
	for _, k := range []string{"a", "sha256:" + strings.Repeat("0", 64), "../x", "/", strings.Repeat("k", MaxKeyLen)} {
		if err := ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q) = %v", k, err)
		}
	}
	for _, k := range []string{"", strings.Repeat("k", MaxKeyLen+1), "a\x00", "\xc3"} {
		if err := ValidateKey(k); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ValidateKey(%.20q) = %v, want ErrInvalidArgument", k, err)
		}
	}
}

func TestParseOptions(t *testing.T) {
	flags, data := parseOptions([]string{"ro", "rbind", "nosuid", "lowerdir=/a:/b", "defaults", "rw", "index=off"})
	if flags != unix.MS_BIND|unix.MS_REC|unix.MS_NOSUID {
		t.Errorf("flags %#x", flags)
	}
	if strings.Join(data, ",") != "lowerdir=/a:/b,index=off" {
		t.Errorf("data %q", data)
	}
}

func TestCommonDir(t *testing.T) {
	for _, tc := range []struct {
		paths []string
		want  string
	}{
		{[]string{"/r/s/1/fs", "/r/s/22/fs", "/r/s/3/work"}, "/r/s"},
		{[]string{"/r/s/1/fs"}, "/r/s/1"},
		{[]string{"/a/x", "/b/y"}, "/"},
		{[]string{"/r/sn/1", "/r/s/2"}, "/r"},
		{nil, ""},
	} {
		if got := commonDir(tc.paths); got != tc.want {
			t.Errorf("commonDir(%v) = %q, want %q", tc.paths, got, tc.want)
		}
	}
}

func TestWritableDirOf(t *testing.T) {
	for _, tc := range []struct {
		m    Mount
		want string
		err  error
	}{
		{Mount{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/l", "upperdir=/u", "workdir=/w"}}, "/u", nil},
		{Mount{Type: "overlay", Source: "overlay", Options: []string{"ro", "lowerdir=/l:/m"}}, "", errdefs.ErrFailedPrecondition},
		{Mount{Type: "bind", Source: "/s", Options: []string{"rbind", "rw"}}, "/s", nil},
		{Mount{Type: "bind", Source: "/s", Options: []string{"rbind", "ro"}}, "", errdefs.ErrFailedPrecondition},
		{Mount{Type: "tmpfs", Source: "tmpfs"}, "", errdefs.ErrNotImplemented},
	} {
		got, err := WritableDirOf([]Mount{tc.m})
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
			t.Errorf("WritableDirOf(%+v) = %q, %v; want %q, %v", tc.m, got, err, tc.want, tc.err)
		}
	}
	if _, err := WritableDirOf(nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("WritableDirOf(nil) = %v", err)
	}
}

func TestMountReadOnlyBindAndUnmount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	src, target := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := MountAll([]Mount{{Type: "bind", Source: src, Options: []string{"rbind", "ro"}}}, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Unmount(target) })
	if b, err := os.ReadFile(filepath.Join(target, "f")); err != nil || string(b) != "x" {
		t.Errorf("read through bind: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(target, "g"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write through ro bind: %v, want EROFS", err)
	}
	// A busy mount is detached rather than left behind.
	f, err := os.Open(filepath.Join(target, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Unmount(target); err != nil {
		t.Fatal(err)
	}
	if err := Unmount(target); err != nil {
		t.Errorf("unmount of a plain directory: %v, want nil", err)
	}
	if _, err := os.Stat(filepath.Join(target, "f")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after unmount the target still shows the source: %v", err)
	}
	if err := MountAll(nil, target); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("MountAll(nil) = %v", err)
	}
}

func TestMountRelativeNoCommonDir(t *testing.T) {
	long := strings.Repeat("x", 3000)
	m := Mount{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/a/" + long + ":/b/" + long}}
	if err := m.Mount(t.TempDir()); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("got %v, want ErrInvalidArgument naming the page limit", err)
	}
}

func TestOpenPicksAndKeepsDriver(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ctx := context.Background()
	dir := t.TempDir()
	// Existing native data keeps native, even where overlay works.
	n, err := NewNative(filepath.Join(dir, "native"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Prepare(ctx, "k", ""); err != nil {
		t.Fatal(err)
	}
	n.Close()
	sn, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sn.(*Native); !ok {
		t.Errorf("Open with native data = %T, want *Native", sn)
	}
	if _, err := sn.Stat(ctx, "k"); err != nil {
		t.Error(err)
	}
	sn.Close()

	fresh := t.TempDir()
	sn, err = Open(fresh)
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	if _, ok := sn.(*Overlay); !ok && Supported(filepath.Join(fresh, "probe")) == nil {
		t.Errorf("Open on a fresh dir where overlay works = %T, want *Overlay", sn)
	}
}
