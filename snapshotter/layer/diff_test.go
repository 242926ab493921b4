package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

// TestDiffApplyRoundTrip: an upper dir written by Apply (overlay mode, so
// with whiteout devices and opaque dirs) diffs to a layer that applies to
// the same tree, byte-identically each time.
func TestDiffApplyRoundTrip(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	upper1, upper2 := t.TempDir(), t.TempDir()
	for _, l := range [][]byte{richLayer(t), deletingLayer(t)} {
		if _, err := Apply(ctx, upper1, bytes.NewReader(l), WithWhiteoutMode(WhiteoutOverlay)); err != nil {
			t.Fatal(err)
		}
	}
	// Diff's output is deterministic, and its Result describes it.
	var out1, out2 bytes.Buffer
	res, err := Diff(ctx, upper1, &out1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Diff(ctx, upper1, &out2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out1.Bytes(), out2.Bytes()) {
		t.Error("two diffs of one tree differ")
	}
	if res.DiffID != digest.FromBytes(out1.Bytes()) || res.Size != int64(out1.Len()) {
		t.Errorf("result %+v does not describe the output", res)
	}

	// The tar carries OCI whiteouts, not overlay's forms.
	tr := tar.NewReader(bytes.NewReader(out1.Bytes()))
	var entries []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for k := range h.PAXRecords {
			if strings.HasPrefix(k, paxXattrPrefix+overlayXattrPrefix) {
				t.Errorf("%s carries %s", h.Name, k)
			}
		}
		entries = append(entries, h.Name)
	}
	all := strings.Join(entries, " ")
	for _, want := range []string{"a/.wh.gone", "b/.wh..wh..opq", "c/.wh..wh..opq", ".wh.never-existed", "etc/hard"} {
		if !strings.Contains(all, want) {
			t.Errorf("diff lacks %s: %s", want, all)
		}
	}

	res2, err := Apply(ctx, upper2, bytes.NewReader(out1.Bytes()), WithWhiteoutMode(WhiteoutOverlay), WithExpectedDiffID(res.DiffID))
	if err != nil {
		t.Fatal(err)
	}
	if res2.DiffID != res.DiffID || res2.Size != res.Size {
		t.Errorf("apply result %+v, diff result %+v", res2, res)
	}
	if a, b := describe(t, upper1), describe(t, upper2); a != b {
		t.Errorf("round trip changed the tree:\n%s\nwant\n%s", b, a)
	}
}

// TestDiffOfOverlayMount makes changes through a real overlay mount, as a
// container would, and checks that the diff of its upper dir, applied in
// delete mode to a copy of the lower layer, gives the merged view.
func TestDiffOfOverlayMount(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	base := t.TempDir()
	lower, upper, work, merged, replay := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged"), filepath.Join(base, "replay")
	for _, d := range []string{lower, upper, work, merged, replay} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{lower, replay} {
		if _, err := Apply(ctx, d, bytes.NewReader(baseLayer(t))); err != nil {
			t.Fatal(err)
		}
	}
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Skipf("overlay mount: %v", err)
	}
	mounted := true
	unmount := func() {
		if mounted {
			if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount: %v", err)
			}
			mounted = false
		}
	}
	t.Cleanup(unmount)

	m := func(p string) string { return filepath.Join(merged, p) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Remove(m("a/gone")))
	must(os.RemoveAll(m("b")))
	must(os.Mkdir(m("b"), 0o700)) // over a deleted lower dir: overlay makes it opaque
	must(os.WriteFile(m("b/fresh"), []byte("fresh"), 0o644))
	must(os.WriteFile(m("new"), []byte("new"), 0o640))
	must(os.Link(m("new"), m("a/new-link")))
	must(os.Symlink("../new", m("c/link")))
	must(os.Chmod(m("c/old"), 0o600)) // copy-up of metadata
	must(unix.Mkfifo(m("c/fifo"), 0o600))
	must(unix.Lsetxattr(m("a/keep"), "user.note", []byte("x"), 0))
	must(os.Chtimes(m("a/keep"), t0, t0.Add(time.Hour)))
	want := describe(t, merged)
	unmount()

	var layer bytes.Buffer
	res, err := Diff(ctx, upper, &layer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(ctx, replay, bytes.NewReader(layer.Bytes()), WithExpectedDiffID(res.DiffID)); err != nil {
		t.Fatal(err)
	}
	t.Logf("merged view:\n%s", want)
	if got := describe(t, replay); got != want {
		t.Errorf("replayed tree differs from the merged view:\n%s\nwant\n%s", got, want)
	}
}

func TestDiffSourceDateEpoch(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	var a, b bytes.Buffer
	epoch := time.Unix(1000, 0)
	if _, err := Diff(context.Background(), dir, &a, WithSourceDateEpoch(epoch)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(dir, "f"), time.Now(), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := Diff(context.Background(), dir, &b, WithSourceDateEpoch(epoch)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("clamped diffs differ after a touch")
	}
}

func TestDiffRefusesRedirect(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "moved"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(dir, "moved"), "trusted.overlay.redirect", []byte("/orig"), 0); err != nil {
		t.Fatal(err)
	}
	_, err := Diff(context.Background(), dir, io.Discard)
	if !errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), "moved") {
		t.Fatalf("got %v", err)
	}
}

// TestDiffDirs changes a full copy of a tree, as a container on the native
// snapshotter would, and checks that the two-tree diff applied in delete
// mode to another copy of the original gives the changed tree.
func TestDiffDirs(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	base := t.TempDir()
	orig, changed, replay := filepath.Join(base, "orig"), filepath.Join(base, "changed"), filepath.Join(base, "replay")
	for _, d := range []string{orig, changed, replay} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := Apply(ctx, d, bytes.NewReader(baseLayer(t))); err != nil {
			t.Fatal(err)
		}
	}

	// No change, no entries.
	var empty bytes.Buffer
	if _, err := DiffDirs(ctx, orig, changed, &empty); err != nil {
		t.Fatal(err)
	}
	if n := countEntries(t, empty.Bytes()); n != 0 {
		t.Errorf("diff of identical trees has %d entries", n)
	}

	c := func(p string) string { return filepath.Join(changed, p) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Remove(c("a/gone")))
	must(os.RemoveAll(c("b/sub")))
	must(os.WriteFile(c("b/fresh"), []byte("fresh"), 0o644))
	must(os.RemoveAll(c("a/gonedir")))
	must(os.WriteFile(c("a/gonedir"), []byte("dir became a file"), 0o600))
	must(os.Remove(c("c/old")))
	must(os.Mkdir(c("c/old"), 0o700)) // file became a dir
	must(os.WriteFile(c("c/old/inside"), []byte("i"), 0o644))
	must(os.WriteFile(c("new"), []byte("new"), 0o640))
	must(os.Link(c("new"), c("new-link")))
	must(os.Symlink("a/keep", c("link")))
	must(unix.Mkfifo(c("fifo"), 0o600))
	must(os.Chmod(c("b/old1"), 0o600))
	must(unix.Lsetxattr(c("b/old2"), "user.note", []byte("x"), 0))
	// Same size, same metadata, mtime with no sub-second part: only the
	// content tells the change.
	sec := time.Unix(1600000000, 0)
	must(os.Chtimes(c("a/keep"), sec, sec))
	must(os.Chtimes(filepath.Join(replay, "a/keep"), sec, sec))
	must(os.Chtimes(filepath.Join(orig, "a/keep"), sec, sec))
	must(os.WriteFile(c("a/keep"), []byte("K"), 0o644))
	must(os.Chtimes(c("a/keep"), sec, sec))
	want := describe(t, changed)

	var layer bytes.Buffer
	res, err := DiffDirs(ctx, orig, changed, &layer)
	if err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if _, err := DiffDirs(ctx, orig, changed, &again); err != nil || !bytes.Equal(again.Bytes(), layer.Bytes()) {
		t.Errorf("DiffDirs not deterministic (%v)", err)
	}
	if _, err := Apply(ctx, replay, bytes.NewReader(layer.Bytes()), WithExpectedDiffID(res.DiffID)); err != nil {
		t.Fatal(err)
	}
	if got := describe(t, replay); got != want {
		t.Errorf("replayed tree differs from the changed one:\n%s\nwant\n%s", got, want)
	}
	// Exactly the changes, in order, parents first.
	if got := strings.Join(entryNames(t, layer.Bytes()), " "); got != wantEntries {
		t.Errorf("entries:\n%s\nwant\n%s", got, wantEntries)
	}
}

const wantEntries = "a/ a/.wh.gone a/gonedir a/keep b/ b/fresh b/old1 b/old2 b/.wh.sub c/ c/old/ c/old/inside fifo link new new-link"

func entryNames(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name)
	}
}

func countEntries(t *testing.T, b []byte) int {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	n := 0
	for {
		_, err := tr.Next()
		if err == io.EOF {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
}
