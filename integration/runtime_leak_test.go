package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// footprint is what a run/rm cycle must give back.
type footprint struct {
	goroutines, fds, mounts, cgroups, sockets, shims, warm, warmNet, bundles, logDirs, snapshots int
	// warmCgroups: groups made ahead by idle warm shims, by name.
	warmCgroups int
}

func (r *rt) footprint(debugSock string) footprint {
	r.t.Helper()
	var f footprint
	f.goroutines = goroutines(r.t, debugSock)
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", r.d.cmd.Process.Pid))
	f.fds = len(fds)
	for _, m := range mountsUnder(r.d.state) {
		if warmMount(m) {
			f.warmNet++ // the warm network attachment's namespace
		} else {
			f.mounts++
		}
	}
	warmCg := map[string]bool{}
	for _, dir := range cgroupDirs(r.cgParent) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			switch {
			case !e.IsDir():
			case strings.HasPrefix(e.Name(), ".warm-"):
				warmCg[e.Name()] = true
			default:
				f.cgroups++
			}
		}
	}
	f.warmCgroups = len(warmCg)
	socks, _ := os.ReadDir(filepath.Join(r.d.state, "s"))
	f.sockets = len(socks)
	f.shims = len(processesMentioning(r.d.state))
	f.warm = len(warmShims(r.d.state))
	bundles, _ := os.ReadDir(filepath.Join(r.d.state, "tasks", "default"))
	f.bundles = len(bundles)
	logs, _ := os.ReadDir(filepath.Join(r.d.root, "containers", "default"))
	f.logDirs = len(logs)
	// Snapshot directories of either driver (the image's layer stays).
	for _, driver := range []string{"overlay", "native"} {
		snaps, _ := os.ReadDir(filepath.Join(r.d.root, "snapshots", driver, "snapshots"))
		f.snapshots += len(snaps)
	}
	return f
}

// goroutines reads berthd's goroutine count from its pprof debug socket.
func goroutines(t testing.TB, sock string) int {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://berthd/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatalf("debug socket: %v", err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	// "goroutine profile: total N"
	n, err := strconv.Atoi(strings.TrimSpace(line[strings.LastIndexByte(line, ' ')+1:]))
	if err != nil {
		t.Fatalf("goroutine profile header %q", line)
	}
	return n
}

// TestRunRemoveCyclesLeakNothing runs 200 create/start/wait/delete cycles
// of /bin/true, four at a time, and compares berthd's goroutines and fds,
// and the mounts, cgroups, shim sockets, shim processes, bundles and log
// dirs, before and after.
func TestRunRemoveCyclesLeakNothing(t *testing.T) {
	debugSock := filepath.Join(t.TempDir(), "debug.sock")
	t.Setenv("BERTH_DEBUG_SOCKET", debugSock)
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cycle := func() error {
		c, err := r.cc.CreateContainer(ctx, &berthv1.CreateContainerRequest{Spec: &berthv1.ContainerSpec{Image: "busybox", Cmd: []string{"true"}}})
		if err != nil {
			return err
		}
		id := c.Container.Id
		if _, err := r.tc.CreateTask(ctx, &berthv1.CreateTaskRequest{ContainerId: id}); err != nil {
			return err
		}
		if _, err := r.tc.StartTask(ctx, &berthv1.StartTaskRequest{ContainerId: id}); err != nil {
			return err
		}
		w, err := r.tc.WaitTask(ctx, &berthv1.WaitTaskRequest{ContainerId: id})
		if err != nil {
			return err
		}
		if w.ExitStatus != 0 {
			return fmt.Errorf("true exited %d", w.ExitStatus)
		}
		_, err = r.cc.DeleteContainer(ctx, &berthv1.DeleteContainerRequest{Id: id})
		return err
	}
	for i := 0; i < 4; i++ { // warm up: connection pools, lazily started goroutines
		if err := cycle(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	before := r.footprint(debugSock)

	const cycles, workers = 200, 4
	begin := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, cycles)
	jobs := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				if err := cycle(); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := 0; i < cycles; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("cycle: %v", err)
	}
	took := time.Since(begin)
	t.Logf("%d run/rm cycles, %d at a time: %v (%.1f containers/s)", cycles, workers, took, float64(cycles)/took.Seconds())

	// Goroutines of finished calls and closed connections wind down
	// asynchronously: give them a moment before comparing.
	var after footprint
	for i := 0; i < 20; i++ {
		time.Sleep(100 * time.Millisecond)
		after = r.footprint(debugSock)
		if after.goroutines <= before.goroutines && after.fds <= before.fds {
			break
		}
	}
	t.Logf("before %+v", before)
	t.Logf("after  %+v", after)
	if after.goroutines > before.goroutines+2 || after.fds > before.fds {
		t.Errorf("berthd grew: goroutines %d → %d, fds %d → %d", before.goroutines, after.goroutines, before.fds, after.fds)
	}
	// Two idle warm shims (runtime.warm_shims = 2) may stand ready, and
	// no more: their sockets are in their own directories, not among the
	// tasks', and each may have made its container's group ahead (on
	// cgroup v1), under a name of its own. So may one warm network
	// attachment (network.warm_attachments = 1).
	if after.mounts != 0 || after.cgroups != 0 || after.sockets != 0 || after.shims != 0 || after.warm > 2 || after.warmCgroups > after.warm || after.warmNet > 1 || after.bundles != 0 || after.logDirs != 0 ||
		after.snapshots != before.snapshots || before.snapshots == 0 {
		t.Errorf("left behind after %d cycles: %+v", cycles, after)
	}
}

// pssRss reads a process's PSS and RSS in KiB from smaps_rollup.
func pssRss(pid int) (pss, rss int, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "Pss:":
			pss = n
		case "Rss:":
			rss = n
		}
	}
	return pss, rss, nil
}

// TestShimMemoryWith20Containers measures every shim's PSS and RSS with
// 20 containers running sleep and logs the figures (containerd's shim:
// 3.0 MiB PSS, 13 MiB RSS). A shim measures about 2.3 MiB (make bench;
// docs/runtime.md, Shim memory); the benchmark tracks that figure, and
// this test only holds a loose 5 MiB budget against a gross regression,
// wide enough for a noisier machine.
func TestShimMemoryWith20Containers(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := 0; i < 20; i++ {
		r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sleep", "300"}})
	}
	time.Sleep(time.Second) // let the shims' GC settle after their busy start
	var psss, rsss []int
	for _, pid := range processesMentioning(r.d.state) {
		pss, rss, err := pssRss(pid)
		if err != nil {
			t.Fatal(err)
		}
		psss, rsss = append(psss, pss), append(rsss, rss)
	}
	if len(psss) != 20 {
		t.Fatalf("%d shims for 20 containers", len(psss))
	}
	sort.Ints(psss)
	sort.Ints(rsss)
	sum := 0
	for _, p := range psss {
		sum += p
	}
	avg := float64(sum) / 20 / 1024
	t.Logf("shim PSS: avg %.2f MiB, median %.2f MiB, max %.2f MiB; RSS median %.2f MiB, max %.2f MiB",
		avg, float64(psss[10])/1024, float64(psss[19])/1024, float64(rsss[10])/1024, float64(rsss[19])/1024)
	if avg >= 5 {
		t.Errorf("average shim PSS %.2f MiB, over the 5 MiB regression budget", avg)
	}
}
