package snapshotter_test

import (
	"log/slog"
	"os"
	"testing"

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
