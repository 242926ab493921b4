package snapshotter_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/snapshotter"
	"github.com/berth-dev/berth/snapshotter/snaptest"
)

func newOverlay(tb testing.TB, root string) snapshotter.Snapshotter {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("overlay needs root")
	}
	if err := snapshotter.Supported(root); err != nil {
		tb.Skipf("overlay not usable here: %v", err)
	}
	sn, err := snapshotter.NewOverlay(root, snapshotter.WithLogger(testLogger(tb)))
	if err != nil {
		tb.Fatal(err)
	}
	return sn
}

func TestOverlay(t *testing.T) {
	snaptest.Run(t, newOverlay)
}

func TestOverlaySupported(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	root := t.TempDir()
	if err := snapshotter.Supported(root); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("Supported left %v behind", entries)
	}
}

// TestOverlayMountShapes pins the mounts per kind and chain depth, which the
// runtime and the layer applier rely on.
func TestOverlayMountShapes(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	sn := newOverlay(t, root)
	t.Cleanup(func() { _ = sn.Close() })
	snaps := filepath.Join(root, "snapshots")
	prep := func(key, parent string) []snapshotter.Mount {
		t.Helper()
		m, err := sn.Prepare(ctx, key, parent)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	view := func(key, parent string) []snapshotter.Mount {
		t.Helper()
		m, err := sn.View(ctx, key, parent)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	commit := func(name, key string) {
		t.Helper()
		if err := sn.Commit(ctx, name, key); err != nil {
			t.Fatal(err)
		}
	}
	s := func(m []snapshotter.Mount) string {
		return strings.ReplaceAll(strings.Join(append([]string{m[0].Type, m[0].Source}, m[0].Options...), " "), snaps+"/", "")
	}
	check := func(what string, m []snapshotter.Mount, want string) {
		t.Helper()
		if len(m) != 1 || s(m) != want {
			t.Errorf("%s: got %+v, want %q", what, m, want)
		}
	}
	check("active base", prep("a1", ""), "bind 1/fs rbind rw")
	commit("l1", "a1")
	check("view of one", view("v1", "l1"), "bind 1/fs rbind ro")
	check("active on one", prep("a2", "l1"), "overlay overlay lowerdir=1/fs upperdir=3/fs workdir=3/work")
	commit("l2", "a2")
	check("view of two", view("v2", "l2"), "overlay overlay ro lowerdir=3/fs:1/fs")
	check("empty view", view("v0", ""), "bind 5/fs rbind ro")
}

// TestOverlayDeepChain stacks enough layers that the absolute lowerdir list
// exceeds a page, so Mount must fall back to relative paths.
func TestOverlayDeepChain(t *testing.T) {
	ctx := context.Background()
	// A long root makes every lowerdir entry long.
	root := filepath.Join(t.TempDir(), strings.Repeat("r", 100))
	sn := newOverlay(t, root)
	t.Cleanup(func() { _ = sn.Close() })
	const depth = 60
	parent := ""
	for i := 0; i < depth; i++ {
		key := "a" + strconv.Itoa(i)
		prepareWith(t, sn, key, parent, map[string]string{"f" + strconv.Itoa(i): strconv.Itoa(i), "top": strconv.Itoa(i)})
		parent = "l" + strconv.Itoa(i)
		if err := sn.Commit(ctx, parent, key); err != nil {
			t.Fatal(err)
		}
	}
	mounts, err := sn.Prepare(ctx, "top", parent)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Join(mounts[0].Options, ",")); n < os.Getpagesize() {
		t.Fatalf("options are %d bytes; the test needs more than a page", n)
	}
	target := t.TempDir()
	if err := snapshotter.MountAll(mounts, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = snapshotter.Unmount(target) })
	for _, f := range []string{"f0", "f" + strconv.Itoa(depth-1), "top"} {
		if _, err := os.Stat(filepath.Join(target, f)); err != nil {
			t.Error(err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(target, "top")); string(b) != strconv.Itoa(depth-1) {
		t.Errorf("top = %q, want the topmost layer's %d", b, depth-1)
	}
	wd, _ := os.Getwd()
	if !strings.HasSuffix(wd, "snapshotter") {
		t.Errorf("process working directory changed to %s", wd)
	}
}

func BenchmarkOverlayPrepareCommit(b *testing.B) {
	snaptest.BenchmarkPrepareCommit(b, newOverlay)
}

func BenchmarkOverlayPrepareOn1000Files(b *testing.B) {
	snaptest.BenchmarkPrepareOnLargeParent(b, newOverlay, 1000)
}

// TestOverlayCommitOnto: a base snapshot filled while its parent-to-be was
// still active, committed onto it, stacks like one prepared on it; only a
// base snapshot and a committed parent are accepted, and the parent then
// cannot be removed before its new child.
func TestOverlayCommitOnto(t *testing.T) {
	ctx := context.Background()
	sn := newOverlay(t, t.TempDir())
	t.Cleanup(func() { _ = sn.Close() })
	rb, ok := sn.(snapshotter.Rebaser)
	if !ok {
		t.Fatal("Overlay is not a Rebaser")
	}
	prepareWith(t, sn, "x-lower", "", map[string]string{"shared": "lower"})
	prepareWith(t, sn, "x-upper", "", map[string]string{"shared": "upper"}) // before its parent is committed
	if err := os.WriteFile(filepath.Join(mustWritable(t, sn, "x-upper"), "own"), []byte("u"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := rb.CommitOnto(ctx, "upper", "x-upper", "lower", true); !errdefs.IsNotFound(err) {
		t.Fatalf("commit onto a missing parent: %v, want NotFound", err)
	}
	if err := sn.Commit(ctx, "lower", "x-lower"); err != nil {
		t.Fatal(err)
	}
	prepareWith(t, sn, "x-child", "lower", map[string]string{"c": "c"})
	if err := rb.CommitOnto(ctx, "child", "x-child", "lower", true); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("commit onto of a snapshot with a parent: %v, want FailedPrecondition", err)
	}
	if err := rb.CommitOnto(ctx, "upper", "x-upper", "lower", false); err != nil {
		t.Fatal(err)
	}
	info, err := sn.Stat(ctx, "upper")
	if err != nil || info.Parent != "lower" || info.Kind != snapshotter.KindCommitted {
		t.Fatalf("upper: %+v %v, want committed on lower", info, err)
	}
	dirs, err := rb.LowerDirs(ctx, "upper")
	if err != nil || len(dirs) != 2 {
		t.Fatalf("LowerDirs(upper) = %q %v, want upper's and lower's", dirs, err)
	}
	if b, err := os.ReadFile(filepath.Join(dirs[1], "shared")); err != nil || string(b) != "lower" {
		t.Errorf("LowerDirs is not topmost first: %s holds %q %v", dirs[1], b, err)
	}
	mounts, err := sn.View(ctx, "v", "upper")
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	if err := snapshotter.MountAll(mounts, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = snapshotter.Unmount(target) })
	for name, want := range map[string]string{"shared": "upper", "own": "u"} {
		if b, err := os.ReadFile(filepath.Join(target, name)); err != nil || string(b) != want {
			t.Errorf("%s = %q %v, want %q", name, b, err, want)
		}
	}
	if err := sn.Remove(ctx, "lower"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("remove of the new parent: %v, want FailedPrecondition", err)
	}
}

// prepareWith prepares key on parent and writes files (name: content)
// into it.
func prepareWith(t *testing.T, sn snapshotter.Snapshotter, key, parent string, files map[string]string) {
	t.Helper()
	mounts, err := sn.Prepare(context.Background(), key, parent)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := snapshotter.WritableDirOf(mounts)
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func mustWritable(t *testing.T, sn snapshotter.Snapshotter, key string) string {
	t.Helper()
	dir, err := snapshotter.WritableDir(context.Background(), sn, key)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
