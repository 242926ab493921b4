package container

// The parent↔init sync protocol.
//
// Create makes a SOCK_SEQPACKET socketpair (close-on-exec in both
// processes) and re-executes /proc/self/exe with the child's end as fd 3
// and the environment variable _BERTH_INIT=1; the clone flags create the
// new namespaces, so the child starts as PID 1 of its pid namespace. Every
// message is one datagram holding one JSON syncMsg, so no framing is
// needed; a file descriptor travels as SCM_RIGHTS ancillary data on the
// message that names it.
//
//	parent                                   init (child)
//	------                                   ------------
//	clone+exec (or take a preforked
//	init), get pid and pidfd
//	bootstrap{config, [stdio fds]} ───────▶   reads it; [stdio onto 0-2,
//	                                         unshare(mount)]; setns into the
//	                                         namespaces named by path, lo up,
//	                                         oom_score_adj, rlimits; the
//	                                         mounts that need no cgroup
//	make the cgroup, move pid in,            (all but cgroup filesystems
//	compile seccomp (meanwhile)              and what overlaps them)
//	cgroup{seccomp}            ──────────▶   waits for it, then: cgroup
//	                                         namespace, the other mounts,
//	                                         pivot_root, hostname… (no user
//	                                         code ever runs outside the
//	                                         cgroup)
//	                           ◀──────────   console{} + pty master (only when
//	                                         Terminal is set)
//	                           ◀──────────   ready{warnings}: executable found,
//	                                         user and capabilities set; blocks
//	Create returns
//	…
//	Start: start{}             ──────────▶   seccomp, close leaked fds, execve
//	                           ◀──────────   EOF: execve closed the socket
//	                                         (success), or error{…} then exit
//
// At any step the child may send error{stage, message, errno} instead of
// the expected reply and exit(1); the parent turns it into an *InitError.
// An EOF before ready means the child died without a word (e.g. killed):
// Create reports it as an error too. EOF after start is success, because
// only a successful execve closes the close-on-exec socket without a
// message; the same trade runc's exec FIFO makes. Start checks the init's
// pidfd first so an init killed while waiting is not mistaken for one
// that exec'd.
//
// Exec uses the same socket and messages, with a C prologue (see
// nsenter/nsenter.go) and no start barrier:
//
//	parent                                   helper (C, then Go child)
//	------                                   -------------------------
//	clone+exec helper: fd 3 socket, fd 4 the init's pidfd,
//	_BERTH_INIT=exec, _BERTH_NSENTER=<flags>
//	move helper into the cgroup
//	"g" (one byte)             ──────────▶   C constructor: setns(pidfd, flags),
//	                                         fork; the child goes on into Go
//	                           ◀──────────   pid{pid} + the child's pidfd
//	                                         (SCM_RIGHTS); helper exits, parent
//	                                         reaps it
//	bootstrap{spec with the exec process} ─▶ Go child: setsid, console,
//	                                         rlimits, user, caps, seccomp
//	                           ◀──────────   console{} + pty master (terminal)
//	                           ◀──────────   ready{warnings}, then execve
//	                           ◀──────────   EOF (exec'd) or error{…}

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

const (
	msgBootstrap = "bootstrap"
	// msgCgroup tells a container init it is in its cgroup, with the
	// compiled seccomp profile.
	msgCgroup  = "cgroup"
	msgConsole = "console"
	msgReady   = "ready"
	msgStart   = "start"
	msgError   = "error"
	// msgPid comes from the nsenter constructor during Exec, with the
	// new process's pidfd attached (see nsenter/nsenter.go).
	msgPid = "pid"
)

// maxSyncMsg bounds one datagram; a config.json of a few hundred KiB is
// already extreme.
const maxSyncMsg = 4 << 20

type syncMsg struct {
	Type     string      `json:"type"`
	Config   *initConfig `json:"config,omitempty"`
	Err      *InitError  `json:"error,omitempty"`
	Warnings []string    `json:"warnings,omitempty"`
	Pid      int         `json:"pid,omitempty"` // msgPid: the exec'd process, host pid
	// Seccomp rides on msgCgroup: the profile compiled by the parent.
	Seccomp *seccompProgram `json:"seccomp,omitempty"`
}

// initConfig is what the init needs: the spec, and what goes with it.
//
// The spec travels as the bytes of config.json, untouched: the shim never
// encodes a spec. Encoding one would make encoding/json build and keep,
// in a process that lives as long as its container, an encoder for every
// type of the runtime spec (about 150 KiB of heap, and the runtime's
// per-size-class bookkeeping that goes with it); the shim decodes only
// the few fields it acts on (see specView).
type initConfig struct {
	// SpecJSON is config.json; its seccomp section is skipped by the
	// init, which gets the profile compiled instead (Seccomp).
	SpecJSON json.RawMessage `json:"spec,omitempty"`
	// ProcessJSON is an exec'd process (a specs.Process), which needs
	// nothing else of the spec.
	ProcessJSON json.RawMessage `json:"process,omitempty"`
	Rootfs      string          `json:"rootfs"` // absolute host path
	Bundle      string          `json:"bundle,omitempty"`
	Terminal    bool            `json:"terminal"`
	// Seccomp is the spec's profile, compiled by the parent.
	Seccomp *seccompProgram `json:"seccomp,omitempty"`
	// Stdio is set for a preforked init: which of stdin, stdout and
	// stderr came as descriptors with this message (in that order); the
	// others stay /dev/null.
	Stdio []bool `json:"stdio,omitempty"`
	// UnshareMount is set for a preforked init, which makes its mount
	// namespace only now (see Preforked).
	UnshareMount bool `json:"unshare_mount,omitempty"`
}

// initSpecDoc decodes a config.json without its seccomp section: the
// outer Linux field, being shallower, hides the embedded Spec's, and the
// outer Seccomp hides specs.Linux's (encoding/json's rule for embedded
// fields), so the profile is skipped, neither decoded nor copied.
type initSpecDoc struct {
	specs.Spec
	Linux *struct {
		specs.Linux
		Seccomp skipped `json:"seccomp,omitempty"`
	} `json:"linux,omitempty"`
}

// skipped is a JSON value that is read past and kept nowhere.
type skipped struct{}

func (*skipped) UnmarshalJSON([]byte) error { return nil }

// spec decodes SpecJSON (seccomp left out) or, for an exec, ProcessJSON
// into a spec holding only that process.
func (c *initConfig) spec() (*specs.Spec, error) {
	if len(c.ProcessJSON) > 0 {
		var p specs.Process
		if err := json.Unmarshal(c.ProcessJSON, &p); err != nil {
			return nil, fmt.Errorf("decode process: %w", err)
		}
		return &specs.Spec{Process: &p}, nil
	}
	var d initSpecDoc
	if err := json.Unmarshal(c.SpecJSON, &d); err != nil {
		return nil, fmt.Errorf("decode spec: %w", err)
	}
	spec := d.Spec
	if d.Linux != nil {
		l := d.Linux.Linux
		spec.Linux = &l
	}
	return &spec, nil
}

// syncSocket is one end of the socketpair. It is a raw fd in blocking mode
// (not an *os.File) so that the init can use it without the Go poller and
// the parent can interrupt a blocked read with shutdown(2).
type syncSocket struct{ fd int }

// maxPassFDs is the most descriptors one message carries (a preforked
// init's stdio).
const maxPassFDs = 3

// send writes m as one datagram, with the descriptors passFDs (negative
// ones are skipped) as SCM_RIGHTS.
func (s syncSocket) send(m syncMsg, passFDs ...int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s message: %w", m.Type, err)
	}
	var fds []int
	for _, fd := range passFDs {
		if fd >= 0 {
			fds = append(fds, fd)
		}
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for {
		err = unix.Sendmsg(s.fd, b, oob, nil, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("send %s message: %w", m.Type, err)
	}
	return nil
}

// recv reads one message; io.EOF means the other end is gone (or, after
// start, that execve succeeded). A passed descriptor, if any, is returned
// (else -1) and belongs to the caller; extra ones are closed.
func (s syncSocket) recv() (syncMsg, int, error) {
	m, fds, err := s.recvFDs()
	if len(fds) == 0 {
		return m, -1, err
	}
	for _, fd := range fds[1:] {
		unix.Close(fd)
	}
	return m, fds[0], err
}

// recvFDs is recv keeping every passed descriptor, in order.
func (s syncSocket) recvFDs() (syncMsg, []int, error) {
	// The wait happens in a peek that learns the message's size, so the
	// buffer is allocated afterwards and no larger than needed: a 4 MiB
	// buffer per message made the shim's heap churn and, allocated before
	// the init's blocking read, delayed the woken init by 5-70 ms at each
	// of its waits (bootstrap, cgroup, start).
	size, err := s.peekSize()
	if err != nil {
		return syncMsg{}, nil, err
	}
	buf := make([]byte, max(size, 1))
	oob := make([]byte, unix.CmsgSpace(4*maxPassFDs))
	var (
		n, oobn, flags int
	)
	for {
		n, oobn, flags, _, err = unix.Recvmsg(s.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return syncMsg{}, nil, fmt.Errorf("receive sync message: %w", err)
	}
	var passed []int
	if oobn > 0 {
		cmsgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
		if perr == nil {
			for _, c := range cmsgs {
				fds, ferr := unix.ParseUnixRights(&c)
				if ferr == nil {
					passed = append(passed, fds...)
				}
			}
		}
	}
	if n == 0 && oobn == 0 {
		return syncMsg{}, nil, io.EOF
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		closeFDs(passed)
		return syncMsg{}, nil, errors.New("sync message truncated")
	}
	var m syncMsg
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		closeFDs(passed)
		return syncMsg{}, nil, fmt.Errorf("decode sync message: %w", err)
	}
	return m, passed, nil
}

// peekSize waits for the next message and returns its length (0 at EOF,
// where the following recv reports io.EOF).
func (s syncSocket) peekSize() (int, error) {
	var one [1]byte
	reset := false
	for {
		n, _, _, _, err := unix.Recvmsg(s.fd, one[:], nil, unix.MSG_PEEK|unix.MSG_TRUNC)
		if err == unix.EINTR {
			continue
		}
		if err == unix.ECONNRESET && !reset {
			// The other end closed with a message of ours unread (an
			// init that failed before reading the cgroup message): the
			// kernel reports that first, and only once, ahead of the
			// messages it sent before, which are still queued: read on.
			reset = true
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("receive sync message: %w", err)
		}
		if n > maxSyncMsg {
			return 0, fmt.Errorf("sync message of %d bytes, more than %d", n, maxSyncMsg)
		}
		return n, nil
	}
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func closeFD(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// consoleFile wraps a received pty master. Non-blocking, so the Go poller
// serves it: reads honour deadlines and Close wakes a blocked reader,
// which lets the shim stop its copy loop.
func consoleFile(fd int) (*os.File, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("console: %w", err)
	}
	return os.NewFile(uintptr(fd), "pty-master"), nil
}

func (s syncSocket) close() {
	if s.fd >= 0 {
		unix.Close(s.fd)
	}
}

func closeFile(f *os.File) {
	if f != nil {
		f.Close()
	}
}
