package images

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
	"github.com/berth-dev/berth/snapshotter"
)

// layerOf is an uncompressed layer of the given headers; regular files
// hold their name.
func layerOf(t *testing.T, hdrs ...tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range hdrs {
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(h.Name))
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(h.Name))
		}
	}
	tw.Close()
	return b.Bytes()
}

// TestLayersUnpackedAheadOfTheirParent: when the base layer arrives last,
// the layers above it are unpacked first, side by side, and completed
// once it is there; the image then shows what one-after-the-other gives:
// directories a layer leaves implicit copy the lower ones, a path through
// a lower layer's symlink lands behind the symlink, whiteouts hide.
func TestLayersUnpackedAheadOfTheirParent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("overlay needs root")
	}
	s, ctx := newTestServiceOn(t, true)
	t0 := time.Date(2021, 5, 6, 7, 8, 9, 0, time.UTC)
	raw := [][]byte{
		layerOf(t,
			tar.Header{Name: "usr/", Typeflag: tar.TypeDir, Mode: 0o755},
			tar.Header{Name: "usr/lib/", Typeflag: tar.TypeDir, Mode: 0o755},
			tar.Header{Name: "lib", Typeflag: tar.TypeSymlink, Linkname: "usr/lib"},
			tar.Header{Name: "opt/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 7, Gid: 8, ModTime: t0},
			tar.Header{Name: "opt/sub/", Typeflag: tar.TypeDir, Mode: 0o711, ModTime: t0},
			tar.Header{Name: "gone", Typeflag: tar.TypeReg, Mode: 0o644},
		),
		layerOf(t, tar.Header{Name: "opt/sub/x", Typeflag: tar.TypeReg, Mode: 0o644}),
		layerOf(t, tar.Header{Name: "lib/libx.so", Typeflag: tar.TypeReg, Mode: 0o755}),
		layerOf(t, tar.Header{Name: ".wh.gone", Typeflag: tar.TypeReg}, tar.Header{Name: "opt/sub/y", Typeflag: tar.TypeReg, Mode: 0o600}),
	}
	layers, diffIDs, rc := layerRegistry(t, ctx, raw, func(i int, write func()) {
		if i == 0 {
			time.Sleep(firstLayerHeadStart + 300*time.Millisecond) // the others first
		}
		write()
	})
	l := s.newLease()
	defer s.release(l)
	var order []string
	progress := func(p *berthv1.Progress) {
		if p.Status == berthv1.ProgressStatus_PROGRESS_STATUS_PULL_COMPLETE {
			order = append(order, p.Id)
		}
	}
	if _, err := s.fetchAndUnpack(ctx, l, rc, layers, diffIDs, progress); err != nil {
		t.Fatal(err)
	}
	if len(order) != 4 {
		t.Fatalf("pull complete for %v, want 4 layers", order)
	}
	chain := chainIDs(diffIDs)
	for i := 1; i < len(chain); i++ {
		info, err := s.opts.Snapshots.Stat(ctx, chain[i])
		if err != nil || info.Parent != chain[i-1] {
			t.Fatalf("layer %d: %+v %v, want committed on layer %d", i, info, err, i-1)
		}
	}
	mounts, err := s.opts.Snapshots.View(ctx, "check", chain[len(chain)-1])
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := snapshotter.MountAll(mounts, root); err != nil {
		t.Fatal(err)
	}
	defer snapshotter.Unmount(root)

	if target, err := os.Readlink(filepath.Join(root, "lib")); err != nil || target != "usr/lib" {
		t.Errorf("lib: %q %v, want still the symlink to usr/lib", target, err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "usr/lib/libx.so")); err != nil || string(b) != "lib/libx.so" {
		t.Errorf("usr/lib/libx.so: %q %v, want the file written through the symlink", b, err)
	}
	for _, c := range []struct {
		rel       string
		mode, uid uint32
	}{{"opt", 0o750, 7}, {"opt/sub", 0o711, 0}} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, c.rel), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != c.mode || st.Uid != c.uid || st.Mtim.Nano() != t0.UnixNano() {
			t.Errorf("%s: mode %o uid %d mtime %v, want the base layer's %o %d %v", c.rel, st.Mode&0o7777, st.Uid, time.Unix(0, st.Mtim.Nano()).UTC(), c.mode, c.uid, t0)
		}
	}
	for _, f := range []string{"opt/sub/x", "opt/sub/y"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "gone")); !os.IsNotExist(err) {
		t.Errorf("gone: %v, want whited out", err)
	}
}
