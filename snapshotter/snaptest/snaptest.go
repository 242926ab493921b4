// Package snaptest is the conformance suite every snapshotter.Snapshotter
// passes. It works through real mounts, so it needs root (tests skip
// otherwise).
//
// Implementations are expected to keep snapshot directories in
// <root>/snapshots (the layout documented in package snapshotter): the
// Cleanup test plants orphan directories there.
package snaptest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/snapshotter"
)

// NewFunc opens a snapshotter on root. Called twice on one root, it must see
// the first one's metadata (the reopen test closes the first one before).
type NewFunc func(tb testing.TB, root string) snapshotter.Snapshotter

// Run runs the conformance suite against the snapshotter that newSn opens.
func Run(t *testing.T, newSn NewFunc) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("snapshotter conformance needs root to mount")
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, sn snapshotter.Snapshotter, root string, newSn NewFunc)
	}{
		{"ChainWriteCommitView", testChain},
		{"BaseActiveAndEmptyView", testBase},
		{"MetadataPreservedThroughChain", testMetadataPreserved},
		{"RemoveWithChildrenRefused", testRemoveChildren},
		{"NotFound", testNotFound},
		{"DuplicateKey", testDuplicate},
		{"CommitNonActive", testCommitNonActive},
		{"ParentMustBeCommitted", testParentCommitted},
		{"Usage", testUsage},
		{"LabelsAndStat", testLabels},
		{"WalkAndList", testWalk},
		{"Reopen", testReopen},
		{"Cleanup", testCleanup},
		{"OrphanInTheWayOfNewID", testOrphanNextID},
		{"InvalidKeys", testInvalidKeys},
		{"OddKeysNeverPaths", testOddKeys},
		{"ConcurrentPrepare", testConcurrent},
		{"WritableDir", testWritableDir},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			sn := newSn(t, root)
			t.Cleanup(func() { _ = sn.Close() })
			tc.fn(t, sn, root, newSn)
		})
	}
}

// layerKey returns a chain-ID-like name, as the image code uses.
func layerKey(s string) string {
	return fmt.Sprintf("sha256:%064x", []byte(s))[:71]
}

// mountT mounts mounts on a fresh directory and unmounts it when the test
// ends (even on failure); the returned func unmounts earlier, e.g. before
// Commit. The unmount cleanup is registered after TempDir's, so it runs
// first and RemoveAll never descends into a live mount.
func mountT(t testing.TB, mounts []snapshotter.Mount) (string, func()) {
	t.Helper()
	target := t.TempDir()
	if err := snapshotter.MountAll(mounts, target); err != nil {
		t.Fatalf("mount %+v: %v", mounts, err)
	}
	var once sync.Once
	unmount := func() {
		once.Do(func() {
			if err := snapshotter.Unmount(target); err != nil {
				t.Errorf("unmount %s: %v", target, err)
			}
		})
	}
	t.Cleanup(unmount)
	return target, unmount
}

func writeFile(t testing.TB, dir, name, content string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func checkFile(t testing.TB, dir, name, want string) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Errorf("read %s: %v", name, err)
		return
	}
	if string(got) != want {
		t.Errorf("%s = %q, want %q", name, got, want)
	}
}

func checkAbsent(t testing.TB, dir, name string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: want absent, got err %v", name, err)
	}
}

func wantErr(t testing.TB, err, kind error, what string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Errorf("%s: got error %v, want %v", what, err, kind)
	}
}

// commitLayer prepares key on parent, lets write fill it through a mount,
// unmounts and commits it as name.
func commitLayer(t testing.TB, sn snapshotter.Snapshotter, name, parent string, write func(dir string)) {
	t.Helper()
	ctx := context.Background()
	key := "active-" + name
	mounts, err := sn.Prepare(ctx, key, parent)
	if err != nil {
		t.Fatalf("prepare %s on %q: %v", key, parent, err)
	}
	dir, unmount := mountT(t, mounts)
	if write != nil {
		write(dir)
	}
	unmount()
	if err := sn.Commit(ctx, name, key); err != nil {
		t.Fatalf("commit %s as %s: %v", key, name, err)
	}
}

func testChain(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	l1, l2, l3 := layerKey("l1"), layerKey("l2"), layerKey("l3")
	commitLayer(t, sn, l1, "", func(d string) {
		writeFile(t, d, "etc/hostname", "base")
		writeFile(t, d, "bin/sh", "shell")
		writeFile(t, d, "keep/one", "1")
	})
	commitLayer(t, sn, l2, l1, func(d string) {
		checkFile(t, d, "bin/sh", "shell")
		writeFile(t, d, "etc/hostname", "layer2")
		writeFile(t, d, "two", "2")
	})

	// A 3-level chain: the active mount stacks two committed parents.
	mounts, err := sn.Prepare(ctx, "c", l2)
	if err != nil {
		t.Fatal(err)
	}
	d, unmount := mountT(t, mounts)
	checkFile(t, d, "etc/hostname", "layer2")
	checkFile(t, d, "bin/sh", "shell")
	checkFile(t, d, "keep/one", "1")
	checkFile(t, d, "two", "2")
	writeFile(t, d, "etc/hostname", "top")
	writeFile(t, d, "keep/three", "3")
	if err := os.Remove(filepath.Join(d, "two")); err != nil {
		t.Fatal(err)
	}
	unmount()

	// The writes belong to c alone: views of the parents are unchanged.
	for _, tc := range []struct{ parent, hostname string }{{l1, "base"}, {l2, "layer2"}} {
		vm, err := sn.View(ctx, "view-"+tc.parent, tc.parent)
		if err != nil {
			t.Fatal(err)
		}
		vd, vun := mountT(t, vm)
		checkFile(t, vd, "etc/hostname", tc.hostname)
		checkAbsent(t, vd, "keep/three")
		vun()
	}
	// Mounts gives the same view of the active snapshot again.
	mounts, err = sn.Mounts(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	d, unmount = mountT(t, mounts)
	checkFile(t, d, "etc/hostname", "top")
	checkFile(t, d, "keep/three", "3")
	checkAbsent(t, d, "two")
	unmount()

	if err := sn.Commit(ctx, l3, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Stat(ctx, "c"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("active key after commit: got %v, want ErrNotFound", err)
	}
	info, err := sn.Stat(ctx, l3)
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != snapshotter.KindCommitted || info.Parent != l2 || info.Name != l3 {
		t.Errorf("stat %s = %+v, want committed with parent %s", l3, info, l2)
	}

	// A view of the 3-level chain sees the committed content, read-only.
	vm, err := sn.View(ctx, "v3", l3)
	if err != nil {
		t.Fatal(err)
	}
	vd, _ := mountT(t, vm)
	checkFile(t, vd, "etc/hostname", "top")
	checkFile(t, vd, "bin/sh", "shell")
	checkFile(t, vd, "keep/one", "1")
	checkFile(t, vd, "keep/three", "3")
	checkAbsent(t, vd, "two")
	if err := os.WriteFile(filepath.Join(vd, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write to view: got %v, want EROFS", err)
	}
	if _, err := sn.Mounts(ctx, l3); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("mounts of committed: got %v, want ErrFailedPrecondition", err)
	}
}

func testBase(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	mounts, err := sn.Prepare(ctx, "base", "")
	if err != nil {
		t.Fatal(err)
	}
	d, _ := mountT(t, mounts)
	entries, err := os.ReadDir(d)
	if err != nil || len(entries) != 0 {
		t.Errorf("new base snapshot: entries %v, err %v; want empty", entries, err)
	}
	writeFile(t, d, "f", "x")

	vm, err := sn.View(ctx, "empty-view", "")
	if err != nil {
		t.Fatal(err)
	}
	vd, _ := mountT(t, vm)
	if entries, err := os.ReadDir(vd); err != nil || len(entries) != 0 {
		t.Errorf("empty view: entries %v, err %v; want empty", entries, err)
	}
	if err := os.WriteFile(filepath.Join(vd, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write to empty view: got %v, want EROFS", err)
	}
	if info, err := sn.Stat(ctx, "empty-view"); err != nil || info.Kind != snapshotter.KindView {
		t.Errorf("stat view = %+v, %v", info, err)
	}
}

// fileMeta is what an image layer carries per entry beyond content.
type fileMeta struct {
	mode       uint32
	uid, gid   uint32
	mtime      unix.Timespec
	rdev       uint64
	ino        uint64
	link, xatt string
}

func lmeta(t testing.TB, p string) fileMeta {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	m := fileMeta{mode: st.Mode, uid: st.Uid, gid: st.Gid, mtime: st.Mtim, rdev: st.Rdev, ino: st.Ino}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		m.link, _ = os.Readlink(p)
	} else {
		buf := make([]byte, 64)
		if n, err := unix.Lgetxattr(p, "user.berth", buf); err == nil {
			m.xatt = string(buf[:n])
		}
	}
	return m
}

func testMetadataPreserved(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	mtime := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
	ts := []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	names := []string{"dir", "dir/suid", "dir/link", "dir/hard1", "dir/hard2", "dir/null", "dir/fifo", "dir/sticky"}
	want := map[string]fileMeta{}
	commitLayer(t, sn, layerKey("meta"), "", func(d string) {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		p := func(n string) string { return filepath.Join(d, n) }
		must(os.Mkdir(p("dir"), 0o750))
		must(os.WriteFile(p("dir/suid"), []byte("#!"), 0o600))
		must(os.Chown(p("dir/suid"), 1000, 1001))
		must(unix.Chmod(p("dir/suid"), 0o4755)) // os.Chmod would drop the raw setuid bit
		must(unix.Lsetxattr(p("dir/suid"), "user.berth", []byte("v"), 0))
		must(os.Symlink("../escape/target", p("dir/link")))
		must(unix.Lchown(p("dir/link"), 7, 8))
		must(os.WriteFile(p("dir/hard1"), []byte("h"), 0o644))
		must(os.Link(p("dir/hard1"), p("dir/hard2")))
		must(unix.Mknod(p("dir/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(unix.Mkfifo(p("dir/fifo"), 0o640))
		must(os.Mkdir(p("dir/sticky"), 0o755))
		must(os.Chmod(p("dir/sticky"), os.ModeSticky|0o777))
		for i := len(names) - 1; i >= 0; i-- { // children before their dir
			must(unix.UtimesNanoAt(unix.AT_FDCWD, p(names[i]), ts, unix.AT_SYMLINK_NOFOLLOW))
		}
		for _, n := range names {
			want[n] = lmeta(t, p(n))
		}
		if want["dir/suid"].mode&unix.S_ISUID == 0 || want["dir/sticky"].mode&unix.S_ISVTX == 0 {
			t.Fatalf("test setup lost setuid or sticky: %+v", want)
		}
	})
	mounts, err := sn.Prepare(ctx, "child", layerKey("meta"))
	if err != nil {
		t.Fatal(err)
	}
	d, _ := mountT(t, mounts)
	got := map[string]fileMeta{}
	for _, n := range names {
		g, w := lmeta(t, filepath.Join(d, n)), want[n]
		got[n] = g
		g.ino, w.ino = 0, 0 // inode numbers differ in a copy
		if g != w {
			t.Errorf("%s: got %+v, want %+v", n, g, w)
		}
	}
	if got["dir/hard1"].ino != got["dir/hard2"].ino {
		t.Errorf("hard link broken: inodes %d and %d", got["dir/hard1"].ino, got["dir/hard2"].ino)
	}
	checkFile(t, d, "dir/hard2", "h")
}

func testRemoveChildren(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	l1, l2 := layerKey("p1"), layerKey("p2")
	commitLayer(t, sn, l1, "", func(d string) { writeFile(t, d, "a", "a") })
	commitLayer(t, sn, l2, l1, nil)
	if _, err := sn.View(ctx, "view", l2); err != nil {
		t.Fatal(err)
	}
	wantErr(t, sn.Remove(ctx, l1), errdefs.ErrFailedPrecondition, "remove parent of committed child")
	wantErr(t, sn.Remove(ctx, l2), errdefs.ErrFailedPrecondition, "remove parent of view")
	for _, k := range []string{l1, l2, "view"} {
		if _, err := sn.Stat(ctx, k); err != nil {
			t.Errorf("refused remove changed %s: %v", k, err)
		}
	}
	for _, k := range []string{"view", l2, l1} {
		if err := sn.Remove(ctx, k); err != nil {
			t.Fatalf("remove %s: %v", k, err)
		}
	}
	if infos, err := sn.List(ctx); err != nil || len(infos) != 0 {
		t.Errorf("after removing all: %v, %v", infos, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "snapshots")); len(entries) != 0 {
		t.Errorf("after removing all, snapshot directories left: %v", entries)
	}
}

func testNotFound(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	wantErr(t, sn.Remove(ctx, "nope"), errdefs.ErrNotFound, "remove unknown")
	_, err := sn.Stat(ctx, "nope")
	wantErr(t, err, errdefs.ErrNotFound, "stat unknown")
	_, err = sn.Mounts(ctx, "nope")
	wantErr(t, err, errdefs.ErrNotFound, "mounts unknown")
	_, err = sn.Usage(ctx, "nope")
	wantErr(t, err, errdefs.ErrNotFound, "usage unknown")
	wantErr(t, sn.Commit(ctx, "name", "nope"), errdefs.ErrNotFound, "commit unknown")
	_, err = sn.Prepare(ctx, "k", "nope")
	wantErr(t, err, errdefs.ErrNotFound, "prepare on unknown parent")
	_, err = sn.View(ctx, "k", "nope")
	wantErr(t, err, errdefs.ErrNotFound, "view on unknown parent")
	if _, err := sn.Stat(ctx, "k"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("failed prepare left key behind: %v", err)
	}
}

func testDuplicate(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	commitLayer(t, sn, "committed", "", nil)
	if _, err := sn.Prepare(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	_, err := sn.Prepare(ctx, "a", "")
	wantErr(t, err, errdefs.ErrAlreadyExists, "prepare existing active key")
	_, err = sn.View(ctx, "a", "committed")
	wantErr(t, err, errdefs.ErrAlreadyExists, "view with existing key")
	_, err = sn.Prepare(ctx, "committed", "")
	wantErr(t, err, errdefs.ErrAlreadyExists, "prepare with committed name")
	wantErr(t, sn.Commit(ctx, "committed", "a"), errdefs.ErrAlreadyExists, "commit to existing name")
	if info, err := sn.Stat(ctx, "a"); err != nil || info.Kind != snapshotter.KindActive {
		t.Errorf("refused commit changed the active snapshot: %+v, %v", info, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "snapshots")); len(entries) != 2 {
		t.Errorf("refused creations left directories: %v", entries)
	}
}

func testCommitNonActive(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	commitLayer(t, sn, "c", "", nil)
	if _, err := sn.View(ctx, "v", "c"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, sn.Commit(ctx, "x", "v"), errdefs.ErrFailedPrecondition, "commit a view")
	wantErr(t, sn.Commit(ctx, "y", "c"), errdefs.ErrFailedPrecondition, "commit a committed snapshot")
	for _, k := range []string{"x", "y"} {
		if _, err := sn.Stat(ctx, k); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("refused commit created %s: %v", k, err)
		}
	}
}

func testParentCommitted(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	if _, err := sn.Prepare(ctx, "active", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.View(ctx, "view", ""); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"active", "view"} {
		_, err := sn.Prepare(ctx, "child-"+p, p)
		wantErr(t, err, errdefs.ErrFailedPrecondition, "prepare on "+p)
		_, err = sn.View(ctx, "view-"+p, p)
		wantErr(t, err, errdefs.ErrFailedPrecondition, "view on "+p)
	}
}

func testUsage(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	mounts, err := sn.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	empty, err := sn.Usage(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	d, unmount := mountT(t, mounts)
	const size = 1 << 20
	if err := os.WriteFile(filepath.Join(d, "big"), bytes.Repeat([]byte{1}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		writeFile(t, d, "small/"+strconv.Itoa(i), "x")
	}
	unmount()
	u, err := sn.Usage(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if u.Size < empty.Size+size || u.Inodes != empty.Inodes+12 {
		t.Errorf("usage after writing 1 MiB in 12 inodes: %+v (empty %+v)", u, empty)
	}
	if err := sn.Commit(ctx, "c", "a"); err != nil {
		t.Fatal(err)
	}
	cu, err := sn.Usage(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if cu != u {
		t.Errorf("usage after commit %+v, before %+v", cu, u)
	}
	// A child's usage is its own, whatever the parent holds.
	if _, err := sn.View(ctx, "v", "c"); err != nil {
		t.Fatal(err)
	}
	if vu, err := sn.Usage(ctx, "v"); err != nil || vu.Size >= size {
		t.Errorf("view usage %+v, %v: want the view's own, well under 1 MiB", vu, err)
	}
}

func testLabels(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	before := time.Now().Add(-time.Second)
	if _, err := sn.Prepare(ctx, "a", "", snapshotter.WithLabels(map[string]string{"x": "1", "y": "2"})); err != nil {
		t.Fatal(err)
	}
	info, err := sn.Stat(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if info.Labels["x"] != "1" || info.Labels["y"] != "2" || info.Kind != snapshotter.KindActive || info.Name != "a" || info.Parent != "" {
		t.Errorf("stat = %+v", info)
	}
	if info.Created.Before(before) || info.Updated.Before(before) {
		t.Errorf("times %v %v not set", info.Created, info.Updated)
	}
	if err := sn.Commit(ctx, "c", "a", snapshotter.WithLabels(map[string]string{"y": "3"})); err != nil {
		t.Fatal(err)
	}
	info, err = sn.Stat(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if info.Labels["x"] != "1" || info.Labels["y"] != "3" {
		t.Errorf("labels after commit = %v, want x=1 (kept) y=3 (overridden)", info.Labels)
	}
	_, err = sn.Prepare(ctx, "b", "", snapshotter.WithLabels(map[string]string{"": "v"}))
	wantErr(t, err, errdefs.ErrInvalidArgument, "empty label name")
}

func testWalk(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	commitLayer(t, sn, "c", "", nil)
	for _, k := range []string{"b", "a"} {
		if _, err := sn.View(ctx, k, "c"); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	// Walk's callback may call the snapshotter.
	err := sn.Walk(ctx, func(ctx context.Context, info snapshotter.Info) error {
		keys = append(keys, info.Name)
		if info.Kind == snapshotter.KindView {
			return sn.Remove(ctx, info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"a", "b", "c"}) {
		t.Errorf("walk order %v", keys)
	}
	infos, err := sn.List(ctx)
	if err != nil || len(infos) != 1 || infos[0].Name != "c" {
		t.Errorf("list after removing views in walk = %+v, %v", infos, err)
	}
	stop := errors.New("stop")
	if err := sn.Walk(ctx, func(context.Context, snapshotter.Info) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("walk returned %v, want the callback's error", err)
	}
}

func testReopen(t *testing.T, sn snapshotter.Snapshotter, root string, newSn NewFunc) {
	ctx := context.Background()
	commitLayer(t, sn, layerKey("r1"), "", func(d string) { writeFile(t, d, "f", "1") })
	mounts, err := sn.Prepare(ctx, "active", layerKey("r1"), snapshotter.WithLabels(map[string]string{"l": "v"}))
	if err != nil {
		t.Fatal(err)
	}
	d, unmount := mountT(t, mounts)
	writeFile(t, d, "g", "2")
	unmount()
	before, err := sn.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sn.Close(); err != nil {
		t.Fatal(err)
	}

	sn2 := newSn(t, root)
	t.Cleanup(func() { _ = sn2.Close() })
	after, err := sn2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("list before close:\n%v\nafter reopen:\n%v", before, after)
	}
	mounts, err = sn2.Mounts(ctx, "active")
	if err != nil {
		t.Fatal(err)
	}
	d, unmount = mountT(t, mounts)
	checkFile(t, d, "f", "1")
	checkFile(t, d, "g", "2")
	unmount()
	if err := sn2.Commit(ctx, layerKey("r2"), "active"); err != nil {
		t.Fatal(err)
	}
	// New IDs must not collide with the ones allocated before reopening.
	commitLayer(t, sn2, layerKey("r3"), layerKey("r2"), func(d string) {
		checkFile(t, d, "g", "2")
	})
}

func testCleanup(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	commitLayer(t, sn, "live", "", func(d string) { writeFile(t, d, "f", "live") })
	if _, err := sn.Prepare(ctx, "active", "live"); err != nil {
		t.Fatal(err)
	}
	snaps := filepath.Join(root, "snapshots")
	before, err := os.ReadDir(snaps)
	if err != nil {
		t.Fatal(err)
	}
	// What a crash can leave: a directory being built, one being removed,
	// and a renamed directory whose metadata transaction never committed.
	orphans := []string{"new-123", "rm-7", "999999"}
	for _, o := range orphans {
		writeFile(t, filepath.Join(snaps, o), "fs/junk", "x")
		if err := os.Chmod(filepath.Join(snaps, o, "fs"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := sn.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadDir(snaps)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("after cleanup: %v, want %v", after, before)
	}
	for _, o := range orphans {
		checkAbsent(t, snaps, o)
	}
	mounts, err := sn.Mounts(ctx, "active")
	if err != nil {
		t.Fatal(err)
	}
	d, _ := mountT(t, mounts)
	checkFile(t, d, "f", "live")
}

func testInvalidKeys(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	commitLayer(t, sn, "ok", "", nil)
	if _, err := sn.Prepare(ctx, "active", ""); err != nil {
		t.Fatal(err)
	}
	bad := []string{"", strings.Repeat("k", snapshotter.MaxKeyLen+1), "a\x00b", "\xff\xfe"}
	for _, k := range bad {
		what := fmt.Sprintf("key %.20q", k)
		_, err := sn.Prepare(ctx, k, "")
		wantErr(t, err, errdefs.ErrInvalidArgument, "prepare "+what)
		_, err = sn.View(ctx, k, "ok")
		wantErr(t, err, errdefs.ErrInvalidArgument, "view "+what)
		if k != "" { // an empty parent means "no parent"
			_, err = sn.Prepare(ctx, "fine", k)
			wantErr(t, err, errdefs.ErrInvalidArgument, "prepare on parent "+what)
		}
		wantErr(t, sn.Commit(ctx, k, "active"), errdefs.ErrInvalidArgument, "commit as "+what)
		wantErr(t, sn.Remove(ctx, k), errdefs.ErrInvalidArgument, "remove "+what)
		_, err = sn.Stat(ctx, k)
		wantErr(t, err, errdefs.ErrInvalidArgument, "stat "+what)
		_, err = sn.Mounts(ctx, k)
		wantErr(t, err, errdefs.ErrInvalidArgument, "mounts "+what)
		_, err = sn.Usage(ctx, k)
		wantErr(t, err, errdefs.ErrInvalidArgument, "usage "+what)
	}
	if _, err := sn.Prepare(ctx, strings.Repeat("k", snapshotter.MaxKeyLen), ""); err != nil {
		t.Errorf("key of MaxKeyLen refused: %v", err)
	}
}

func testOddKeys(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	odd := []string{"../../../etc", "/abs/path", "a/b", ".", "..", "sp ace", "ünï", layerKey("x")}
	for _, k := range odd {
		if _, err := sn.Prepare(ctx, k, ""); err != nil {
			t.Errorf("prepare %q: %v", k, err)
		}
	}
	entries, err := os.ReadDir(filepath.Join(root, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := strconv.ParseUint(e.Name(), 10, 64); err != nil {
			t.Errorf("snapshot directory %q is not a numeric ID", e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(root, "..", "..", "..", "etc", "fs")); err == nil {
		t.Errorf("a key became a path")
	}
	for _, k := range odd {
		if err := sn.Remove(ctx, k); err != nil {
			t.Errorf("remove %q: %v", k, err)
		}
	}
}

func testConcurrent(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	commitLayer(t, sn, "parent", "", func(d string) {
		for i := 0; i < 20; i++ {
			writeFile(t, d, "f"+strconv.Itoa(i), "x")
		}
	})
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := "k" + strconv.Itoa(i)
			if _, err := sn.Prepare(ctx, k, "parent"); err != nil {
				errs <- err
				return
			}
			if err := sn.Commit(ctx, "c"+strconv.Itoa(i), k); err != nil {
				errs <- err
			}
		}()
	}
	// The same key from many goroutines: exactly one wins.
	var won sync.WaitGroup
	wins := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		won.Add(1)
		go func() {
			defer won.Done()
			_, err := sn.Prepare(ctx, "same", "parent")
			switch {
			case err == nil:
				wins <- struct{}{}
			case !errors.Is(err, errdefs.ErrAlreadyExists):
				errs <- err
			}
		}()
	}
	wg.Wait()
	won.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(wins) != 1 {
		t.Errorf("%d concurrent prepares of one key succeeded, want 1", len(wins))
	}
	infos, err := sn.List(ctx)
	if err != nil || len(infos) != n+2 {
		t.Errorf("list: %d snapshots, err %v; want %d", len(infos), err, n+2)
	}
	if err := sn.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "snapshots")); len(entries) != n+2 {
		t.Errorf("%d snapshot directories, want %d", len(entries), n+2)
	}
}

func testWritableDir(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	commitLayer(t, sn, "base", "", func(d string) { writeFile(t, d, "lower", "l") })
	if _, err := sn.Prepare(ctx, "a", "base"); err != nil {
		t.Fatal(err)
	}
	dir, err := snapshotter.WritableDir(ctx, sn, "a")
	if err != nil {
		t.Fatal(err)
	}
	mounts, err := sn.Mounts(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if fromMounts, err := snapshotter.WritableDirOf(mounts); err != nil || fromMounts != dir {
		t.Errorf("WritableDirOf(mounts) = %q, %v; WritableDir = %q", fromMounts, err, dir)
	}
	// What an applier writes into the directory shows in the mount.
	writeFile(t, dir, "applied", "a")
	d, _ := mountT(t, mounts)
	checkFile(t, d, "applied", "a")
	checkFile(t, d, "lower", "l")

	if _, err := sn.View(ctx, "v", "base"); err != nil {
		t.Fatal(err)
	}
	_, err = snapshotter.WritableDir(ctx, sn, "v")
	wantErr(t, err, errdefs.ErrFailedPrecondition, "writable dir of a view")
	_, err = snapshotter.WritableDir(ctx, sn, "base")
	wantErr(t, err, errdefs.ErrFailedPrecondition, "writable dir of a committed snapshot")
}

func testClosed(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	if err := sn.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sn.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if _, err := sn.Prepare(ctx, "a", ""); err == nil {
		t.Error("prepare after close succeeded")
	}
	if _, err := sn.List(ctx); err == nil {
		t.Error("list after close succeeded")
	}
}

// testOrphanNextID plants what a crash between a Prepare's rename and its
// metadata commit leaves: a directory named by the ID the next Prepare will
// get (IDs are decimal, allocated from 1). Prepare must succeed anyway and
// must not show the orphan's content.
func testOrphanNextID(t *testing.T, sn snapshotter.Snapshotter, root string, _ NewFunc) {
	ctx := context.Background()
	if _, err := sn.Prepare(ctx, "first", ""); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 4; i++ {
		writeFile(t, filepath.Join(root, "snapshots", strconv.Itoa(i)), "fs/junk", "x")
	}
	mounts, err := sn.Prepare(ctx, "second", "")
	if err != nil {
		t.Fatalf("prepare with an orphan in the way: %v", err)
	}
	d, _ := mountT(t, mounts)
	checkAbsent(t, d, "junk")
}
