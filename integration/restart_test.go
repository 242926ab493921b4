package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/integration/fixture"
)

// containerState reads state, exit code, restart count and pid through
// `berthctl inspect`, as a user would.
type containerState struct {
	State        string
	ExitCode     int
	RestartCount int
	Pid          int
}

func (d *daemon) containerState(ref string) containerState {
	d.t.Helper()
	var c struct {
		Status struct {
			State        string `json:"state"`
			ExitCode     int    `json:"exitCode"`
			RestartCount int    `json:"restartCount"`
			Pid          int    `json:"pid"`
		} `json:"status"`
	}
	out := d.mustCtl("inspect", "--type", "container", ref)
	var list []json.RawMessage
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 {
		d.t.Fatalf("inspect %s: %v\n%s", ref, err, out)
	}
	if err := json.Unmarshal(list[0], &c); err != nil {
		d.t.Fatal(err)
	}
	return containerState{strings.TrimPrefix(c.Status.State, "CONTAINER_STATE_"), c.Status.ExitCode, c.Status.RestartCount, c.Status.Pid}
}

// eventually polls cond until it holds or the deadline passes; it guards
// against hangs, not a speed target.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRestartPolicies(t *testing.T) {
	reg := fixture.StartRegistry(t)
	reg.Push(t, reg.Ref("library/busybox:latest"), fixture.Busybox(t))
	d := startDaemon(t, withConfig(mirrorConfig(reg.Addr)))
	d.mustCtl("pull", "-q", "busybox")

	// on-failure:3 restarts a failing container three times, then stops.
	d.mustCtl("run", "-d", "--name", "flaky", "--restart", "on-failure:3", "busybox", "sh", "-c", "exit 3")
	eventually(t, "flaky restarted 3 times and stopped", 3*time.Minute, func() bool {
		s := d.containerState("flaky")
		return s.State == "EXITED" && s.RestartCount == 3
	})
	if s := d.containerState("flaky"); s.ExitCode != 3 {
		t.Fatalf("flaky: %+v, want exit code 3", s)
	}
	time.Sleep(time.Second)
	if s := d.containerState("flaky"); s.RestartCount != 3 || s.State != "EXITED" {
		t.Fatalf("flaky restarted past its limit: %+v", s)
	}
	if ps := d.mustCtl("ps", "-a", "--filter", "name=flaky"); !strings.Contains(ps, "Exited (3)") {
		t.Fatalf("ps -a:\n%s", ps)
	}

	// on-failure does not restart a clean exit.
	d.mustCtl("run", "-d", "--name", "clean", "--restart", "on-failure", "busybox", "true")
	eventually(t, "clean exited", 30*time.Second, func() bool { return d.containerState("clean").State == "EXITED" })
	time.Sleep(500 * time.Millisecond)
	if s := d.containerState("clean"); s.RestartCount != 0 {
		t.Fatalf("clean exit restarted: %+v", s)
	}

	// always: a container whose process dies is started again.
	d.mustCtl("run", "-d", "--name", "keeper", "--restart", "always", "busybox", "sleep", "1000")
	first := d.containerState("keeper")
	if first.State != "RUNNING" || first.Pid == 0 {
		t.Fatalf("keeper: %+v", first)
	}
	syscall.Kill(first.Pid, syscall.SIGKILL)
	eventually(t, "keeper restarted", 2*time.Minute, func() bool {
		s := d.containerState("keeper")
		return s.State == "RUNNING" && s.RestartCount == 1 && s.Pid != first.Pid
	})

	// always survives a berthd restart: still running, same process.
	before := d.containerState("keeper")
	d.restart()
	if s := d.containerState("keeper"); s.State != "RUNNING" || s.Pid != before.Pid {
		t.Fatalf("keeper after berthd restart: %+v, was %+v", s, before)
	}
	// ...and when it dies while berthd is down, berthd starts it again.
	d.kill()
	syscall.Kill(before.Pid, syscall.SIGKILL)
	time.Sleep(200 * time.Millisecond)
	d.start()
	eventually(t, "keeper restarted after berthd came back", 2*time.Minute, func() bool {
		s := d.containerState("keeper")
		return s.State == "RUNNING" && s.Pid != before.Pid
	})

	// A stopped `always` container stays stopped.
	d.mustCtl("stop", "-t", "1", "keeper")
	time.Sleep(time.Second)
	if s := d.containerState("keeper"); s.State != "EXITED" {
		t.Fatalf("keeper after stop: %+v", s)
	}
	out := d.mustCtl("inspect", "--format", "{{.status.restartCount}}", "keeper")
	if n, err := strconv.Atoi(strings.TrimSpace(out)); err != nil || n < 1 {
		t.Fatalf("restart count in inspect: %q", out)
	}
	d.mustCtl("rm", "-f", "flaky", "clean", "keeper")
}

// A process that exits at once races its own start: the shim may reap it
// before Start has recorded itself. Its events still come start first,
// then exit, and a restart policy sees every exit: a late start event
// once put a restarting container back to RUNNING with nothing running,
// and its restarts stopped (a CI hang of TestRestartPolicies).
func TestFastExitsComeAfterTheirStart(t *testing.T) {
	reg := fixture.StartRegistry(t)
	reg.Push(t, reg.Ref("library/busybox:latest"), fixture.Busybox(t))
	d := startDaemon(t, withConfig(mirrorConfig(reg.Addr)))
	d.mustCtl("pull", "-q", "busybox")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ev := exec.CommandContext(ctx, filepath.Join(binDir, "berthctl"), "--address", d.socket, "events", "--filter", "type=task", "--format", "json")
	var out syncBuffer
	ev.Stdout = &out
	if err := ev.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { ev.Process.Kill(); ev.Wait() }()
	// The subscription counts once an event shows.
	for i := 0; !strings.Contains(out.String(), "/tasks/exit"); i++ {
		if i == 100 {
			t.Fatalf("no task event seen: %q", out.String())
		}
		d.mustCtl("run", "--rm", "--network", "none", "busybox", "true")
		time.Sleep(50 * time.Millisecond)
	}

	const n = 8
	for i := 0; i < n; i++ {
		d.mustCtl("run", "-d", "--network", "none", "--name", fmt.Sprintf("fast%d", i), "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 3")
	}
	ids := map[string]string{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("fast%d", i)
		eventually(t, name+" restarted twice and exited", 2*time.Minute, func() bool {
			s := d.containerState(name)
			return s.State == "EXITED" && s.RestartCount == 2
		})
		if s := d.containerState(name); s.ExitCode != 3 {
			t.Fatalf("%s: %+v, want exit code 3", name, s)
		}
		ids[strings.TrimSpace(d.mustCtl("inspect", "--format", "{{.id}}", name))] = name
	}
	// Each of the three runs of each container: its start, then its exit.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var e struct {
			Topic string `json:"topic"`
			ID    string `json:"id"`
		}
		seq := map[string]string{}
		for _, line := range strings.Split(out.String(), "\n") {
			if json.Unmarshal([]byte(line), &e) == nil && ids[e.ID] != "" {
				switch e.Topic {
				case "/tasks/start":
					seq[e.ID] += "s"
				case "/tasks/exit":
					seq[e.ID] += "x"
				}
			}
		}
		bad := ""
		for id, name := range ids {
			if seq[id] != "sxsxsx" {
				bad += fmt.Sprintf(" %s:%q", name, seq[id])
			}
		}
		if bad == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task events out of order (s start, x exit; want sxsxsx):%s", bad)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < n; i++ {
		d.mustCtl("rm", "-f", fmt.Sprintf("fast%d", i))
	}
}
