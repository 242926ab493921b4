package snapshotter_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"

	"github.com/berth-dev/berth/snapshotter"
	"github.com/berth-dev/berth/snapshotter/snaptest"
)

func newNative(tb testing.TB, root string) snapshotter.Snapshotter {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("native snapshotter tests mount and chown: need root")
	}
	sn, err := snapshotter.NewNative(root, snapshotter.WithLogger(testLogger(tb)))
	if err != nil {
		tb.Fatal(err)
	}
	return sn
}

func TestNative(t *testing.T) {
	snaptest.Run(t, newNative)
}

// overlayRoot mounts an overlay on root (once; a reopen finds it mounted),
// recreating the host Native exists for: a root where overlay cannot take
// an upper dir, as when berthd runs inside a container.
func overlayRoot(tb testing.TB, root string) {
	tb.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		tb.Fatal(err)
	}
	if st.Type == unix.OVERLAYFS_SUPER_MAGIC {
		return
	}
	base := tb.TempDir()
	for _, d := range []string{"lower", "upper", "work"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o700); err != nil {
			tb.Fatal(err)
		}
	}
	m := snapshotter.Mount{Type: "overlay", Source: "overlay", Options: []string{
		"lowerdir=" + filepath.Join(base, "lower"),
		"upperdir=" + filepath.Join(base, "upper"),
		"workdir=" + filepath.Join(base, "work"),
	}}
	if err := m.Mount(root); err != nil {
		tb.Skipf("cannot mount an overlay to test on: %v", err)
	}
	tb.Cleanup(func() { _ = snapshotter.Unmount(root) })
}

// TestNativeOnOverlay runs the suite where Native is really needed, and
// checks that Supported and Open see that overlay cannot be used there.
func TestNativeOnOverlay(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	root := t.TempDir()
	overlayRoot(t, root)
	if err := snapshotter.Supported(filepath.Join(root, "check")); !errors.Is(err, errdefs.ErrNotImplemented) {
		t.Skipf("overlay works on overlay here (%v): nothing to fall back from", err)
	}
	sn, err := snapshotter.Open(root, snapshotter.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sn.(*snapshotter.Native); !ok {
		t.Errorf("Open on overlay = %T, want *Native", sn)
	}
	sn.Close()
	snaptest.Run(t, func(tb testing.TB, root string) snapshotter.Snapshotter {
		overlayRoot(tb, root)
		return newNative(tb, root)
	})
}

func BenchmarkNativePrepareCommit(b *testing.B) {
	snaptest.BenchmarkPrepareCommit(b, newNative)
}

// BenchmarkNativePrepareOn1000Files is the cost of the copy Native makes for
// every Active snapshot.
func BenchmarkNativePrepareOn1000Files(b *testing.B) {
	snaptest.BenchmarkPrepareOnLargeParent(b, newNative, 1000)
}

// testLogger sends the snapshotter's logs to the test's output, so they show
// with the test that caused them and only when it fails or runs with -v.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}
