package task

import (
	"encoding/binary"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// exitWatcher reaps the processes the shim knows, by pidfd, and reports
// each exit once. It never calls wait(-1): the container package reaps
// its own short-lived exec helpers, and a wildcard wait would steal them.
//
// One goroutine blocks in epoll_wait on every registered pidfd; a pidfd
// polls readable when its process exits, and waitid(P_PIDFD) then reaps
// exactly that process. Registration from other goroutines is safe while
// epoll_wait blocks (the kernel allows concurrent epoll_ctl).
type exitWatcher struct {
	epfd int
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
	return &exitWatcher{epfd: epfd, out: out, keys: map[int32]string{}}, nil
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

// run reaps until the epoll fd is closed (close).
func (w *exitWatcher) run() {
	events := make([]unix.EpollEvent, 8)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
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

func (w *exitWatcher) close() { unix.Close(w.epfd) }

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
