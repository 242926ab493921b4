package integration

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// waitWarm waits until berthd has n idle warm shims, each with its
// preforked init, and returns them.
func (r *rt) waitWarm(n int) []int {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		w := warmShims(r.d.state)
		if len(w) == n && len(preforkedInits(w)) == n {
			return w
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%d idle warm shims after 20s, want %d", len(w), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// warmGroups lists the groups idle warm shims made ahead under berthd's
// cgroup parent (cgroup v1 only: v2 cannot rename them into a
// container's), each with the pids in it.
func (r *rt) warmGroups() map[string][]int {
	out := map[string][]int{}
	ents, _ := os.ReadDir(filepath.Join("/sys/fs/cgroup/pids", r.cgParent))
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), ".warm-") {
			procs, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/pids", r.cgParent, e.Name(), "cgroup.procs"))
			var pids []int
			for _, f := range strings.Fields(string(procs)) {
				n, _ := strconv.Atoi(f)
				pids = append(pids, n)
			}
			out[e.Name()] = pids
		}
	}
	return out
}

// waitWarmGroups waits until there are n warm groups, none empty.
func (r *rt) waitWarmGroups(n int) map[string][]int {
	r.t.Helper()
	if !cgroupV1() {
		n = 0
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		g := r.warmGroups()
		full := 0
		for _, pids := range g {
			if len(pids) > 0 {
				full++
			}
		}
		if len(g) == n && full == n {
			return g
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("warm groups after 20s: %v, want %d with a process each", g, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func cgroupV1() bool {
	_, err := os.Stat("/sys/fs/cgroup/pids/cgroup.procs")
	return err == nil
}

// gone waits until none of pids exists.
func gone(t testing.TB, what string, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) == nil {
			if time.Now().After(deadline) {
				t.Fatalf("%s %d still runs", what, pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// preforkedInits lists the warm shims' waiting container inits (children
// of the given shims named berth-init).
func preforkedInits(shims []int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if !strings.HasPrefix(string(cmdline), "berth-init\x00") {
			continue
		}
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		for _, p := range shims {
			if len(f) > 1 && f[1] == strconv.Itoa(p) {
				n, _ := strconv.Atoi(e.Name())
				out = append(out, n)
			}
		}
	}
	return out
}

// A container is created through the warm shim, which is replaced; the
// warm shim and its preforked init go away with berthd, whether it stops
// or is killed, leaving nothing under the state dir.
func TestWarmShimLifecycle(t *testing.T) {
	r := startRuntime(t, withMoreConfig("[runtime]\nwarm_shims = 1\n"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	warm := r.waitWarm(1)
	inits := preforkedInits(warm)
	if len(inits) != 1 {
		t.Fatalf("warm shim %v has preforked inits %v, want one", warm, inits)
	}
	// On cgroup v1 the warm shim has made its container's group ahead,
	// with the preforked init in it.
	groups := r.waitWarmGroups(1)
	for name, pids := range groups {
		if len(pids) != 1 || pids[0] != inits[0] {
			t.Errorf("warm group %s holds %v, want the preforked init %d", name, pids, inits[0])
		}
	}
	c := r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh", "-c", "echo $$; sleep 300"}})
	got, err := r.cc.GetContainer(ctx, &berthv1.GetContainerRequest{Id: c.Id})
	if err != nil {
		t.Fatal(err)
	}
	if pid := got.Container.Status.Pid; int(pid) != inits[0] {
		t.Errorf("container pid %d, want the warm shim's preforked init %d", pid, inits[0])
	}
	shims := processesMentioning(r.d.state)
	if len(shims) != 1 || shims[0] != warm[0] {
		t.Errorf("container shims %v, want the adopted warm shim %d", shims, warm[0])
	}
	next := r.waitWarm(1)
	if next[0] == warm[0] {
		t.Fatal("the adopted shim still counts as warm")
	}
	// The adopted group is the container's now: renamed, the init in it.
	if procs, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/pids", r.cgParent, c.Id, "cgroup.procs")); err != nil || !strings.Contains(string(procs), strconv.Itoa(inits[0])) {
		t.Errorf("container's group holds %q (%v), want its init %d", procs, err, inits[0])
	}
	for name := range r.waitWarmGroups(1) {
		if _, used := groups[name]; used {
			t.Errorf("the adopted warm group %s is still there", name)
		}
	}

	// kill -9: the idle warm shim and its init leave by themselves; the
	// container's shim stays, as every shim does.
	nextInits := preforkedInits(next)
	r.d.kill()
	gone(t, "idle warm shim", next...)
	gone(t, "preforked init", nextInits...)
	if ents, _ := os.ReadDir(filepath.Join(r.d.state, "warm")); len(ents) != 0 {
		t.Errorf("warm dir not cleaned after kill -9: %v", ents)
	}
	if g := r.warmGroups(); len(g) != 0 {
		t.Errorf("warm groups left after kill -9: %v", g)
	}
	if err := syscall.Kill(shims[0], 0); err != nil {
		t.Fatalf("the container's shim died with berthd: %v", err)
	}

	// Restart: the container is still there and running; a new warm shim.
	r.d.start()
	r.connect()
	r.waitWarm(1)
	got, err = r.cc.GetContainer(ctx, &berthv1.GetContainerRequest{Id: c.Id})
	if err != nil || got.Container.Status.State != berthv1.ContainerState_CONTAINER_STATE_RUNNING {
		t.Fatalf("container after restart: %+v %v", got.GetContainer().GetStatus(), err)
	}
	if _, err := r.cc.DeleteContainer(ctx, &berthv1.DeleteContainerRequest{Id: c.Id, Force: true}); err != nil {
		t.Fatal(err)
	}

	// A graceful stop takes the warm shim with it.
	last := warmShims(r.d.state)
	r.d.stop()
	gone(t, "warm shim after stop", last...)
	if ents, _ := os.ReadDir(filepath.Join(r.d.state, "warm")); len(ents) != 0 {
		t.Errorf("warm dir not cleaned after stop: %v", ents)
	}
	if g := r.warmGroups(); len(g) != 0 {
		t.Errorf("warm groups left after stop: %v", g)
	}
}

// A warm shim that died before use is not used: the create starts a shim
// the ordinary way and succeeds.
func TestDeadWarmShimFallsBack(t *testing.T) {
	r := startRuntime(t, withMoreConfig("[runtime]\nwarm_shims = 1\n"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	warm := r.waitWarm(1)
	syscall.Kill(warm[0], syscall.SIGKILL)
	gone(t, "killed warm shim", warm...)
	c := r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh", "-c", "exit 4"}})
	if w := r.wait(ctx, c.Id); w.ExitStatus != 4 {
		t.Fatalf("exit status %d, want 4", w.ExitStatus)
	}
	r.waitWarm(1)
	if ents, _ := os.ReadDir(filepath.Join(r.d.state, "warm")); len(ents) != 1 {
		t.Errorf("warm dir holds %d entries, want the new warm shim's only", len(ents))
	}
	// The killed shim's group stays, empty, until berthd's next start.
	if g := r.warmGroups(); cgroupV1() && len(g) != 2 {
		t.Errorf("warm groups %v, want the killed shim's (empty) and the new one's", g)
	}
	r.d.stop()
	r.d.start()
	r.connect()
	r.waitWarm(1)
	r.waitWarmGroups(1) // fails on an empty one left
}

// warm_shims = 0: no warm shim, and containers run all the same.
func TestNoWarmShims(t *testing.T) {
	r := startRuntime(t, withMoreConfig("[runtime]\nwarm_shims = 0\n"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"true"}})
	if w := r.wait(ctx, c.Id); w.ExitStatus != 0 {
		t.Fatalf("exit status %d", w.ExitStatus)
	}
	time.Sleep(300 * time.Millisecond)
	if w := warmShims(r.d.state); len(w) != 0 {
		t.Fatalf("warm shims %v with warm_shims = 0", w)
	}
}
