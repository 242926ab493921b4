package snaptest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// BenchmarkPrepareCommit measures Prepare on a small committed parent
// followed by Commit, the metadata path of unpacking one layer (no mount, no
// content written).
func BenchmarkPrepareCommit(b *testing.B, newSn NewFunc) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	ctx := context.Background()
	sn := newSn(b, b.TempDir())
	b.Cleanup(func() { _ = sn.Close() })
	commitLayer(b, sn, "parent", "", func(d string) { writeFile(b, d, "f", "x") })
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := strconv.Itoa(i)
		if _, err := sn.Prepare(ctx, "a"+k, "parent"); err != nil {
			b.Fatal(err)
		}
		if err := sn.Commit(ctx, "c"+k, "a"+k); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPrepareOnLargeParent measures Prepare (then Remove) on a
// committed parent of files small files spread over 10 directories: the copy
// Native pays for every container, and Overlay does not.
func BenchmarkPrepareOnLargeParent(b *testing.B, newSn NewFunc, files int) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	ctx := context.Background()
	sn := newSn(b, b.TempDir())
	b.Cleanup(func() { _ = sn.Close() })
	commitLayer(b, sn, "parent", "", func(d string) {
		for i := 0; i < files; i++ {
			writeFile(b, d, filepath.Join("d"+strconv.Itoa(i%10), "f"+strconv.Itoa(i)), "small file content "+strconv.Itoa(i))
		}
	})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := "a" + strconv.Itoa(i)
		if _, err := sn.Prepare(ctx, k, "parent"); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := sn.Remove(ctx, k); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
