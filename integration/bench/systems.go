package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/integration/fixture"
)

// system is one container engine under test, driven through its CLI.
type system interface {
	name() string
	start() error
	// stop ends the agent; kill ends it with SIGKILL, as a crash would.
	stop()
	kill()
	pull(ref string) error
	// removeImage removes ref and collects its blobs and snapshots, so the
	// next pull is cold.
	removeImage(ref string) error
	// run runs a container; with detach it returns once it runs.
	run(id string, rm, detach bool, ref string, args ...string) error
	exec(id, execID string, args ...string) error
	remove(id string) error
	// running counts the containers the agent reports running.
	running() (int, error)
	agentPid() int
	// shimPids are the shim processes of this system's containers.
	shimPids() ([]int, error)
}

// runCmd runs a CLI command with a deadline and returns its output.
func runCmd(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

type agentProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    *os.File
}

func startAgent(logPath, bin string, args ...string) (*agentProc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Own process group: a Ctrl-C of make bench must not reach it first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &agentProc{cmd: cmd, exited: make(chan struct{}), log: f}
	go func() { cmd.Wait(); close(p.exited) }()
	return p, nil
}

func (p *agentProc) signal(sig syscall.Signal, wait time.Duration) {
	if p == nil {
		return
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(wait):
		p.cmd.Process.Kill()
		<-p.exited
	}
	p.log.Close()
}

func waitFor(timeout time.Duration, what string, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not ready within %s", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// berth drives a private berthd through berthctl.
type berth struct {
	bin, dir, sock string
	agent          *agentProc
}

func newBerth(bin, dir string) *berth {
	return &berth{bin: bin, dir: dir, sock: filepath.Join(dir, "state", "berth.sock")}
}

func (b *berth) name() string { return "berth" }

func (b *berth) start() error {
	var err error
	b.agent, err = startAgent(filepath.Join(b.dir, "berthd.log"), filepath.Join(b.bin, "berthd"),
		"--root", filepath.Join(b.dir, "root"), "--state", filepath.Join(b.dir, "state"), "--address", b.sock, "--log-level", "warn")
	if err != nil {
		return err
	}
	return waitFor(30*time.Second, "berthd", func() bool { _, err := b.ctl(5*time.Second, "version"); return err == nil })
}

func (b *berth) ctl(timeout time.Duration, args ...string) (string, error) {
	return runCmd(timeout, filepath.Join(b.bin, "berthctl"), append([]string{"--address", b.sock}, args...)...)
}

func (b *berth) stop()         { b.agent.signal(syscall.SIGTERM, 30*time.Second); b.agent = nil }
func (b *berth) kill()         { b.agent.signal(syscall.SIGKILL, 10*time.Second); b.agent = nil }
func (b *berth) agentPid() int { return b.agent.cmd.Process.Pid }

func (b *berth) pull(ref string) error {
	_, err := b.ctl(10*time.Minute, "pull", "-q", ref)
	return err
}

func (b *berth) removeImage(ref string) error {
	if _, err := b.ctl(time.Minute, "rmi", ref); err != nil {
		return err
	}
	_, err := b.ctl(5*time.Minute, "system", "prune", "-f")
	return err
}

func (b *berth) run(id string, rm, detach bool, ref string, args ...string) error {
	a := []string{"run", "--name", id}
	if rm {
		a = append(a, "--rm")
	}
	if detach {
		a = append(a, "-d")
	}
	_, err := b.ctl(time.Minute, append(append(a, ref), args...)...)
	return err
}

// runNetwork is `run --rm --network mode`, attached, as start latency's run.
func (b *berth) runNetwork(id, mode, ref string, args ...string) error {
	_, err := b.ctl(time.Minute, append([]string{"run", "--rm", "--name", id, "--network", mode, ref}, args...)...)
	return err
}

// waitRemoved waits until berthd has no container left and is done with
// what removals leave running: --rm removes a container in the background
// after run returned, and its log directory, <root>/containers/<ns>/<id>,
// goes last; the network is released after that (CNI DEL), and the warm
// network attachment made again. So one sample's background work is
// charged to its own cycle, never to the next sample's start. Reading
// directories costs no exec, so the wait does not load the machine.
func (b *berth) waitRemoved(timeout time.Duration) error {
	dir := filepath.Join(b.dir, "root", "containers", "default")
	attachments := filepath.Join(b.dir, "state", "net", "attachments")
	deadline := time.Now().Add(timeout)
	for {
		entries, err := os.ReadDir(dir)
		if ((err == nil && len(entries) == 0) || os.IsNotExist(err)) && networkSettled(attachments) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containers not removed within %s (%d left, %v)", timeout, len(entries), err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// networkSettled reports whether no container's network attachment is
// left and the warm one, if any, is complete (its record has an address).
func networkSettled(dir string) bool {
	left, _ := filepath.Glob(filepath.Join(dir, "default", "*.json"))
	if len(left) > 0 {
		return false
	}
	warm, _ := filepath.Glob(filepath.Join(dir, "_warm", "*.json"))
	for _, p := range warm {
		if b, err := os.ReadFile(p); err != nil || !strings.Contains(string(b), `"ip":`) {
			return false
		}
	}
	return true
}

func (b *berth) exec(id, _ string, args ...string) error {
	_, err := b.ctl(time.Minute, append([]string{"exec", id}, args...)...)
	return err
}

func (b *berth) remove(id string) error {
	_, err := b.ctl(time.Minute, "rm", "-f", id)
	return err
}

func (b *berth) running() (int, error) {
	out, err := b.ctl(time.Minute, "ps", "-q")
	if err != nil {
		return 0, err
	}
	return len(strings.Fields(out)), nil
}

// shimPids are the containers' shims: the idle warm shim (working
// directory still under <state>/warm, see runtime.warm_shims) serves no
// container and is left out.
func (b *berth) shimPids() ([]int, error) {
	all, err := pidsOf("berth-shim", b.dir)
	var pids []int
	for _, pid := range all {
		cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if !strings.HasPrefix(cwd, filepath.Join(b.dir, "state", "warm")+"/") {
			pids = append(pids, pid)
		}
	}
	return pids, err
}

// containerd drives a private containerd through ctr.
type containerd struct {
	dir, sock string
	agent     *agentProc
}

func newContainerd(dir string) *containerd {
	return &containerd{dir: dir, sock: filepath.Join(dir, "containerd.sock")}
}

func (c *containerd) name() string { return "containerd" }

func (c *containerd) start() error {
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
`, filepath.Join(c.dir, "root"), filepath.Join(c.dir, "state"), c.sock, c.sock+".ttrpc")
	cfgPath := filepath.Join(c.dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	var err error
	c.agent, err = startAgent(filepath.Join(c.dir, "containerd.log"), "containerd", "--config", cfgPath, "--log-level", "warn")
	if err != nil {
		return err
	}
	return waitFor(30*time.Second, "containerd", func() bool { _, err := c.ctr(5*time.Second, "version"); return err == nil })
}

func (c *containerd) ctr(timeout time.Duration, args ...string) (string, error) {
	return runCmd(timeout, "ctr", append([]string{"--address", c.sock, "--namespace", "bench"}, args...)...)
}

func (c *containerd) stop()         { c.agent.signal(syscall.SIGTERM, 30*time.Second); c.agent = nil }
func (c *containerd) kill()         { c.agent.signal(syscall.SIGKILL, 10*time.Second); c.agent = nil }
func (c *containerd) agentPid() int { return c.agent.cmd.Process.Pid }

func (c *containerd) pull(ref string) error {
	_, err := c.ctr(10*time.Minute, "images", "pull", "--plain-http", ref)
	return err
}

func (c *containerd) removeImage(ref string) error {
	_, err := c.ctr(5*time.Minute, "images", "rm", "--sync", ref)
	return err
}

func (c *containerd) run(id string, rm, detach bool, ref string, args ...string) error {
	a := []string{"run"}
	if rm {
		a = append(a, "--rm")
	}
	if detach {
		a = append(a, "-d")
	}
	_, err := c.ctr(time.Minute, append(append(a, ref, id), args...)...)
	return err
}

func (c *containerd) exec(id, execID string, args ...string) error {
	_, err := c.ctr(time.Minute, append([]string{"task", "exec", "--exec-id", execID, id}, args...)...)
	return err
}

func (c *containerd) remove(id string) error {
	c.ctr(time.Minute, "task", "kill", "-s", "SIGKILL", id)
	waitFor(10*time.Second, "task exit", func() bool {
		out, _ := c.ctr(5*time.Second, "task", "ls")
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == id && f[2] == "RUNNING" {
				return false
			}
		}
		return true
	})
	c.ctr(time.Minute, "task", "delete", id)
	_, err := c.ctr(time.Minute, "container", "delete", id)
	return err
}

func (c *containerd) running() (int, error) {
	out, err := c.ctr(time.Minute, "task", "ls")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[2] == "RUNNING" {
			n++
		}
	}
	return n, nil
}

func (c *containerd) shimPids() ([]int, error) { return pidsOf("containerd-shim-runc-v2", c.sock) }

// pidsOf finds processes whose executable is named exe and whose command
// line mentions marker (the system's private directory or socket), so an
// installed engine's shims on the same machine are not counted.
func pidsOf(exe, marker string) ([]int, error) {
	return fixture.Processes(func(pid int, args []string) bool {
		if filepath.Base(args[0]) != exe {
			return false
		}
		if marker != "" && !strings.Contains(strings.Join(args, "\x00"), marker) {
			// The shim's cwd is its bundle under the system's state dir.
			cwd, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "cwd"))
			if !strings.Contains(cwd, marker) && !strings.Contains(cwd, filepath.Dir(marker)) {
				return false
			}
		}
		return true
	})
}

// memory reads a process's PSS and RSS in KiB from smaps_rollup.
func memory(pid int) (pss, rss float64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "Pss:":
			pss = v
		case "Rss:":
			rss = v
		}
	}
	return pss, rss, nil
}
