package task

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// exitWatcher reaps the processes the shim knows, by pidfd, and reports
// each exit once. It never calls wait(-1): the container package reaps
// its own short-lived exec helpers, and a wildcard wait would steal them.
//
// Each process has a goroutine that waits for its pidfd in the Go
// runtime's poller (a pidfd polls readable when its process exits), so
// the wait holds no OS thread, and then reaps exactly that process with
// waitid(P_PIDFD). An earlier design gathered the pidfds in an epoll fd
// of its own, itself waited for in the poller; registering each with the
// poller needs no second epoll and no table of keys.
type exitWatcher struct {
	out chan<- exitEvent

	mu    sync.Mutex
	files map[*os.File]struct{} // the pidfds being waited for
	done  chan struct{}         // closed by close
	wg    sync.WaitGroup
}

// exitEvent is one reaped process.
type exitEvent struct {
	execID string
	status uint32
	at     time.Time
}

func newExitWatcher(out chan<- exitEvent) *exitWatcher {
	return &exitWatcher{out: out, files: map[*os.File]struct{}{}, done: make(chan struct{})}
}

// closed reports whether close has run; called with mu held.
func (w *exitWatcher) closed() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// add watches pidfd, which the watcher then owns and closes after
// reaping (or at once, on error). The descriptor's file status is made
// non-blocking: it must not share its open file description with a
// descriptor someone waits on (open a fresh one with pidfd_open rather
// than dup one).
func (w *exitWatcher) add(pidfd int, execID string) error {
	if err := unix.SetNonblock(pidfd, true); err != nil {
		unix.Close(pidfd)
		return err
	}
	f := os.NewFile(uintptr(pidfd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed() {
		f.Close()
		return os.ErrClosed
	}
	w.files[f] = struct{}{}
	w.wg.Add(1)
	go w.watch(f, rc, execID)
	return nil
}

// exitRecheck bounds how long the watcher trusts the runtime poller
// alone: it then looks at the pidfd itself, and warns if that finds an
// exit the poller did not report. None has been seen (a CI stall once
// blamed on a lost wakeup was a race between a fast exit and its start,
// fixed in Start); the recheck bounds the harm if one ever comes.
const exitRecheck = 5 * time.Second

// watch waits for one process's exit, reaps it and reports it; it ends
// early, reporting nothing, once close has run.
func (w *exitWatcher) watch(f *os.File, rc syscall.RawConn, execID string) {
	defer w.wg.Done()
	defer func() {
		w.mu.Lock()
		delete(w.files, f)
		w.mu.Unlock()
		f.Close()
	}()
	var (
		status uint32
		done   bool
	)
	// Made once: each is a closure that escapes, and the shim runs
	// without a collector (see berth-shim's memPolicy).
	reap := func(fd uintptr) bool {
		status, done = reapPidfd(int(fd))
		return done
	}
	recheck := func(fd uintptr) { reap(fd) }
	for !done {
		f.SetReadDeadline(time.Now().Add(exitRecheck))
		// Read calls reap until it returns true, parking in the runtime
		// poller in between; it fails once close has run, or at the
		// deadline.
		err := rc.Read(reap)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if rc.Control(recheck) == nil && done {
				slog.Warn("exit seen by the recheck, not the poller", "component", "exit watcher", "exec_id", execID)
			}
		case err != nil:
			return
		}
	}
	select {
	case w.out <- exitEvent{execID: execID, status: status, at: time.Now()}:
	case <-w.done:
	}
}

// reapPidfd reaps the process of pidfd if it has exited, with its
// shell-style status (255 if it cannot be had).
func reapPidfd(fd int) (status uint32, exited bool) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN, err == nil && info.Signo == 0:
			return 0, false // not yet exited
		case err != nil:
			// Not ours to reap (ECHILD): report it once it has exited,
			// with the status unknown.
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if n, perr := unix.Poll(pfd, 0); perr == nil && n == 0 {
				return 0, false
			}
			return 255, true
		}
		return exitStatus(&info), true
	}
}

// close stops every wait (their processes go unreported) and waits for
// the goroutines to end.
func (w *exitWatcher) close() {
	w.mu.Lock()
	if !w.closed() {
		close(w.done)
	}
	for f := range w.files {
		f.Close()
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// exitStatus turns a waitid result into a shell-style status: the exit
// code, or 128+signal for a killed process.
func exitStatus(info *unix.Siginfo) uint32 {
	// x/sys keeps the SIGCHLD fields opaque: si_status is at offset 24 on
	// 64-bit Linux, after si_pid and si_uid.
	raw := (*[32]byte)(unsafe.Pointer(info))
	st := binary.NativeEndian.Uint32(raw[24:28])
	const cldExited = 1
	if info.Code == cldExited {
		return st & 0xff
	}
	return 128 + st
}
