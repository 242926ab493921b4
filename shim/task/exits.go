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
// One goroutine waits on an epoll fd holding every registered pidfd; a
// pidfd polls readable when its process exits, and waitid(P_PIDFD) then
// reaps exactly that process. Registration from other goroutines is safe
// while it waits (the kernel allows concurrent epoll_ctl). The epoll fd is
// non-blocking and itself waited for by the Go runtime's poller (an epoll
// fd is readable while it has ready events), so the wait holds no OS
// thread: a thread blocked in epoll_wait costs a shim its stack and more.
type exitWatcher struct {
	epfd int
	ep   *os.File // epfd, for the runtime poller
	rc   syscall.RawConn
	out  chan<- exitEvent

	mu   sync.Mutex
	keys map[int32]string // pidfd → exec id ("" = init)
}

// exitEvent is one reaped process.
type exitEvent struct {
	execID string
	status uint32
	at     time.Time
}

func newExitWatcher(out chan<- exitEvent) (*exitWatcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ep := os.NewFile(uintptr(epfd), "pidfd-epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		return nil, err
	}
	return &exitWatcher{epfd: epfd, ep: ep, rc: rc, out: out, keys: map[int32]string{}}, nil
}

// add watches pidfd, which the watcher then owns and closes after reaping.
func (w *exitWatcher) add(pidfd int, execID string) error {
	w.mu.Lock()
	w.keys[int32(pidfd)] = execID
	w.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(pidfd)}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, pidfd, &ev); err != nil {
		w.mu.Lock()
		delete(w.keys, int32(pidfd))
		w.mu.Unlock()
		return err
	}
	return nil
}

// exitRecheck bounds how long the watcher trusts the runtime poller
// alone: it then looks at the pidfds itself. Once, in CI, a shim's
// watcher stayed parked for half an hour after its init had exited, and
// the exit never reached berthd (a restart policy stalled); the poller's
// wakeup for this nested epoll fd was lost, or never came. The recheck
// bounds such a loss to this delay.
const exitRecheck = 5 * time.Second

// run reaps until the epoll fd is closed (close).
func (w *exitWatcher) run() {
	events := make([]unix.EpollEvent, 8)
	for {
		var n int
		var werr error
		w.ep.SetReadDeadline(time.Now().Add(exitRecheck))
		// Read calls the function until it returns true, parking in the
		// runtime poller in between; it fails once close has run, or at
		// the deadline.
		err := w.rc.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), events, 0)
			return n > 0 || (werr != nil && werr != unix.EINTR)
		})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			n, werr = unix.EpollWait(w.epfd, events, 0)
			if werr == unix.EINTR {
				continue
			}
			if werr == nil && n > 0 {
				w.log("exit seen by the recheck, not the poller")
			}
		} else if err != nil {
			return
		}
		if werr != nil {
			return
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			var info unix.Siginfo
			err := unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue // still readable: the next epoll_wait returns it
			}
			if err == nil && info.Signo == 0 {
				continue // not yet exited (spurious wakeup)
			}
			status := uint32(255)
			if err == nil {
				status = exitStatus(&info)
			}
			unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, fd, nil)
			unix.Close(fd)
			w.mu.Lock()
			id := w.keys[int32(fd)]
			delete(w.keys, int32(fd))
			w.mu.Unlock()
			w.out <- exitEvent{execID: id, status: status, at: time.Now()}
		}
	}
}

func (w *exitWatcher) close() { w.ep.Close() }

// log notes what should not happen, so that its cause can be found.
func (w *exitWatcher) log(msg string) { slog.Warn(msg, "component", "exit watcher") }

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
