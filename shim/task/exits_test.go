package task

import (
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// watchChild starts args as a child of the test and hands a pidfd of it to
// w, as the shim does with a container's init.
func watchChild(t *testing.T, w *exitWatcher, execID string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.add(pidfd, execID); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// Each process's exit is reported once, with its shell-style status,
// whatever the order in which they end; close ends the waits of the
// processes still running, reporting nothing for them.
func TestExitWatcher(t *testing.T) {
	out := make(chan exitEvent, 8)
	w := newExitWatcher(out)
	slow := watchChild(t, w, "slow", "sleep", "0.3")
	watchChild(t, w, "three", "sh", "-c", "exit 3")
	killed := watchChild(t, w, "killed", "sleep", "60")
	running := watchChild(t, w, "running", "sleep", "60")
	defer running.Process.Kill()
	if err := killed.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint32{"three": 3, "killed": 137, "slow": 0}
	for len(want) > 0 {
		select {
		case ev := <-out:
			st, ok := want[ev.execID]
			if !ok {
				t.Fatalf("unexpected or repeated exit of %q", ev.execID)
			}
			if ev.status != st {
				t.Fatalf("%s exited with %d, want %d", ev.execID, ev.status, st)
			}
			delete(want, ev.execID)
		case <-time.After(10 * time.Second):
			t.Fatalf("exits not reported: %v", want)
		}
	}
	// Reaped by the watcher: nothing is left for anyone else to wait for.
	if err := slow.Wait(); err == nil {
		t.Fatal("a reaped child could be waited for again")
	}
	w.close() // returns once every wait has ended
	select {
	case ev := <-out:
		t.Fatalf("exit of %q reported after close", ev.execID)
	default:
	}
	pidfd, err := unix.PidfdOpen(running.Process.Pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.add(pidfd, "late"); err == nil {
		t.Fatal("add after close succeeded")
	}
}
