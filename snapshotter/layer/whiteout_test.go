package layer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

// baseLayer is what the whiteout tests delete from.
func baseLayer(t testing.TB) []byte {
	return tarOf(t,
		dirEnt("a/", 0o755), file("a/keep", "k", 0o644), file("a/gone", "g", 0o644),
		dirEnt("a/gonedir/", 0o755), file("a/gonedir/x", "x", 0o644),
		dirEnt("b/", 0o755), file("b/old1", "1", 0o644), file("b/old2", "2", 0o644),
		dirEnt("b/sub/", 0o755), file("b/sub/old", "o", 0o644),
		dirEnt("c/", 0o755), file("c/old", "o", 0o644),
	)
}

// deletingLayer whites out a/gone and a/gonedir, makes b opaque after
// writing b/new and b/sub/new (the marker may come anywhere in the
// directory), and makes c opaque before writing c/new.
func deletingLayer(t testing.TB) []byte {
	return tarOf(t,
		dirEnt("a/", 0o755), whiteoutEnt("a/.wh.gone"), whiteoutEnt("a/.wh.gonedir"),
		dirEnt("b/", 0o755), file("b/new", "n", 0o644), dirEnt("b/sub/", 0o755), file("b/sub/new", "n", 0o644),
		whiteoutEnt("b/.wh..wh..opq"),
		dirEnt("c/", 0o755), whiteoutEnt("c/.wh..wh..opq"), file("c/new", "n", 0o644),
		whiteoutEnt(".wh.never-existed"),
		whiteoutEnt("a/.wh..wh.plnk"), // AUFS bookkeeping: ignored
		file("d", "d", 0o644),
	)
}

// checkMergedView checks the tree a reader should see after both layers.
func checkMergedView(t *testing.T, root string) {
	t.Helper()
	want := map[string]string{
		"a": "keep",
		"b": "new,sub", "b/sub": "new",
		"c": "new",
		".": "a,b,c,d",
	}
	for d, w := range want {
		if got := strings.Join(names(t, filepath.Join(root, d)), ","); got != w {
			t.Errorf("%s lists %q, want %q", d, got, w)
		}
	}
}

func TestWhiteoutsDeleteMode(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	ctx := context.Background()
	if _, err := Apply(ctx, dir, bytes.NewReader(baseLayer(t))); err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(ctx, dir, bytes.NewReader(deletingLayer(t)), WithWhiteoutMode(WhiteoutDelete)); err != nil {
		t.Fatal(err)
	}
	checkMergedView(t, dir)
	if mustRead(t, filepath.Join(dir, "b/sub/new")) != "n" {
		t.Error("b/sub/new lost")
	}
}

func TestWhiteoutsOverlayMode(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	lower, upper, work, merged := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{lower, upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if _, err := Apply(ctx, lower, bytes.NewReader(baseLayer(t))); err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(ctx, upper, bytes.NewReader(deletingLayer(t)), WithWhiteoutMode(WhiteoutOverlay)); err != nil {
		t.Fatal(err)
	}

	// The upper dir holds overlayfs's own whiteout forms.
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(upper, "a/gone"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("a/gone in upper is not a 0:0 char device: %+v %v", st, err)
	}
	for _, d := range []string{"b", "c"} {
		if xs := strings.Join(xattrs(t, filepath.Join(upper, d)), ","); !strings.Contains(xs, "trusted.overlay.opaque=y") {
			t.Errorf("%s in upper not opaque: %q", d, xs)
		}
	}
	if !exists(filepath.Join(upper, "never-existed")) {
		t.Error("whiteout of a name absent from upper must still be recorded (it may be in a lower layer)")
	}

	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Skipf("overlay mount: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	checkMergedView(t, merged)
	if mustRead(t, filepath.Join(merged, "a/keep")) != "k" || mustRead(t, filepath.Join(merged, "b/sub/new")) != "n" {
		t.Error("merged contents wrong")
	}
}

// TestOverlayModeWithParents: directories a layer leaves implicit copy the
// lower ones they shadow, and a path through a lower symlink is refused
// rather than turned into a directory that would hide the symlink.
func TestOverlayModeWithParents(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	base := t.TempDir()
	lower, upper, work, merged := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{lower, upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opt := dirEnt("opt/", 0o750)
	opt.hdr.Uid, opt.hdr.Gid = 7, 8
	if _, err := Apply(ctx, lower, bytes.NewReader(tarOf(t,
		dirEnt("usr/", 0o755), dirEnt("usr/lib/", 0o755), symlink("lib", "usr/lib"),
		opt, dirEnt("opt/sub/", 0o711),
	))); err != nil {
		t.Fatal(err)
	}

	_, err := Apply(ctx, upper, bytes.NewReader(tarOf(t, file("opt/sub/x", "x", 0o644))),
		WithWhiteoutMode(WhiteoutOverlay), WithParents(lower))
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	for _, c := range []struct {
		rel       string
		mode, uid uint32
	}{{"opt", 0o750, 7}, {"opt/sub", 0o711, 0}} {
		if err := unix.Lstat(filepath.Join(upper, c.rel), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != c.mode || st.Uid != c.uid || st.Mtim.Nano() != t0.UnixNano() {
			t.Errorf("implicit %s: mode %o uid %d mtime %d, want the lower's %o %d %d", c.rel, st.Mode&0o7777, st.Uid, st.Mtim.Nano(), c.mode, c.uid, t0.UnixNano())
		}
	}

	upper2 := filepath.Join(base, "upper2")
	if err := os.Mkdir(upper2, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Apply(ctx, upper2, bytes.NewReader(tarOf(t, file("lib/libx.so", "x", 0o644))),
		WithWhiteoutMode(WhiteoutOverlay), WithParents(lower))
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("write through a lower symlink: %v, want ErrFailedPrecondition", err)
	}

	// The fallback the error asks for: apply through the mounted overlay.
	opts := "lowerdir=" + lower + ",upperdir=" + upper2 + ",workdir=" + work
	if err := os.RemoveAll(upper2); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(upper2, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Skipf("overlay mount: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	if _, err := Apply(ctx, merged, bytes.NewReader(tarOf(t, file("lib/libx.so", "x", 0o644)))); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(merged, "lib")); err != nil || l != "usr/lib" {
		t.Errorf("lib is no longer the symlink: %q %v", l, err)
	}
	if !exists(filepath.Join(upper2, "usr/lib/libx.so")) {
		t.Error("libx.so not in upper usr/lib")
	}
}

// TestDeferredParentsMatchWithParents: a layer applied before its lower
// layers exist, then completed with ResolveImplicit, ends up exactly as one
// applied with the lowers present, and a path through a lower symlink is
// refused at the resolve step the way WithParents refuses it at once.
func TestDeferredParentsMatchWithParents(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	base := t.TempDir()
	lower, now, later := filepath.Join(base, "lower"), filepath.Join(base, "now"), filepath.Join(base, "later")
	for _, d := range []string{lower, now, later} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opt := dirEnt("opt/", 0o750)
	opt.hdr.Uid, opt.hdr.Gid = 7, 8
	srv := dirEnt("srv/", 0o700)
	srv.hdr.Uid = 9
	if _, err := Apply(ctx, lower, bytes.NewReader(tarOf(t,
		dirEnt("usr/", 0o755), dirEnt("usr/lib/", 0o755), symlink("lib", "usr/lib"),
		opt, dirEnt("opt/sub/", 0o711), srv, dirEnt("srv/www/", 0o755), file("etc", "not a dir", 0o644),
	))); err != nil {
		t.Fatal(err)
	}
	// opt and opt/sub are implicit and copy the lower's; srv is implicit
	// first, then listed by the layer, whose metadata wins; etc shadows a
	// lower file; new/ has nothing below; tmp is made, then replaced.
	upperLayer := tarOf(t,
		file("opt/sub/x", "x", 0o644), file("srv/www/index", "i", 0o644), dirEnt("srv/", 0o755),
		file("etc/passwd", "root", 0o644), file("new/deep/f", "f", 0o600), file("tmp/a", "a", 0o600),
		whiteoutEnt("tmp"), file("tmp", "now a file", 0o600),
	)
	if _, err := Apply(ctx, now, bytes.NewReader(upperLayer), WithWhiteoutMode(WhiteoutOverlay), WithParents(lower)); err != nil {
		t.Fatal(err)
	}
	res, err := Apply(ctx, later, bytes.NewReader(upperLayer), WithWhiteoutMode(WhiteoutOverlay), WithDeferredParents())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"opt", "opt/sub", "srv/www", "etc", "new", "new/deep", "tmp"}
	if strings.Join(res.Implicit, " ") != strings.Join(want, " ") {
		t.Errorf("Implicit = %q, want %q", res.Implicit, want)
	}
	if err := ResolveImplicit(later, res.Implicit, []string{lower}); err != nil {
		t.Fatal(err)
	}
	if a, b := describe(t, now), describe(t, later); a != b {
		t.Errorf("deferred apply differs from the one with parents:\n--- with parents\n%s\n--- deferred\n%s", a, b)
	}

	through := filepath.Join(base, "through")
	if err := os.Mkdir(through, 0o755); err != nil {
		t.Fatal(err)
	}
	res, err = Apply(ctx, through, bytes.NewReader(tarOf(t, file("lib/libx.so", "x", 0o644))),
		WithWhiteoutMode(WhiteoutOverlay), WithDeferredParents())
	if err != nil {
		t.Fatal(err)
	}
	if err := ResolveImplicit(through, res.Implicit, []string{lower}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("write through a lower symlink: %v, want ErrFailedPrecondition", err)
	}
}
