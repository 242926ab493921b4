package integration

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/agent/oci"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
	"github.com/berth-dev/berth/shim/container"
)

func TestRunShowsContainerView(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, w, out := r.runToExit(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh", "-c", "echo $$; hostname; id; cat /proc/self/cgroup; ls /"}})
	if w.ExitStatus != 0 {
		t.Fatalf("exit %d, output:\n%s", w.ExitStatus, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 4 || lines[0] != "1" {
		t.Fatalf("the shell is not PID 1:\n%s", out)
	}
	if lines[1] != c.Id[:12] {
		t.Errorf("hostname %q, want the short id %q", lines[1], c.Id[:12])
	}
	if !strings.HasPrefix(lines[2], "uid=0(root) gid=0(root)") {
		t.Errorf("id: %q", lines[2])
	}
	root := strings.Fields(strings.Join(lines[3:], " "))
	has := map[string]bool{}
	for _, f := range root {
		has[f] = true
	}
	for _, want := range []string{"bin", "etc", "proc", "dev", "sys", "tmp", "var"} {
		if !has[want] {
			t.Errorf("ls / lacks %s: %v", want, root)
		}
	}
	// Nothing of the host's own root: pick host entries the image lacks.
	ents, _ := os.ReadDir("/")
	for _, e := range ents {
		switch e.Name() {
		case "bin", "etc", "proc", "dev", "sys", "tmp", "var", "usr", "root", "home", "sbin":
			continue
		}
		if has[e.Name()] {
			t.Errorf("host's /%s is visible in the container", e.Name())
		}
	}
	got, err := r.cc.GetContainer(ctx, &berthv1.GetContainerRequest{Id: c.Id})
	if err != nil {
		t.Fatal(err)
	}
	if st := got.Container.Status; st.State != berthv1.ContainerState_CONTAINER_STATE_EXITED || st.ExitCode != 0 || st.FinishedAt == nil {
		t.Errorf("status after exit: %+v", st)
	}
}

// cgroupFile reads a file of the container's cgroup on the host.
func (r *rt) cgroupFile(id, v2name, v1ctrl, v1name string) string {
	r.t.Helper()
	p := "/sys/fs/cgroup" + r.cgParent + "/" + id + "/" + v2name
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
		p = "/sys/fs/cgroup/" + v1ctrl + r.cgParent + "/" + id + "/" + v1name
	}
	data, err := os.ReadFile(p)
	if err != nil {
		r.t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

func TestResourceLimits(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("memory hog is OOM-killed", func(t *testing.T) {
		const mem = 32 << 20
		sub, err := berthv1.NewEventsServiceClient(r.d.conn()).Subscribe(ctx, &berthv1.SubscribeRequest{Topics: []string{"/tasks/oom", "/tasks/exit"}})
		if err != nil {
			t.Fatal(err)
		}
		c, w, out := r.runToExit(ctx, &berthv1.ContainerSpec{
			Cmd:       []string{"sh", "-c", "echo start; x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"},
			Resources: &berthv1.Resources{MemoryBytes: mem, MemorySwapBytes: mem},
		})
		if w.ExitStatus != 137 || !w.OomKilled {
			t.Fatalf("wait: exit %d oom %v, want 137 and OOM killed; output %q", w.ExitStatus, w.OomKilled, out)
		}
		got, err := r.cc.GetContainer(ctx, &berthv1.GetContainerRequest{Id: c.Id})
		if err != nil {
			t.Fatal(err)
		}
		if st := got.Container.Status; !st.OomKilled || st.ExitCode != 137 || st.State != berthv1.ContainerState_CONTAINER_STATE_EXITED {
			t.Fatalf("status %+v, want exited 137 with oom_killed", st)
		}
		// The events: /tasks/oom, then the exit naming the OOM kill.
		var topics []string
		for len(topics) < 2 {
			ev, err := sub.Recv()
			if err != nil {
				t.Fatalf("events: %v (got %v)", err, topics)
			}
			e := ev.GetEvent()
			if e == nil || e.Id != c.Id {
				continue
			}
			topics = append(topics, e.Topic)
			if e.Topic == "/tasks/exit" && (e.Attributes["exit_code"] != "137" || e.Attributes["oom_killed"] != "true") {
				t.Errorf("exit event %v, want exit_code 137 and oom_killed", e.Attributes)
			}
		}
		if topics[0] != "/tasks/oom" || topics[1] != "/tasks/exit" {
			t.Errorf("events %v, want /tasks/oom then /tasks/exit", topics)
		}
	})

	t.Run("pids limit contains a fork bomb", func(t *testing.T) {
		c := r.run(ctx, &berthv1.ContainerSpec{
			// The bomb runs in a child shell (ash exits when a fork
			// fails); PID 1 then becomes a sleep without forking, so the
			// cgroup keeps what the bomb could start.
			Cmd:       []string{"sh", "-c", `sh -c 'i=0; while [ $i -lt 40 ]; do sleep 60 & i=$((i+1)); done'; echo done; exec sleep 60`},
			Resources: &berthv1.Resources{PidsLimit: 10},
		})
		waitForStderr(t, r, ctx, c.Id, "can't fork")
		stats, err := r.tc.Stats(ctx, &berthv1.StatsRequest{ContainerId: c.Id})
		if err != nil {
			t.Fatal(err)
		}
		if stats.Pids.Limit != 10 || stats.Pids.Current > 10 || stats.Pids.Current < 8 {
			t.Fatalf("pids stats %+v, want limit 10 and the bomb filling it (8-10 running)", stats.Pids)
		}
		r.remove(ctx, c.Id)
	})

	t.Run("cpus 0.5 sets the quota", func(t *testing.T) {
		c := r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sleep", "60"}, Resources: &berthv1.Resources{NanoCpus: 500_000_000}})
		if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
			if got := r.cgroupFile(c.Id, "cpu.max", "", ""); got != "50000 100000" {
				t.Errorf("cpu.max %q, want 50000 100000", got)
			}
		} else if got := r.cgroupFile(c.Id, "", "cpu", "cpu.cfs_quota_us"); got != "50000" {
			t.Errorf("cpu.cfs_quota_us %q, want 50000", got)
		}
		// Pause and resume freeze the group.
		if _, err := r.tc.PauseTask(ctx, &berthv1.PauseTaskRequest{ContainerId: c.Id}); err != nil {
			t.Fatal(err)
		}
		task, err := r.tc.GetTask(ctx, &berthv1.GetTaskRequest{ContainerId: c.Id})
		if err != nil || task.Task.Status != berthv1.TaskStatus_TASK_STATUS_PAUSED {
			t.Fatalf("after pause: %v %v", task, err)
		}
		if _, err := r.tc.ResumeTask(ctx, &berthv1.ResumeTaskRequest{ContainerId: c.Id}); err != nil {
			t.Fatal(err)
		}
		r.remove(ctx, c.Id)
		if dirs := cgroupDirs(r.cgParent + "/" + c.Id); len(dirs) != 0 {
			t.Errorf("cgroup left after delete: %v", dirs)
		}
	})
}

func TestExitCodesAndStop(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, w, _ := r.runToExit(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh", "-c", "exit 42"}}); w.ExitStatus != 42 {
		t.Errorf("exit %d, want 42", w.ExitStatus)
	}

	// stop sends SIGTERM first: a handler runs and picks the exit code.
	c := r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh", "-c", `trap "echo got TERM; exit 3" TERM; echo ready; while true; do sleep 0.1; done`}})
	waitForLog(t, r, ctx, c.Id, "ready")
	st, err := r.tc.StopTask(ctx, &berthv1.StopTaskRequest{ContainerId: c.Id, TimeoutSeconds: 10})
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := r.logs(ctx, &berthv1.LogsRequest{ContainerId: c.Id}); st.ExitStatus != 3 || !strings.Contains(out, "got TERM") {
		t.Errorf("stop: exit %d, output %q; want 3 after the TERM handler", st.ExitStatus, out)
	}

	// A process ignoring SIGTERM gets SIGKILL after the timeout.
	c = r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh", "-c", `trap "" TERM; echo ready; while true; do sleep 0.1; done`}})
	waitForLog(t, r, ctx, c.Id, "ready")
	begin := time.Now()
	st, err = r.tc.StopTask(ctx, &berthv1.StopTaskRequest{ContainerId: c.Id, TimeoutSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); st.ExitStatus != 137 || took < time.Second || took > 5*time.Second {
		t.Errorf("stop of a TERM-ignoring process: exit %d after %v; want 137 after about 1s", st.ExitStatus, took)
	}
}

// waitForStderr waits until the container's stderr contains s.
func waitForStderr(t *testing.T, r *rt, ctx context.Context, id, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, errOut := r.logs(ctx, &berthv1.LogsRequest{ContainerId: id})
		if strings.Contains(errOut, s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q never appeared on the stderr of %s; got %q", s, id, errOut)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitForLog waits until the container's stdout contains s.
func waitForLog(t *testing.T, r *rt, ctx context.Context, id, s string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := r.logs(ctx, &berthv1.LogsRequest{ContainerId: id})
		if strings.Contains(out, s) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q never appeared in the log of %s; got %q", s, id, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCommandNotFoundLeavesNothing(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := r.create(ctx, &berthv1.ContainerSpec{Cmd: []string{"no-such-command"}})
	_, err := r.tc.CreateTask(ctx, &berthv1.CreateTaskRequest{ContainerId: c.Id})
	if err == nil {
		_, err = r.tc.StartTask(ctx, &berthv1.StartTaskRequest{ContainerId: c.Id})
	}
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "no-such-command") || !strings.Contains(err.Error(), "exit code 127") {
		t.Fatalf("run of a missing command: %v; want NotFound naming it, with exit code 127", err)
	}
	got, err := r.cc.GetContainer(ctx, &berthv1.GetContainerRequest{Id: c.Id})
	if err != nil || got.Container.Status.ExitCode != 127 {
		t.Fatalf("container status after the failure: %+v %v", got.GetContainer().GetStatus(), err)
	}
	if p := processesMentioning(r.d.state); len(p) != 0 {
		t.Errorf("processes left: %v", p)
	}
	if m := containerMountsUnder(r.d.state); len(m) != 0 {
		t.Errorf("mounts left: %v", m)
	}
	if dirs := cgroupDirs(r.cgParent + "/" + c.Id); len(dirs) != 0 {
		t.Errorf("cgroup left: %v", dirs)
	}
	if ents, _ := os.ReadDir(r.d.state + "/tasks/default"); len(ents) != 0 {
		t.Errorf("bundle left: %v", ents)
	}
	if ents, _ := os.ReadDir(r.d.state + "/s"); len(ents) != 0 {
		t.Errorf("shim socket left: %v", ents)
	}
}

func TestDefaultContainerIsConfined(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, w, out := r.runToExit(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh", "-c", `
mount -t tmpfs none /mnt 2>/dev/null; echo mount=$?
echo kcore=$(cat /proc/kcore | wc -c)
echo x 2>/dev/null > /proc/sys/kernel/domainname; echo procsys=$?
grep CapEff /proc/self/status`}})
	if w.ExitStatus != 0 {
		t.Fatalf("exit %d: %s", w.ExitStatus, out)
	}
	for _, want := range []string{"mount=1\n", "kcore=0\n", "procsys=1\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", strings.TrimSpace(want), out)
		}
	}
	mask, err := container.CapabilityMask(oci.DefaultCapabilities())
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("CapEff:\t%016x", mask); !strings.Contains(out, want) {
		t.Errorf("capabilities: want %q in\n%s", want, out)
	}
}

func TestAutoRemoveDeletesAfterExit(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh", "-c", "exit 4"}, AutoRemove: true})
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := r.cc.GetContainer(ctx, &berthv1.GetContainerRequest{Id: c.Id})
		if status.Code(err) == codes.NotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("--rm container still there 10s after its exit: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The record goes first (crash safety); the task's teardown follows
	// at once.
	for {
		m, p := containerMountsUnder(r.d.state), processesMentioning(r.d.state)
		if len(m) == 0 && len(p) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("--rm left mounts %v and shims %v", m, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestExitedContainerStartsAgain(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, w, _ := r.runToExit(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh", "-c", "echo run; exit 2"}})
	if w.ExitStatus != 2 {
		t.Fatalf("first run exit %d", w.ExitStatus)
	}
	// Its old task is still there (not deleted): starting again replaces it.
	r.start(ctx, c.Id)
	if w := r.wait(ctx, c.Id); w.ExitStatus != 2 {
		t.Fatalf("second run exit %d", w.ExitStatus)
	}
	if out, _ := r.logs(ctx, &berthv1.LogsRequest{ContainerId: c.Id}); out != "run\nrun\n" {
		t.Errorf("log of two runs: %q", out)
	}
	// A running task is not replaced.
	c = r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sleep", "60"}})
	if _, err := r.tc.CreateTask(ctx, &berthv1.CreateTaskRequest{ContainerId: c.Id}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second task for a running container: %v, want FailedPrecondition", err)
	}
}
