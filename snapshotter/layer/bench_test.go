package layer

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
)

// benchLayer is a gzip'd layer shaped like a typical base image: ~2000
// small files in ~100 directories (≈ 20 MiB in all) and three large ones
// (30 MiB together), with half-compressible content so gzip does real work.
func benchLayer(b *testing.B) (blob []byte, tarSize int64) {
	rng := rand.New(rand.NewPCG(1, 2))
	content := func(n int) string {
		buf := make([]byte, n)
		for i := range buf {
			if i%2 == 0 {
				buf[i] = byte(rng.Uint32())
			} else {
				buf[i] = 'a' + byte(i%7)
			}
		}
		return string(buf)
	}
	var ents []ent
	for d := range 100 {
		ents = append(ents, dirEnt(fmt.Sprintf("usr/share/d%03d/", d), 0o755))
		for f := range 20 {
			ents = append(ents, file(fmt.Sprintf("usr/share/d%03d/f%02d", d, f), content(512+rng.IntN(19*1024)), 0o644))
		}
		ents = append(ents, symlink(fmt.Sprintf("usr/share/d%03d/link", d), "f00"))
	}
	for i, n := range []int{16 << 20, 10 << 20, 4 << 20} {
		ents = append(ents, file(fmt.Sprintf("usr/lib/big%d", i), content(n), 0o755))
	}
	raw := tarOf(b, ents...)
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
	zw.Write(raw)
	zw.Close()
	return gz.Bytes(), int64(len(raw))
}

// BenchmarkApply measures unpacking throughput in uncompressed MB/s, the
// figure to compare with `tar xzf` and with containerd's unpack. "tmpfs"
// (in /dev/shm) measures Berth's own cost; "disk" (in $TMPDIR) adds the
// machine's write-back, which on a small VM dominates: compare it with tar
// on the same disk, not across machines.
func BenchmarkApply(b *testing.B) {
	requireRoot(b)
	blob, size := benchLayer(b)
	b.Run("tmpfs", func(b *testing.B) {
		parent, err := os.MkdirTemp("/dev/shm", "berth-bench-")
		if err != nil {
			b.Skipf("no /dev/shm: %v", err)
		}
		b.Cleanup(func() { os.RemoveAll(parent) })
		benchApply(b, parent, blob, size)
	})
	b.Run("disk", func(b *testing.B) { benchApply(b, b.TempDir(), blob, size) })
}

func benchApply(b *testing.B, parent string, blob []byte, size int64) {
	b.SetBytes(size)
	b.ReportAllocs()
	// CPU time per op is reported too: on a shared machine wall time
	// swings with the neighbours' load, CPU time much less.
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	var paused time.Duration
	for i := 0; b.Loop(); i++ {
		dir := fmt.Sprintf("%s/%d", parent, i)
		if err := os.Mkdir(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		if _, err := Apply(context.Background(), dir, bytes.NewReader(blob)); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		var r0, r1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
		os.RemoveAll(dir)
		syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
		paused += cpu(&r1) - cpu(&r0)
		b.StartTimer()
	}
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	b.ReportMetric(float64(cpu(&after)-cpu(&before)-paused)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

func cpu(r *syscall.Rusage) time.Duration {
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}
