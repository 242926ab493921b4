package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berth-dev/berth/integration/fixture"
)

type harness struct {
	log      *slog.Logger
	dir      string
	quick    bool
	registry *fixture.Registry
	systems  []system
	busybox  string // reference of the busybox image on the registry
	big      string // reference of the large pull image
}

func newHarness(log *slog.Logger, bin string, names []string, quick bool) (*harness, error) {
	dir, err := os.MkdirTemp("", "berth-bench-")
	if err != nil {
		return nil, err
	}
	h := &harness{log: log, dir: dir, quick: quick}
	if err := os.MkdirAll(filepath.Join(dir, "registry"), 0o755); err != nil {
		return nil, err
	}
	if h.registry, err = fixture.RunRegistry(filepath.Join(dir, "registry")); err != nil {
		return nil, err
	}
	log.Info("registry", "addr", h.registry.Addr)
	bb, err := fixture.BusyboxImage()
	if err != nil {
		return nil, err
	}
	h.busybox = h.registry.Ref("library/busybox:latest")
	if _, err := fixture.PushImage(h.busybox, bb, "", ""); err != nil {
		return nil, err
	}
	for _, n := range names {
		sub := filepath.Join(dir, n)
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return nil, err
		}
		switch n {
		case "berth":
			h.systems = append(h.systems, newBerth(bin, sub))
		case "containerd":
			h.systems = append(h.systems, newContainerd(sub))
		default:
			return nil, fmt.Errorf("unknown system %q", n)
		}
	}
	for _, s := range h.systems {
		if err := s.start(); err != nil {
			return h, fmt.Errorf("%s: %w", s.name(), err)
		}
		if err := s.pull(h.busybox); err != nil {
			return h, fmt.Errorf("%s: %w", s.name(), err)
		}
	}
	return h, nil
}

func (h *harness) close() {
	for _, s := range h.systems {
		if c, ok := s.(*containerd); ok && c.agent != nil {
			// ctr tasks outlive containerd: kill what is left.
			if out, err := c.ctr(30*time.Second, "task", "ls", "-q"); err == nil {
				for _, id := range splitLines(out) {
					c.remove(id)
				}
			}
		}
		if b, ok := s.(*berth); ok && b.agent != nil {
			if out, err := b.ctl(30*time.Second, "ps", "-aq"); err == nil {
				for _, id := range splitLines(out) {
					b.remove(id)
				}
			}
		}
		func() {
			defer func() { recover() }()
			s.stop()
		}()
	}
	if h.registry != nil {
		h.registry.Stop()
	}
	os.RemoveAll(h.dir)
}

func splitLines(s string) []string {
	var out []string
	for _, l := range bytes.Fields([]byte(s)) {
		out = append(out, string(l))
	}
	return out
}

// byName returns the two systems' samples in Result order.
func (h *harness) pair(samples map[string][]float64) ([]float64, []float64) {
	return samples["berth"], samples["containerd"]
}

func (h *harness) run(only map[string]bool) ([]Result, error) {
	type workload struct {
		name string
		fn   func() ([]Result, error)
	}
	all := []workload{
		{"start", h.startLatency},
		{"network", h.networkCost},
		{"throughput", h.throughput},
		{"density", h.density},
		{"exec", h.execLatency},
		{"pull", h.coldPull},
		{"restart", h.restart},
	}
	var results []Result
	for _, w := range all {
		if only != nil && !only[w.name] {
			continue
		}
		h.log.Info("workload", "name", w.name)
		r, err := w.fn()
		if err != nil {
			return results, fmt.Errorf("%s: %w", w.name, err)
		}
		results = append(results, r...)
	}
	return results, nil
}

func (h *harness) n(full, quick int) int {
	if h.quick {
		return quick
	}
	return full
}

// startLatency: `run --rm busybox /bin/true`, image present. Berth runs
// it with --network none, what `ctr run` does without --cni (a new network
// namespace with only lo): like for like. What Berth's default bridge adds
// is the "bridge networking" workload's figure.
func (h *harness) startLatency() ([]Result, error) {
	samples := map[string][]float64{}
	for i := 0; i < h.n(30, 5); i++ {
		for _, s := range h.systems {
			t0 := time.Now()
			var err error
			if b, ok := s.(*berth); ok {
				err = b.runNetwork(fmt.Sprintf("start-%d", i), "none", h.busybox, "/bin/true")
			} else {
				err = s.run(fmt.Sprintf("start-%d", i), true, false, h.busybox, "/bin/true")
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name(), err)
			}
			samples[s.name()] = append(samples[s.name()], ms(time.Since(t0)))
		}
	}
	b, c := h.pair(samples)
	return []Result{newResult("start latency", "run --rm busybox /bin/true (no network, as ctr run)", "ms", true, "berth ≥ 6× faster (ratio ≤ 0.167)", b, c)}, nil
}

// networkCost: what bridge networking adds to a container's start, Berth
// only (ctr has no bridge by default): `run --rm busybox /bin/true` on the
// default bridge and with --network none, alternating. Each sample is
// timed twice: until run returns (the start a user waits for) and until
// berthd has also removed the container and released its network (--rm
// removes it after the exit; CNI DEL and the next warm attachment follow
// in the background). The next sample starts only once all that is done,
// so one sample's teardown never lands in another's time.
func (h *harness) networkCost() ([]Result, error) {
	var b *berth
	for _, s := range h.systems {
		if x, ok := s.(*berth); ok {
			b = x
		}
	}
	if b == nil {
		h.log.Info("network workload skipped: it measures berth only")
		return nil, nil
	}
	// Earlier workloads' --rm removals may still be running.
	if err := b.waitRemoved(time.Minute); err != nil {
		return nil, err
	}
	modes := []string{"bridge", "none"}
	start := map[string][]float64{}
	cycle := map[string][]float64{}
	for i := 0; i < h.n(30, 5); i++ {
		for _, mode := range modes {
			t0 := time.Now()
			if err := b.runNetwork(fmt.Sprintf("net-%s-%d", mode, i), mode, h.busybox, "/bin/true"); err != nil {
				return nil, fmt.Errorf("berth --network %s: %w", mode, err)
			}
			start[mode] = append(start[mode], ms(time.Since(t0)))
			if err := b.waitRemoved(time.Minute); err != nil {
				return nil, fmt.Errorf("berth --network %s: %w", mode, err)
			}
			cycle[mode] = append(cycle[mode], ms(time.Since(t0)))
		}
	}
	br, none := summarize(start["bridge"]), summarize(start["none"])
	cbr, cnone := summarize(cycle["bridge"]), summarize(cycle["none"])
	return []Result{
		berthOnly("bridge networking", "run --rm busybox /bin/true, default bridge", "ms", "", start["bridge"]),
		berthOnly("bridge networking", "run --rm busybox /bin/true, --network none", "ms", "", start["none"]),
		difference("bridge networking", "bridge − none, per start (medians)", "ms", "≤ 50 ms", br, none),
		difference("bridge networking", "bridge − none, per run --rm until removed (medians)", "ms", "", cbr, cnone),
	}, nil
}

// throughput: 100 × run --rm with 8 concurrent clients, twice each.
func (h *harness) throughput() ([]Result, error) {
	samples := map[string][]float64{}
	total := h.n(100, 16)
	for round := 0; round < 2; round++ {
		for _, s := range h.systems {
			var next atomic.Int64
			var firstErr error
			var mu sync.Mutex
			var wg sync.WaitGroup
			t0 := time.Now()
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(total) {
							return
						}
						if err := s.run(fmt.Sprintf("tp-%d-%d", round, i), true, false, h.busybox, "/bin/true"); err != nil {
							mu.Lock()
							if firstErr == nil {
								firstErr = fmt.Errorf("%s: %w", s.name(), err)
							}
							mu.Unlock()
							return
						}
					}
				}()
			}
			wg.Wait()
			if firstErr != nil {
				return nil, firstErr
			}
			// berthctl's run --rm returns once the container's record is
			// gone; its shim, rootfs and logs go right after, in the
			// background. The work counted is all of it.
			if b, ok := s.(*berth); ok {
				if err := b.waitRemoved(time.Minute); err != nil {
					return nil, err
				}
			}
			samples[s.name()] = append(samples[s.name()], float64(total)/time.Since(t0).Seconds())
		}
	}
	b, c := h.pair(samples)
	return []Result{newResult("throughput", "100 × run --rm, 8 clients", "ctr/s", false, "berth ≥ 10× higher (ratio ≥ 10)", b, c)}, nil
}

// density: 20 containers running sleep; shim PSS and RSS, agent RSS.
func (h *harness) density() ([]Result, error) {
	pss, rss, agent := map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
	n := h.n(20, 4)
	for _, s := range h.systems {
		var ids []string
		for i := 0; i < n; i++ {
			id := fmt.Sprintf("dense-%d", i)
			if err := s.run(id, false, true, h.busybox, "sleep", "3600"); err != nil {
				return nil, fmt.Errorf("%s: %w", s.name(), err)
			}
			ids = append(ids, id)
		}
		time.Sleep(2 * time.Second) // let the shims settle after start-up
		pids, err := s.shimPids()
		if err != nil {
			return nil, err
		}
		if len(pids) != n {
			return nil, fmt.Errorf("%s: found %d shims for %d containers", s.name(), len(pids), n)
		}
		for _, pid := range pids {
			p, r, err := memory(pid)
			if err != nil {
				return nil, err
			}
			pss[s.name()] = append(pss[s.name()], p/1024)
			rss[s.name()] = append(rss[s.name()], r/1024)
		}
		_, ar, err := memory(s.agentPid())
		if err != nil {
			return nil, err
		}
		agent[s.name()] = append(agent[s.name()], ar/1024)
		for _, id := range ids {
			if err := s.remove(id); err != nil {
				return nil, fmt.Errorf("%s: %w", s.name(), err)
			}
		}
	}
	pb, pc := h.pair(pss)
	rb, rc := h.pair(rss)
	ab, ac := h.pair(agent)
	label := fmt.Sprintf("%d containers running sleep", n)
	return []Result{
		newResult("shim memory", "PSS per shim, "+label, "MiB", true, "below containerd's; aim 2 MiB", pb, pc),
		newResult("shim memory", "RSS per shim, "+label, "MiB", true, "", rb, rc),
		newResult("agent memory", "RSS of the agent, "+label, "MiB", true, "", ab, ac),
	}, nil
}

// execLatency: exec of /bin/true into a running container.
func (h *harness) execLatency() ([]Result, error) {
	for _, s := range h.systems {
		if err := s.run("exec-target", false, true, h.busybox, "sleep", "3600"); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name(), err)
		}
	}
	samples := map[string][]float64{}
	for i := 0; i < h.n(30, 5); i++ {
		for _, s := range h.systems {
			t0 := time.Now()
			if err := s.exec("exec-target", fmt.Sprintf("e%d", i), "/bin/true"); err != nil {
				return nil, fmt.Errorf("%s: %w", s.name(), err)
			}
			samples[s.name()] = append(samples[s.name()], ms(time.Since(t0)))
		}
	}
	for _, s := range h.systems {
		s.remove("exec-target")
	}
	b, c := h.pair(samples)
	return []Result{newResult("exec latency", "exec /bin/true", "ms", true, "berth ≥ 5× faster (ratio ≤ 0.2)", b, c)}, nil
}

// coldPull: pull + unpack of a generated image of ≥ 300 MB compressed in
// 6 layers, nothing of it present beforehand.
func (h *harness) coldPull() ([]Result, error) {
	if h.big == "" {
		spec := fixture.LargeSpec{} // 6 layers, about 390 MB gzip
		if h.quick {
			spec = fixture.LargeSpec{Layers: 5, SmallFiles: 100, LargeFiles: 1, LargeSize: 1 << 20}
		}
		h.log.Info("generating the pull image", "quick", h.quick)
		img, size, err := fixture.GenerateLargeImage(spec)
		if err != nil {
			return nil, err
		}
		h.big = h.registry.Ref("bench/big:latest")
		if _, err := fixture.PushImage(h.big, img, "", ""); err != nil {
			return nil, err
		}
		h.log.Info("pull image pushed", "compressed_bytes", size)
	}
	// Five rounds, alternating the systems: a pull's time varies by
	// ±10% from one to the next here (the disk, the page cache, ext4's
	// scan of inodes freed by the previous round's removal), and the
	// median of two samples is their mean.
	samples := map[string][]float64{}
	for round := 0; round < h.n(5, 2); round++ {
		for _, s := range h.systems {
			if round > 0 {
				if err := s.removeImage(h.big); err != nil {
					return nil, fmt.Errorf("%s: %w", s.name(), err)
				}
			}
			// Untimed: write back what earlier work left dirty (the
			// image's push to the registry, the other system's pull and
			// removal). Berth ends a pull with a flush of the filesystem
			// (syncfs), so that its layers are durable before the image
			// record; left in place, the previous sample's dirty pages,
			// hundreds of MB that ctr does not flush, would be written
			// in Berth's time.
			syscall.Sync()
			t0 := time.Now()
			if err := s.pull(h.big); err != nil {
				return nil, fmt.Errorf("%s: %w", s.name(), err)
			}
			samples[s.name()] = append(samples[s.name()], time.Since(t0).Seconds())
		}
	}
	for _, s := range h.systems {
		s.removeImage(h.big)
	}
	b, c := h.pair(samples)
	return []Result{newResult("cold pull", "pull + unpack, 6 layers, ≥ 300 MB gzip", "s", true, "berth ≥ 3× faster (ratio ≤ 0.333)", b, c)}, nil
}

// restart: the agent with 50 running containers is killed (-9) and
// started again; the time until it answers and lists all 50 running.
func (h *harness) restart() ([]Result, error) {
	samples := map[string][]float64{}
	n := h.n(50, 5)
	for _, s := range h.systems {
		for i := 0; i < n; i++ {
			if err := s.run(fmt.Sprintf("restart-%d", i), false, true, h.busybox, "sleep", "3600"); err != nil {
				return nil, fmt.Errorf("%s: %w", s.name(), err)
			}
		}
		s.kill()
		t0 := time.Now()
		if err := s.start(); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name(), err)
		}
		err := waitFor(5*time.Minute, s.name()+" reconnect", func() bool {
			got, err := s.running()
			return err == nil && got == n
		})
		if err != nil {
			return nil, err
		}
		samples[s.name()] = append(samples[s.name()], time.Since(t0).Seconds())
		for i := 0; i < n; i++ {
			s.remove(fmt.Sprintf("restart-%d", i))
		}
	}
	b, c := h.pair(samples)
	return []Result{newResult("restart", fmt.Sprintf("agent kill -9 + start, %d running", n), "s", true, "berth: all reconnected < 1 s", b, c)}, nil
}
