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
	if res2 != res {
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
