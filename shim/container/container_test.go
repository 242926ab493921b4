package container_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/shim/container"
	"github.com/berth-dev/berth/shim/container/cgroup"
	"github.com/berth-dev/berth/shim/container/internal/testspec"
)

const testCgroupParent = "/berth-test"

func TestMain(m *testing.M) {
	// The re-exec marker: Create runs this test binary as the container
	// init, which must never reach the test framework.
	if container.IsInit() {
		container.Init()
	}
	// Like the shim: a subreaper, so processes Exec starts (whose first
	// parent is a helper that exits) are reparented to us for reaping.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "subreaper:", err)
		os.Exit(1)
	}
	code := m.Run()
	// The per-test groups are gone by now; drop their parent.
	for _, h := range []string{"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd", "perf_event", "net_cls", "net_prio", "hugetlb", "rdma", "unified", ""} {
		_ = os.Remove(filepath.Join("/sys/fs/cgroup", h, testCgroupParent))
	}
	os.Exit(code)
}

func needRoot(t *testing.T) {
	t.Helper()
	// make test runs as root with busybox-static installed; anything
	// else is a broken test setup, not a reason to pass silently.
	if os.Geteuid() != 0 {
		t.Fatal("needs root: run 'make test' as root")
	}
	if _, err := os.Stat(testspec.Busybox); err != nil {
		t.Fatal("needs /bin/busybox: 'make test' installs busybox-static")
	}
	if cgroup.HostMode() == cgroup.Unavailable {
		t.Fatal("needs cgroups")
	}
}

// fixture is one container under test: its rootfs, output file and the
// cleanup that runs even when the test fails.
type fixture struct {
	t      *testing.T
	rootfs string
	out    *os.File
	c      *container.Container
	reaped bool
	// prefork, when set, is handed to the next create.
	prefork *container.Preforked
	// cgroup, when set, is handed to the next create.
	cgroup *container.PreparedCgroup
}

func newFixture(t *testing.T) *fixture {
	needRoot(t)
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	if err := testspec.Rootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, rootfs: rootfs, out: out}
	t.Cleanup(func() {
		if f.c != nil {
			if err := f.c.Destroy(); err != nil {
				t.Errorf("destroy: %v", err)
			}
			if !f.reaped {
				f.wait(10 * time.Second)
			}
		}
		out.Close()
	})
	return f
}

func (f *fixture) spec(args ...string) *specs.Spec { return testspec.Spec(f.rootfs, args...) }

func (f *fixture) create(spec *specs.Spec) (*container.Container, error) {
	f.t.Helper()
	id := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(f.t.Name()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := container.Create(ctx, container.Config{
		ID:           id,
		Bundle:       filepath.Dir(f.rootfs),
		Spec:         spec,
		Stdio:        container.Stdio{Stdout: f.out, Stderr: f.out},
		CgroupParent: testCgroupParent,
		Prefork:      f.prefork,
		Cgroup:       f.cgroup,
	})
	f.prefork, f.cgroup = nil, nil
	if err == nil {
		f.c = c
	}
	return c, err
}

func (f *fixture) mustStart(spec *specs.Spec) *container.Container {
	f.t.Helper()
	c, err := f.create(spec)
	if err != nil {
		f.t.Fatalf("create: %v", err)
	}
	if err := c.Start(); err != nil {
		f.t.Fatalf("start: %v", err)
	}
	return c
}

// wait reaps the init the way the shim will (the test process is its
// parent) and returns its wait status.
func (f *fixture) wait(timeout time.Duration) syscall.WaitStatus {
	f.t.Helper()
	type res struct {
		ws  syscall.WaitStatus
		err error
	}
	ch := make(chan res, 1)
	pid := f.c.Pid()
	go func() {
		var ws syscall.WaitStatus
		var err error
		for {
			_, err = syscall.Wait4(pid, &ws, 0, nil)
			if err != syscall.EINTR {
				break
			}
		}
		ch <- res{ws, err}
	}()
	select {
	case r := <-ch:
		f.reaped = true
		if r.err != nil {
			f.t.Fatalf("wait4 %d: %v", pid, r.err)
		}
		return r.ws
	case <-time.After(timeout):
		_ = f.c.Destroy()
		r := <-ch
		f.reaped = true
		f.t.Fatalf("container did not exit within %v (killed: %v)", timeout, r.ws)
		return r.ws
	}
}

func (f *fixture) output() string {
	b, err := os.ReadFile(f.out.Name())
	if err != nil {
		f.t.Fatal(err)
	}
	return string(b)
}

func TestNamespacesRootfsUser(t *testing.T) {
	f := newFixture(t)
	spec := f.spec("sh", "-c", "echo $$; hostname; id; cat /proc/self/cgroup; ls /")
	spec.Hostname = "web-1"
	spec.Process.User = specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{10}}
	c := f.mustStart(spec)
	ws := f.wait(20 * time.Second)
	out := f.output()
	t.Logf("output:\n%s", out)
	if ws.ExitStatus() != 0 {
		t.Fatalf("exit status %v", ws)
	}
	lines := strings.Split(out, "\n")
	if lines[0] != "1" {
		t.Errorf("pid in container = %q, want 1", lines[0])
	}
	if lines[1] != "web-1" {
		t.Errorf("hostname = %q, want web-1", lines[1])
	}
	if !strings.HasPrefix(lines[2], "uid=1000(berth) gid=1000(berth) groups=") || !strings.Contains(lines[2], "10(wheel)") {
		t.Errorf("id = %q, want uid/gid 1000 with group 10", lines[2])
	}
	if want := ":" + c.CgroupPath(); !strings.Contains(out, "memory"+want) || !strings.Contains(out, "pids"+want) {
		t.Errorf("/proc/self/cgroup does not show %s", c.CgroupPath())
	}
	if !strings.Contains(out, "\nberth-rootfs\n") || strings.Contains(out, "\nwork\n") {
		t.Errorf("ls / does not show the container's rootfs")
	}
}

func TestCreateRunsNothingUntilStart(t *testing.T) {
	f := newFixture(t)
	c, err := f.create(f.spec("touch", "/started"))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := os.Stat(filepath.Join(f.rootfs, "started")); err == nil {
		t.Fatal("marker written before Start")
	}
	pids, err := c.Pids()
	if err != nil || len(pids) != 1 || pids[0] != c.Pid() {
		t.Errorf("cgroup holds %v (%v), want just the init %d before Start", pids, err, c.Pid())
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if ws := f.wait(10 * time.Second); ws.ExitStatus() != 0 {
		t.Fatalf("exit %v: %s", ws, f.output())
	}
	if _, err := os.Stat(filepath.Join(f.rootfs, "started")); err != nil {
		t.Fatalf("marker not written after Start: %v", err)
	}
	if err := c.Start(); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("second Start = %v, want ErrFailedPrecondition", err)
	}
}

func TestExitCode(t *testing.T) {
	f := newFixture(t)
	f.mustStart(f.spec("sh", "-c", "exit 42"))
	if ws := f.wait(10 * time.Second); !ws.Exited() || ws.ExitStatus() != 42 {
		t.Fatalf("wait status %v, want exit 42", ws)
	}
}

func TestExecutableNotFound(t *testing.T) {
	f := newFixture(t)
	_, err := f.create(f.spec("no-such-binary"))
	if err == nil {
		t.Fatal("create succeeded")
	}
	t.Log(err)
	var ie *container.InitError
	if !errors.As(err, &ie) || ie.ExitCode() != 127 || !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("err = %v, want an InitError with exit code 127 wrapping ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), `"no-such-binary": executable file not found in $PATH`) {
		t.Errorf("message not clear: %v", err)
	}
	if err := os.WriteFile(filepath.Join(f.rootfs, "notexec"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = f.create(f.spec("/notexec"))
	if !errors.As(err, &ie) || ie.ExitCode() != 126 {
		t.Fatalf("err = %v, want exit code 126", err)
	}
	assertNoCgroup(t, "/berth-test/testexecutablenotfound")
}

func TestMemoryLimitOOM(t *testing.T) {
	f := newFixture(t)
	spec := f.spec("sh", "-c", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done")
	limit := int64(32 << 20)
	spec.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit, Swap: &limit}
	c, err := f.create(spec)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := c.OOMEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	ws := f.wait(30 * time.Second)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("wait status %v, want killed by SIGKILL", ws)
	}
	if oom, err := c.OOMKilled(); err != nil || !oom {
		t.Fatalf("OOMKilled = %v, %v", oom, err)
	}
	select {
	case _, ok := <-events:
		if !ok {
			t.Fatal("oom event channel closed without an event")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no oom event")
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.MemoryLimit != uint64(limit) || st.OOMKills == 0 {
		t.Errorf("stats: limit %d oom kills %d", st.MemoryLimit, st.OOMKills)
	}
}

func TestPidsLimitContainsForkBomb(t *testing.T) {
	f := newFixture(t)
	// Each "sleep &" is a new process; a real bomb would only fill the
	// limit faster.
	// The bomb runs in a subshell: when a fork fails busybox sh gives up,
	// and the container's PID 1 must outlive it to be inspected.
	spec := f.spec("sh", "-c", "(i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done); echo spawned; sleep 30")
	limit := int64(10)
	spec.Linux.Resources.Pids = &specs.LinuxPids{Limit: &limit}
	c := f.mustStart(spec)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(f.output(), "spawned") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	pids, _ := c.Pids()
	t.Logf("pids.current=%d limit=%d procs=%d output:\n%s", st.PidsCurrent, st.PidsLimit, len(pids), f.output())
	if st.PidsLimit != 10 || st.PidsCurrent > 10 || st.PidsCurrent < 9 {
		t.Errorf("pids current %d limit %d, want the limit 10 reached and held", st.PidsCurrent, st.PidsLimit)
	}
	if !strings.Contains(f.output(), "fork") {
		t.Errorf("no fork failure reported")
	}
}

func TestCPUQuotaAndFiles(t *testing.T) {
	f := newFixture(t)
	if cgroup.HostMode() != cgroup.V1 {
		t.Skip("checks v1 files")
	}
	spec := f.spec("sh", "-c", "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us /sys/fs/cgroup/cpu/cpu.shares")
	quota, period, shares := int64(50000), uint64(100000), uint64(512)
	spec.Linux.Resources.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period, Shares: &shares, Cpus: "0"}
	// This kernel has no blkio.weight: the weight must be dropped, not fail.
	weight := uint16(300)
	spec.Linux.Resources.BlockIO = &specs.LinuxBlockIO{Weight: &weight}
	c := f.mustStart(spec)
	for file, want := range map[string]string{
		"cpu/cpu.cfs_quota_us":  "50000",
		"cpu/cpu.cfs_period_us": "100000",
		"cpu/cpu.shares":        "512",
		"cpuset/cpuset.cpus":    "0",
	} {
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", filepath.Dir(file), c.CgroupPath(), filepath.Base(file)))
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if got := strings.TrimSpace(string(b)); got != want {
			t.Errorf("%s = %s, want %s", file, got, want)
		}
	}
	f.wait(10 * time.Second)
	if st, err := c.Stats(); err != nil || st.CPUUsageNanos == 0 {
		t.Errorf("stats after a run: %+v, %v; want some CPU time", st, err)
	}
	if got := strings.Fields(f.output()); strings.Join(got, " ") != "50000 100000 512" {
		t.Errorf("inside the container the cgroup shows %q", got)
	}
}

func TestDefaultSecurity(t *testing.T) {
	f := newFixture(t)
	script := `mount -t tmpfs none /mnt 2>/dev/null && echo MOUNT=ok || echo MOUNT=denied
echo KCORE=$(cat /proc/kcore | wc -c)
(echo 1 > /proc/sys/kernel/ns_last_pid) 2>/dev/null && echo PROCSYS=rw || echo PROCSYS=ro
grep -q 'proc/sys proc ro' /proc/mounts && echo PROCSYSMOUNT=ro
grep CapEff /proc/self/status
grep CapBnd /proc/self/status
echo NOFILE=$(ulimit -n)
echo NET=$(ls /sys/class/net) LOFLAGS=$(cat /sys/class/net/lo/flags)
echo FIRMWARE=$(ls /sys/firmware | wc -l)
mknod /tmp/mem c 1 1 && (head -c 1 /tmp/mem >/dev/null 2>&1 && echo DEVMEM=read || echo DEVMEM=denied)
ls /dev`
	spec := f.spec("sh", "-c", script+"\necho FWD=$(cat /proc/sys/net/ipv4/ip_forward)")
	// A namespaced sysctl, written before /proc/sys turns read-only.
	spec.Linux.Sysctl = map[string]string{"net.ipv4.ip_forward": "1"}
	f.mustStart(spec)
	f.wait(10 * time.Second)
	out := f.output()
	t.Logf("output:\n%s", out)
	want, err := container.CapabilityMask(testspec.DefaultCaps)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"MOUNT=denied", "KCORE=0", "PROCSYS=ro", "PROCSYSMOUNT=ro", "NET=lo LOFLAGS=0x9", "FWD=1", "FIRMWARE=0", "DEVMEM=denied",
		fmt.Sprintf("CapEff:\t%016x", want), fmt.Sprintf("CapBnd:\t%016x", want),
		"\nnull\n", "\nptmx\n", "\nurandom\n", "\nshm\n", "\nmqueue\n", "\npts\n", "\nstdout\n",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q", s)
		}
	}
	// The host's hard limit may be below the spec's 1048576: then the
	// container gets the host's, not an error.
	var rl unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
	if wantNofile := min(rl.Max, 1048576); !strings.Contains(out, "NOFILE="+strconv.FormatUint(wantNofile, 10)) {
		t.Errorf("ulimit -n not %d", wantNofile)
	}
}

func TestReadonlyRootfsAndBindMounts(t *testing.T) {
	f := newFixture(t)
	shared := t.TempDir()
	if err := os.WriteFile(filepath.Join(shared, "hello"), []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := f.spec("sh", "-c", `touch /x 2>/dev/null && echo ROOT=rw || echo ROOT=ro
cat /data/hello; touch /data/new 2>/dev/null && echo DATA=rw || echo DATA=ro
touch /scratch/y && echo SCRATCH=rw`)
	spec.Root.Readonly = true
	spec.Mounts = append(spec.Mounts,
		specs.Mount{Destination: "/data", Type: "bind", Source: shared, Options: []string{"rbind", "ro"}},
		specs.Mount{Destination: "/scratch", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "size=1m"}},
	)
	f.mustStart(spec)
	f.wait(10 * time.Second)
	out := f.output()
	for _, s := range []string{"ROOT=ro", "from host", "DATA=ro", "SCRATCH=rw"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
}

func TestTerminal(t *testing.T) {
	f := newFixture(t)
	spec := f.spec("sh", "-c", "tty; stty size; echo done")
	spec.Process.Terminal = true
	spec.Process.ConsoleSize = &specs.Box{Height: 40, Width: 100}
	c, err := f.create(spec)
	if err != nil {
		t.Fatal(err)
	}
	if c.Console() == nil {
		t.Fatal("no console")
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		var all []byte
		buf := make([]byte, 1024)
		for {
			n, err := c.Console().Read(buf)
			all = append(all, buf[:n]...)
			if err != nil || strings.Contains(string(all), "done") {
				got <- string(all)
				return
			}
		}
	}()
	select {
	case s := <-got:
		if !strings.Contains(s, "/dev/pts/0") || !strings.Contains(s, "40 100") {
			t.Errorf("console said %q, want /dev/pts/0 and size 40 100", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no output on the console")
	}
	f.wait(10 * time.Second)
}

func TestPauseResumeSignal(t *testing.T) {
	f := newFixture(t)
	c := f.mustStart(f.spec("sh", "-c", "trap 'echo TERM; exit 3' TERM; while true; do sleep 0.1; done"))
	time.Sleep(200 * time.Millisecond)
	if err := c.Pause(); err != nil {
		t.Fatal(err)
	}
	state, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/freezer", c.CgroupPath(), "freezer.state"))
	if cgroup.HostMode() == cgroup.V1 && strings.TrimSpace(string(state)) != "FROZEN" {
		t.Errorf("freezer.state = %q", state)
	}
	if err := c.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := c.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if ws := f.wait(10 * time.Second); ws.ExitStatus() != 3 {
		t.Errorf("exit %v, want 3", ws)
	}
	if !strings.Contains(f.output(), "TERM") {
		t.Error("trap did not run")
	}
}

func TestDestroyLeavesNothing(t *testing.T) {
	f := newFixture(t)
	c := f.mustStart(f.spec("sh", "-c", "sleep 100 & sleep 100 & sleep 100"))
	time.Sleep(200 * time.Millisecond)
	pids, err := c.Pids()
	if err != nil || len(pids) != 3 { // busybox sh execs its last command
		t.Fatalf("pids %v %v, want 3", pids, err)
	}
	// Nothing of the shim's leaks into the container: the init (sh, which
	// exec'd its last sleep) holds only stdio.
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", c.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	var fds []string
	for _, e := range ents {
		fds = append(fds, e.Name())
	}
	if strings.Join(fds, " ") != "0 1 2" {
		t.Errorf("init holds fds %v, want only 0 1 2", fds)
	}
	path := c.CgroupPath()
	if err := c.Destroy(); err != nil {
		t.Fatal(err)
	}
	ws := f.wait(10 * time.Second)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("init status %v, want SIGKILL", ws)
	}
	for _, p := range pids {
		if err := unix.Kill(p, 0); err == nil {
			t.Errorf("pid %d still alive", p)
		}
	}
	assertNoCgroup(t, path)
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), f.rootfs) {
		t.Errorf("mount of %s left on the host", f.rootfs)
	}
	if err := c.Destroy(); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
}

func assertNoCgroup(t *testing.T, path string) {
	t.Helper()
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range ents {
		p := filepath.Join("/sys/fs/cgroup", e.Name(), path)
		if _, err := os.Stat(p); err == nil {
			t.Errorf("cgroup %s left behind", p)
		}
	}
}

func TestSeccomp(t *testing.T) {
	for _, nnp := range []bool{false, true} {
		t.Run(fmt.Sprintf("no_new_privs=%v", nnp), func(t *testing.T) {
			f := newFixture(t)
			spec := f.spec("sh", "-c", `mkdir /tmp/d 2>&1; echo MKDIR=$?; grep -E 'Seccomp:|NoNewPrivs:' /proc/self/status; echo ok`)
			spec.Process.NoNewPrivileges = nnp
			eperm := uint(unix.EPERM)
			spec.Linux.Seccomp = &specs.LinuxSeccomp{
				DefaultAction: specs.ActAllow,
				Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
				Syscalls: []specs.LinuxSyscall{
					{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: &eperm},
					// Different arguments: both must match (never here).
					{Names: []string{"personality"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{
						{Index: 0, Value: 1, Op: specs.OpEqualTo}, {Index: 1, Value: 2, Op: specs.OpEqualTo},
					}},
					{Names: []string{"no_such_syscall_in_any_kernel"}, Action: specs.ActErrno},
				},
			}
			f.mustStart(spec)
			if ws := f.wait(10 * time.Second); ws.ExitStatus() != 0 {
				t.Fatalf("exit %v: %s", ws, f.output())
			}
			out := f.output()
			t.Logf("output:\n%s", out)
			nnpWant := "NoNewPrivs:\t0"
			if nnp {
				nnpWant = "NoNewPrivs:\t1"
			}
			for _, s := range []string{"Operation not permitted", "MKDIR=1", "Seccomp:\t2", nnpWant, "ok"} {
				if !strings.Contains(out, s) {
					t.Errorf("output lacks %q", s)
				}
			}
		})
	}
}

func TestSeccompBadProfileFailsCreate(t *testing.T) {
	f := newFixture(t)
	spec := f.spec("true")
	spec.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_BOGUS"}
	_, err := f.create(spec)
	var ie *container.InitError
	if !errors.As(err, &ie) || ie.Stage != container.StageSeccomp {
		t.Fatalf("err = %v, want a seccomp-stage InitError", err)
	}
}

func waitPid(t *testing.T, pid int, timeout time.Duration) syscall.WaitStatus {
	t.Helper()
	ch := make(chan syscall.WaitStatus, 1)
	go func() {
		var ws syscall.WaitStatus
		for {
			_, err := syscall.Wait4(pid, &ws, 0, nil)
			if err != syscall.EINTR {
				break
			}
		}
		ch <- ws
	}()
	select {
	case ws := <-ch:
		return ws
	case <-time.After(timeout):
		_ = unix.Kill(pid, unix.SIGKILL)
		<-ch
		t.Fatalf("pid %d did not exit within %v", pid, timeout)
		return 0
	}
}

func TestExec(t *testing.T) {
	f := newFixture(t)
	spec := f.spec("sleep", "100")
	spec.Hostname = "exec-host"
	c := f.mustStart(spec)

	out, err := os.Create(filepath.Join(t.TempDir(), "exec-out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	proc := *spec.Process
	proc.Args = []string{"sh", "-c", "echo PID=$$; hostname; id; cat /proc/self/cgroup; ls /; grep CapEff /proc/self/status; ps -o pid,comm"}
	proc.User = specs.User{UID: 1000, GID: 1000}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := c.Exec(ctx, &proc, container.Stdio{Stdout: out, Stderr: out})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p.PidFD)
	if ws := waitPid(t, p.Pid, 10*time.Second); ws.ExitStatus() != 0 {
		t.Errorf("exec exit %v", ws)
	}
	b, _ := os.ReadFile(out.Name())
	got := string(b)
	t.Logf("exec output:\n%s", got)
	want, err := container.CapabilityMask(testspec.DefaultCaps)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"exec-host", "uid=1000(berth)", "pids:" + c.CgroupPath(), "memory:" + c.CgroupPath(),
		"\nberth-rootfs\n", "CapEff:\t0000000000000000", "    1 sleep",
	} {
		if !strings.Contains(got, s) {
			t.Errorf("exec output lacks %q", s)
		}
	}
	if strings.Contains(got, "PID=1\n") {
		t.Error("exec'd process is PID 1")
	}

	// Root with the default caps sees them as effective.
	proc.User = specs.User{}
	proc.Args = []string{"grep", "CapEff", "/proc/self/status"}
	out2, _ := os.Create(filepath.Join(t.TempDir(), "exec-out2"))
	defer out2.Close()
	p2, err := c.Exec(ctx, &proc, container.Stdio{Stdout: out2})
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(p2.PidFD)
	waitPid(t, p2.Pid, 10*time.Second)
	b, _ = os.ReadFile(out2.Name())
	if wantCap := fmt.Sprintf("CapEff:\t%016x", want); !strings.Contains(string(b), wantCap) {
		t.Errorf("root exec: %q, want %q", b, wantCap)
	}

	// With a terminal: a pty from the container's devpts.
	proc.Args = []string{"sh", "-c", "tty; echo done"}
	proc.Terminal = true
	p3, err := c.Exec(ctx, &proc, container.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(p3.PidFD)
	if p3.Console == nil {
		t.Fatal("exec with terminal: no console")
	}
	defer p3.Console.Close()
	var all []byte
	buf := make([]byte, 512)
	_ = p3.Console.SetReadDeadline(time.Now().Add(5 * time.Second))
	for !strings.Contains(string(all), "done") {
		n, err := p3.Console.Read(buf)
		all = append(all, buf[:n]...)
		if err != nil {
			break
		}
	}
	waitPid(t, p3.Pid, 10*time.Second)
	if !strings.Contains(string(all), "/dev/pts/") {
		t.Errorf("exec tty said %q", all)
	}
	proc.Terminal = false

	proc.Args = []string{"no-such-tool"}
	_, err = c.Exec(ctx, &proc, container.Stdio{})
	var ie *container.InitError
	if !errors.As(err, &ie) || ie.ExitCode() != 127 {
		t.Errorf("exec of a missing binary: %v, want exit code 127", err)
	}
}

func TestDestroyBeforeStart(t *testing.T) {
	f := newFixture(t)
	c, err := f.create(f.spec("touch", "/started"))
	if err != nil {
		t.Fatal(err)
	}
	path := c.CgroupPath()
	if err := c.Destroy(); err != nil {
		t.Fatal(err)
	}
	if ws := f.wait(10 * time.Second); !ws.Signaled() {
		t.Errorf("init status %v, want killed", ws)
	}
	if _, err := os.Stat(filepath.Join(f.rootfs, "started")); err == nil {
		t.Error("the process ran although never started")
	}
	assertNoCgroup(t, path)
	if err := c.Start(); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Start after Destroy = %v", err)
	}
}

func TestStartAfterInitKilled(t *testing.T) {
	f := newFixture(t)
	c, err := f.create(f.spec("true"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := c.Start(); !errors.Is(err, container.ErrInitDied) {
		t.Errorf("Start = %v, want ErrInitDied", err)
	}
}

func TestCreateCanceled(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := container.Create(ctx, container.Config{ID: "canceled", Spec: f.spec("true"), CgroupParent: testCgroupParent})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	assertNoCgroup(t, testCgroupParent+"/canceled")
}

func TestDuplicateIDRefused(t *testing.T) {
	f := newFixture(t)
	c := f.mustStart(f.spec("sleep", "100"))
	_, err := container.Create(context.Background(), container.Config{
		ID: f.c.ID(), Spec: f.spec("true"), CgroupParent: testCgroupParent,
	})
	if !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second create with id %s: %v, want ErrAlreadyExists", c.ID(), err)
	}
	if pids, _ := c.Pids(); len(pids) != 1 {
		t.Errorf("first container disturbed: pids %v", pids)
	}
}

func TestSignalAllKeepsPause(t *testing.T) {
	f := newFixture(t)
	c := f.mustStart(f.spec("sh", "-c", "trap '' TERM; sleep 100 & wait"))
	time.Sleep(200 * time.Millisecond)
	if err := c.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := c.SignalAll(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if paused, err := c.Paused(); err != nil || !paused {
		t.Errorf("after SignalAll(TERM) paused = %v, %v; want still paused", paused, err)
	}
	if err := c.SignalAll(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if ws := f.wait(10 * time.Second); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("status %v, want SIGKILL", ws)
	}
}

func TestOOMScoreAdjClamped(t *testing.T) {
	f := newFixture(t)
	spec := f.spec("cat", "/proc/self/oom_score_adj")
	// Lowering the score takes CAP_SYS_RESOURCE; hosts that withhold it
	// get the inherited score and a warning, not a failed container.
	low := -999
	spec.Process.OOMScoreAdj = &low
	f.mustStart(spec)
	f.wait(10 * time.Second)
	own, _ := os.ReadFile("/proc/self/oom_score_adj")
	got := strings.TrimSpace(f.output())
	if got != "-999" && got != strings.TrimSpace(string(own)) {
		t.Errorf("oom_score_adj %q, want -999 or the inherited %s", got, own)
	}

	g := newFixture(t)
	spec = g.spec("cat", "/proc/self/oom_score_adj")
	high := 500
	spec.Process.OOMScoreAdj = &high
	g.mustStart(spec)
	g.wait(10 * time.Second)
	if got := strings.TrimSpace(g.output()); got != "500" {
		t.Errorf("oom_score_adj %q, want 500", got)
	}
}

func TestAmbientCapsForNonRoot(t *testing.T) {
	f := newFixture(t)
	spec := f.spec("grep", "-E", "^Cap(Inh|Prm|Eff|Amb)", "/proc/self/status")
	spec.Process.User = specs.User{UID: 1000, GID: 1000}
	// What Kubernetes and Docker do for a non-root user that needs one
	// capability: the same name in every set, ambient included, so it
	// survives execve of a file without file capabilities.
	c := []string{"CAP_NET_BIND_SERVICE"}
	spec.Process.Capabilities = &specs.LinuxCapabilities{Bounding: c, Effective: c, Permitted: c, Inheritable: c, Ambient: c}
	f.mustStart(spec)
	f.wait(10 * time.Second)
	out := f.output()
	for _, set := range []string{"CapInh", "CapPrm", "CapEff", "CapAmb"} {
		if want := set + ":\t0000000000000400"; !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// BenchmarkRunTrue measures create + start + exit + destroy of
// "/bin/true" in a fresh busybox container: the runtime's share of
// "run --rm".
func BenchmarkRunTrue(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	dir := b.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	if err := testspec.Rootfs(rootfs); err != nil {
		b.Fatal(err)
	}
	spec := testspec.Spec(rootfs, "true")
	spec.Process.Rlimits = nil // keep the clamp warning out of the numbers
	for i := 0; b.Loop(); i++ {
		c, err := container.Create(context.Background(), container.Config{
			ID: fmt.Sprintf("bench-%d", i), Spec: spec, CgroupParent: testCgroupParent,
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(); err != nil {
			b.Fatal(err)
		}
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(c.Pid(), &ws, 0, nil); err != nil {
			b.Fatal(err)
		}
		if err := c.Destroy(); err != nil {
			b.Fatal(err)
		}
	}
}

func TestTinyPidsLimitDoesNotBreakInit(t *testing.T) {
	// The init is a multi-threaded Go program until execve; the limit is
	// applied at Start so even a limit of 1 runs a single process.
	f := newFixture(t)
	spec := f.spec("echo", "hi")
	one := int64(1)
	spec.Linux.Resources.Pids = &specs.LinuxPids{Limit: &one}
	c := f.mustStart(spec)
	if ws := f.wait(10 * time.Second); ws.ExitStatus() != 0 || f.output() != "hi\n" {
		t.Fatalf("exit %v output %q", ws, f.output())
	}
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/pids", c.CgroupPath(), "pids.max"))
	if cgroup.HostMode() == cgroup.V1 && (err != nil || strings.TrimSpace(string(b)) != "1") {
		t.Errorf("pids.max = %q, %v", b, err)
	}
}

func TestInitDeathIsExplained(t *testing.T) {
	// A memory limit far below what the Go init needs kills it during
	// Create; the error must say so rather than "connection reset".
	f := newFixture(t)
	spec := f.spec("true")
	tiny := int64(1 << 20)
	spec.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &tiny}
	_, err := f.create(spec)
	if err == nil {
		t.Skip("the init fit in 1 MiB")
	}
	t.Log(err)
	if !errors.Is(err, container.ErrInitDied) || !strings.Contains(err.Error(), "killed by") {
		t.Errorf("err = %v, want ErrInitDied with how it died", err)
	}
}

func TestCgroupNamespace(t *testing.T) {
	f := newFixture(t)
	spec := f.spec("sh", "-c", "cat /proc/self/cgroup; echo PIDSMAX=$(cat /sys/fs/cgroup/pids/pids.max); ls /sys/fs/cgroup/memory | grep -c '^berth' ")
	spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	limit := int64(77)
	spec.Linux.Resources.Pids = &specs.LinuxPids{Limit: &limit}
	f.mustStart(spec)
	f.wait(10 * time.Second)
	out := f.output()
	t.Logf("output:\n%s", out)
	for _, s := range []string{"4:memory:/\n", "8:pids:/\n", "PIDSMAX=77", "\n0\n"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q", s)
		}
	}
}

func TestBadSpecsFailCleanly(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	if err := testspec.Rootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	good := func() *specs.Spec { return testspec.Spec(rootfs, "true") }
	for _, tc := range []struct {
		name  string
		id    string
		spec  func() *specs.Spec
		want  error  // errors.Is target, or nil
		stage string // InitError stage, or ""
	}{
		{name: "nil spec", spec: func() *specs.Spec { return nil }, want: errdefs.ErrInvalidArgument},
		{name: "no process", spec: func() *specs.Spec { s := good(); s.Process = nil; return s }, want: errdefs.ErrInvalidArgument},
		{name: "no args", spec: func() *specs.Spec { s := good(); s.Process.Args = nil; return s }, want: errdefs.ErrInvalidArgument},
		{name: "bad id", id: "a/b", spec: good, want: errdefs.ErrInvalidArgument},
		{name: "rootfs missing", spec: func() *specs.Spec { s := good(); s.Root.Path = filepath.Join(dir, "nope"); return s }, want: errdefs.ErrNotFound},
		{name: "no mount namespace", spec: func() *specs.Spec {
			s := good()
			s.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.PIDNamespace}}
			return s
		}, want: errdefs.ErrInvalidArgument},
		{name: "user namespace", spec: func() *specs.Spec {
			s := good()
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
			return s
		}, want: errdefs.ErrNotImplemented},
		{name: "apparmor", spec: func() *specs.Spec { s := good(); s.Process.ApparmorProfile = "docker-default"; return s }, want: errdefs.ErrNotImplemented},
		{name: "unknown capability", spec: func() *specs.Spec {
			s := good()
			s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_NO_SUCH")
			return s
		}, stage: container.StageUser},
		{name: "unknown rlimit", spec: func() *specs.Spec {
			s := good()
			s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NO_SUCH", Hard: 1, Soft: 1}}
			return s
		}, stage: container.StageProcess},
		{name: "bad device type", spec: func() *specs.Spec {
			s := good()
			s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/x", Type: "q", Major: 1, Minor: 3}}
			return s
		}, stage: container.StageRootfs},
		{name: "bind source missing", spec: func() *specs.Spec {
			s := good()
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: filepath.Join(dir, "nope"), Options: []string{"rbind"}})
			return s
		}, stage: container.StageRootfs, want: errdefs.ErrNotFound},
		{name: "bad rootfs propagation", spec: func() *specs.Spec { s := good(); s.Linux.RootfsPropagation = "sideways"; return s }, stage: container.StageRootfs},
		{name: "missing cwd", spec: func() *specs.Spec { s := good(); s.Process.Cwd = "/no/such/dir"; return s }, stage: container.StageProcess},
		{name: "bad seccomp operator", spec: func() *specs.Spec {
			s := good()
			s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"mkdir"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 0, Op: "SCMP_CMP_SIDEWAYS"}}},
			}}
			return s
		}, stage: container.StageSeccomp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := tc.id
			if id == "" {
				id = "bad-" + strings.ReplaceAll(tc.name, " ", "-")
			}
			c, err := container.Create(context.Background(), container.Config{ID: id, Spec: tc.spec(), CgroupParent: testCgroupParent})
			if err == nil {
				c.Destroy()
				t.Fatal("create succeeded")
			}
			t.Log(err)
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err does not wrap %v", tc.want)
			}
			var ie *container.InitError
			if tc.stage != "" && (!errors.As(err, &ie) || ie.Stage != tc.stage) {
				t.Errorf("want an InitError at stage %s", tc.stage)
			}
			if !strings.Contains(id, "/") {
				assertNoCgroup(t, testCgroupParent+"/"+id)
			}
		})
	}
}

func TestDockerDefaultSeccomp(t *testing.T) {
	f := newFixture(t)
	spec := f.spec("sh", "-c", `echo start; grep Seccomp: /proc/self/status
mount -t tmpfs none /mnt 2>&1 && echo MOUNT=ok || echo MOUNT=denied
echo end`)
	// The profile as Docker makes it for the default capabilities...
	prof, err := testspec.DockerSeccomp(spec)
	if err != nil {
		t.Fatal(err)
	}
	spec.Linux.Seccomp = prof
	// ...then CAP_SYS_ADMIN on top: mount is now allowed by capabilities
	// and only the filter can refuse it.
	caps := spec.Process.Capabilities
	caps.Bounding = append(caps.Bounding, "CAP_SYS_ADMIN")
	caps.Effective = append(caps.Effective, "CAP_SYS_ADMIN")
	caps.Permitted = append(caps.Permitted, "CAP_SYS_ADMIN")
	f.mustStart(spec)
	if ws := f.wait(10 * time.Second); ws.ExitStatus() != 0 {
		t.Fatalf("exit %v: %s", ws, f.output())
	}
	out := f.output()
	t.Logf("output:\n%s", out)
	for _, s := range []string{"start", "Seccomp:\t2", "MOUNT=denied", "end"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q", s)
		}
	}
}

// A preforked init, started before the container was known, becomes the
// container: same namespaces, the streams it was given only at Create,
// the cgroup, and PID 1.
func TestPreforkedInitBecomesTheContainer(t *testing.T) {
	f := newFixture(t)
	pre, err := container.Prefork(container.DefaultNamespaces | unix.CLONE_NEWNET)
	if err != nil {
		t.Fatal(err)
	}
	prePid := pre.Pid()
	f.prefork = pre
	spec := f.spec("sh", "-c", "echo $$; hostname; echo to-stderr >&2; cat /proc/self/cgroup; exit 7")
	spec.Hostname = "pre-1"
	c := f.mustStart(spec)
	if c.Pid() != prePid {
		t.Errorf("container pid %d, want the preforked init's %d", c.Pid(), prePid)
	}
	ws := f.wait(20 * time.Second)
	out := f.output()
	t.Logf("output:\n%s", out)
	if ws.ExitStatus() != 7 {
		t.Errorf("exit status %v, want 7", ws)
	}
	lines := strings.Split(out, "\n")
	if len(lines) < 3 || lines[0] != "1" || lines[1] != "pre-1" {
		t.Errorf("output %q: want pid 1 and hostname pre-1", out)
	}
	if !strings.Contains(out, "to-stderr") {
		t.Error("stderr of the preforked init did not reach the container's stderr")
	}
	if !strings.Contains(out, "memory:"+c.CgroupPath()) {
		t.Errorf("preforked init not in the container's cgroup %s", c.CgroupPath())
	}
}

// A cgroup made ahead with the prefork in it (a warm shim's, during its
// adoption) is the container's: same path, the spec's limits, the init
// in it. One made under another parent is removed, and Create makes the
// right one.
func TestPreparedCgroupBecomesTheContainers(t *testing.T) {
	f := newFixture(t)
	pre, err := container.Prefork(container.DefaultNamespaces | unix.CLONE_NEWNET)
	if err != nil {
		t.Fatal(err)
	}
	spec := f.spec("sh", "-c", "cat /proc/self/cgroup")
	limit := int64(64 << 20)
	spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}
	id := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name()))
	load := func() (*container.Spec, error) {
		raw, err := json.Marshal(spec)
		if err != nil {
			return nil, err
		}
		return container.ParseSpec(raw)
	}
	f.prefork, f.cgroup = pre, container.PrepareCgroup(load, testCgroupParent, id, pre, nil)
	if got := f.cgroup.Spec(); got == nil || got.Terminal() != spec.Process.Terminal {
		t.Fatalf("the prepared cgroup's spec: %v, want the one it was made from", got)
	}
	c := f.mustStart(spec)
	f.wait(20 * time.Second)
	if out := f.output(); !strings.Contains(out, "memory:"+c.CgroupPath()) {
		t.Errorf("init not in the container's cgroup %s:\n%s", c.CgroupPath(), out)
	}
	got, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", c.CgroupPath(), "memory.limit_in_bytes"))
	if err != nil || strings.TrimSpace(string(got)) != strconv.FormatInt(limit, 10) {
		t.Errorf("memory limit %q (%v), want %d", got, err, limit)
	}

	// Made under another parent: not taken, and removed.
	g := newFixture(t)
	other := testCgroupParent + "-other"
	g.prefork, err = container.Prefork(container.DefaultNamespaces | unix.CLONE_NEWNET)
	if err != nil {
		t.Fatal(err)
	}
	g.cgroup = container.PrepareCgroup(load, other, id+"-2", g.prefork, nil)
	spec2 := g.spec("true")
	c2 := g.mustStart(spec2)
	g.wait(20 * time.Second)
	if strings.HasPrefix(c2.CgroupPath(), other+"/") {
		t.Errorf("container in the prepared cgroup %s under the wrong parent", c2.CgroupPath())
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", other, id+"-2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the cgroup prepared under %s is still there (%v)", other, err)
	}
	if cg, err := cgroup.Load(other); err == nil {
		cg.Delete()
	}
}

// A warm shim's group, made before its adoption with the prefork in it,
// becomes the container's by a rename: the same group (a setting written
// to it beforehand is still there), at the container's path, with the
// spec's limits when they differ from those it was made with. One under
// another parent than the container's is removed once the init has left.
func TestWarmCgroupBecomesTheContainers(t *testing.T) {
	if !cgroup.CanRename() {
		t.Skip("cgroup v2 host: warm groups are not made (no rename); TestPreparedCgroupBecomesTheContainers covers its path")
	}
	limit, warmLimit := int64(64<<20), int64(48<<20)
	for _, tc := range []struct {
		name        string
		warmParent  string
		warmLimit   int64
		wantRenamed bool
	}{
		{"same resources", testCgroupParent, limit, true},
		{"other resources", testCgroupParent, warmLimit, true},
		{"other parent", testCgroupParent + "-warm", limit, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			id := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name())) // as f.create names it
			pre, err := container.Prefork(container.DefaultNamespaces | unix.CLONE_NEWNET)
			if err != nil {
				t.Fatal(err)
			}
			warm, err := container.NewWarmCgroup(tc.warmParent, id, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &tc.warmLimit}}, pre)
			if err != nil {
				pre.Close()
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if cg, err := cgroup.Load(tc.warmParent + "/" + container.WarmCgroupPrefix + id); err == nil {
					cg.Delete()
				}
				if cg, err := cgroup.Load(tc.warmParent); err == nil && tc.warmParent != testCgroupParent {
					cg.Delete()
				}
			})
			warmDir := filepath.Join("/sys/fs/cgroup/memory", tc.warmParent, container.WarmCgroupPrefix+id)
			// A setting not among the resources: only the same group has it.
			if err := os.WriteFile(filepath.Join(warmDir, "memory.soft_limit_in_bytes"), []byte("33554432"), 0o644); err != nil {
				t.Fatal(err)
			}
			spec := f.spec("sh", "-c", "cat /proc/self/cgroup")
			spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}
			load := func() (*container.Spec, error) {
				raw, err := json.Marshal(spec)
				if err != nil {
					return nil, err
				}
				return container.ParseSpec(raw)
			}
			f.prefork, f.cgroup = pre, container.PrepareCgroup(load, testCgroupParent, id, pre, warm)
			c := f.mustStart(spec)
			f.wait(20 * time.Second)
			if want := testCgroupParent + "/" + id; c.CgroupPath() != want {
				t.Errorf("container's cgroup %s, want %s", c.CgroupPath(), want)
			}
			if out := f.output(); !strings.Contains(out, "memory:"+c.CgroupPath()) {
				t.Errorf("init not in the container's cgroup %s:\n%s", c.CgroupPath(), out)
			}
			dir := filepath.Join("/sys/fs/cgroup/memory", c.CgroupPath())
			got, err := os.ReadFile(filepath.Join(dir, "memory.limit_in_bytes"))
			if err != nil || strings.TrimSpace(string(got)) != strconv.FormatInt(limit, 10) {
				t.Errorf("memory limit %q (%v), want the spec's %d", got, err, limit)
			}
			soft, _ := os.ReadFile(filepath.Join(dir, "memory.soft_limit_in_bytes"))
			if renamed := strings.TrimSpace(string(soft)) == "33554432"; renamed != tc.wantRenamed {
				t.Errorf("container's group is the warm one renamed: %v, want %v", renamed, tc.wantRenamed)
			}
			if _, err := os.Stat(warmDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("warm group %s still there (%v)", warmDir, err)
			}
		})
	}
}

// A prefork made with other namespaces than the spec asks for is not
// used: Create kills and reaps it and starts a fresh init; nothing of the
// prefork remains.
func TestMismatchedPreforkIsDiscarded(t *testing.T) {
	f := newFixture(t)
	pre, err := container.Prefork(container.DefaultNamespaces) // spec wants a new netns too
	if err != nil {
		t.Fatal(err)
	}
	prePid := pre.Pid()
	f.prefork = pre
	c := f.mustStart(f.spec("sh", "-c", "echo ran"))
	if c.Pid() == prePid {
		t.Fatal("a prefork without the spec's network namespace was used")
	}
	if ws := f.wait(20 * time.Second); ws.ExitStatus() != 0 || !strings.Contains(f.output(), "ran") {
		t.Fatalf("exit %v, output %q", ws, f.output())
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", prePid)); err == nil {
		t.Errorf("discarded prefork %d still exists (not killed or not reaped)", prePid)
	}
}

// An unused prefork is killed and reaped by Close, and a bad spec given
// with a prefork consumes it too.
func TestPreforkCloseAndFailedCreate(t *testing.T) {
	f := newFixture(t)
	pre, err := container.Prefork(container.DefaultNamespaces)
	if err != nil {
		t.Fatal(err)
	}
	pid := pre.Pid()
	pre.Close()
	pre.Close() // idempotent
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("closed prefork %d still exists", pid)
	}
	pre, err = container.Prefork(container.DefaultNamespaces | unix.CLONE_NEWNET)
	if err != nil {
		t.Fatal(err)
	}
	pid = pre.Pid()
	f.prefork = pre
	spec := f.spec("true")
	spec.Process.Args = nil
	if _, err := f.create(spec); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("create without args: %v, want invalid argument", err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("prefork %d given to a failed Create still exists", pid)
	}
}

// What is mounted after the prefork, even on a private mount (where
// nothing propagates), is in the container: the init makes its mount
// namespace at bootstrap, not at fork. berthd mounts the rootfs and pins
// the network namespace after the warm shim preforked.
func TestPreforkSeesMountsMadeAfterIt(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Dir(f.rootfs)
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	pre, err := container.Prefork(container.DefaultNamespaces | unix.CLONE_NEWNET)
	if err != nil {
		t.Fatal(err)
	}
	f.prefork = pre
	late := filepath.Join(f.rootfs, "late")
	if err := os.Mkdir(late, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", late, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(late, unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(late, "marker"), []byte("mounted-late\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.mustStart(f.spec("cat", "/late/marker"))
	if ws := f.wait(20 * time.Second); ws.ExitStatus() != 0 || !strings.Contains(f.output(), "mounted-late") {
		t.Fatalf("exit %v, output %q: the mount made after the prefork is missing", ws, f.output())
	}
}

// A shim that stops without Create (berthd gave up on the container)
// removes a warm group it could not rename, once its prefork is gone: the
// bundle's cleanup knows only the container's group.
func TestWarmCgroupReleasedWithoutCreate(t *testing.T) {
	if !cgroup.CanRename() {
		t.Skip("cgroup v2 host: warm groups are not made")
	}
	needRoot(t)
	id := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name()))
	warmParent := testCgroupParent + "-warm2"
	pre, err := container.Prefork(container.DefaultNamespaces | unix.CLONE_NEWNET)
	if err != nil {
		t.Fatal(err)
	}
	warm, err := container.NewWarmCgroup(warmParent, id, &specs.LinuxResources{}, pre)
	if err != nil {
		pre.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range []string{warmParent + "/" + container.WarmCgroupPrefix + id, warmParent, testCgroupParent + "/" + id} {
			if cg, err := cgroup.Load(p); err == nil {
				cg.Delete()
			}
		}
	})
	// The bundle's config.json cannot be read: the preparation stops
	// there, the init still in the warm group.
	load := func() (*container.Spec, error) { return nil, os.ErrNotExist }
	prepared := container.PrepareCgroup(load, testCgroupParent, id, pre, warm)
	prepared.Spec()
	pre.Close()
	prepared.ReleaseWarm()
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", warmParent, container.WarmCgroupPrefix+id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("warm group still there after ReleaseWarm (%v)", err)
	}
}
