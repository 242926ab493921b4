package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/integration/fixture"
)

// BenchmarkColdPull pulls a generated image of about 330 MB (gzip) in 6
// layers, with thousands of small files and a few large ones, from the
// loopback registry into an empty berthd: download, verify, unpack and
// record. Each iteration starts a fresh berthd on a fresh root, outside
// the timer.
//
//	make bench BENCH=ColdPull   (or: go test -run '^$' -bench ColdPull -benchtime 3x ./integration/)
func BenchmarkColdPull(b *testing.B) {
	reg := fixture.StartRegistry(b)
	img, size := fixture.LargeImage(b, fixture.LargeSpec{})
	reg.Push(b, reg.Ref("bench/large:latest"), img)
	ref := reg.Ref("bench/large:latest")
	b.SetBytes(size)
	for b.Loop() {
		b.StopTimer()
		stop := benchDaemon(b)
		b.StartTimer()
		out, err := exec.Command(filepath.Join(binDir, "berthctl"), "--address", stop.socket, "pull", "-q", ref).CombinedOutput()
		if err != nil {
			b.Fatalf("pull: %v\n%s", err, out)
		}
		b.StopTimer()
		stop.close()
		b.StartTimer()
	}
	b.ReportMetric(float64(size)/1e6, "MB-compressed")
}

type benchBerthd struct {
	socket string
	base   string
	cmd    *exec.Cmd
}

// benchDaemon starts berthd in a fresh temporary root for a benchmark.
func benchDaemon(b *testing.B) *benchBerthd {
	b.Helper()
	base, err := os.MkdirTemp("", "berth-bench-")
	if err != nil {
		b.Fatal(err)
	}
	d := &benchBerthd{base: base, socket: filepath.Join(base, "state", "berth.sock")}
	d.cmd = exec.Command(filepath.Join(binDir, "berthd"), "--root", filepath.Join(base, "root"),
		"--state", filepath.Join(base, "state"), "--address", d.socket, "--log-level", "warn")
	if err := d.cmd.Start(); err != nil {
		os.RemoveAll(base)
		b.Fatal(err)
	}
	b.Cleanup(d.close)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := exec.CommandContext(ctx, filepath.Join(binDir, "berthctl"), "--address", d.socket, "version").Run()
		cancel()
		if err == nil {
			return d
		}
		if time.Now().After(deadline) {
			b.Fatal("berthd did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *benchBerthd) close() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.cmd.Wait()
	d.cmd = nil
	os.RemoveAll(d.base)
}
