package container

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/shim/container/nsenter"
)

// Process is a process Exec started in a running container.
type Process struct {
	// Pid is the host pid. The process is not the caller's child at
	// first: its parent is a short-lived helper, so the caller must be a
	// child subreaper (prctl PR_SET_CHILD_SUBREAPER, as the shim is) to
	// reap it.
	Pid int
	// PidFD refers to the process; the caller owns and closes it.
	PidFD int
	// Console is the pty master when the process has a terminal; the
	// caller owns it.
	Console *os.File
}

// Exec starts proc inside the container: in all its namespaces (mount
// and pid included, through the nsenter constructor), in its cgroup, with
// proc's user, capabilities, rlimits and the container's seccomp profile.
// It returns once the process has exec'd, or with an *InitError (e.g.
// executable not found, ExitCode 127). Nothing waits for the process: that
// is the caller's job.
func (c *Container) Exec(ctx context.Context, proc *specs.Process, stdio Stdio) (*Process, error) {
	if proc == nil || len(proc.Args) == 0 {
		return nil, fmt.Errorf("exec in %s: no process args: %w", c.id, errdefs.ErrInvalidArgument)
	}
	raw, err := json.Marshal(proc)
	if err != nil {
		return nil, fmt.Errorf("exec in %s: encode process: %w", c.id, err)
	}
	return c.ExecJSON(ctx, raw, proc.Terminal, stdio)
}

// ExecJSON is Exec for a process given as the JSON of a specs.Process,
// which goes to the process's init as it is (a shim that got it as JSON
// need not decode and encode it again); terminal overrides its terminal
// field. The caller has checked that it names args.
func (c *Container) ExecJSON(ctx context.Context, process []byte, terminal bool, stdio Stdio) (_ *Process, retErr error) {
	if !nsenter.Available {
		return nil, fmt.Errorf("exec in %s: needs a cgo build (nsenter): %w", c.id, errdefs.ErrNotImplemented)
	}
	c.mu.Lock()
	closed, pidfd := c.closed, c.pidfd
	c.mu.Unlock()
	if closed || pidfd < 0 {
		return nil, fmt.Errorf("exec in %s: container destroyed: %w", c.id, errdefs.ErrFailedPrecondition)
	}

	// The init's namespaces, joined through its pidfd.
	flags := c.execFlags

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("exec in %s: sync socket: %w", c.id, err)
	}
	sock, childSock := syncSocket{fd: fds[0]}, fds[1]
	defer sock.close()
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		unix.Close(childSock)
		return nil, fmt.Errorf("exec in %s: %w", c.id, err)
	}
	defer devnull.Close()
	files := make([]uintptr, 0, 5)
	for _, f := range []*os.File{stdio.Stdin, stdio.Stdout, stdio.Stderr} {
		if f == nil || terminal {
			f = devnull
		}
		files = append(files, f.Fd())
	}
	files = append(files, uintptr(childSock), uintptr(pidfd))

	helperFD := -1
	helper, err := syscall.ForkExec("/proc/self/exe", []string{"berth-exec", c.id}, &syscall.ProcAttr{
		Dir: "/",
		Env: []string{
			initEnv + "=" + initEnvExec, initGoMaxProcs, initGoDebug,
			nsenter.EnvFlags + "=" + strconv.FormatUint(uint64(flags), 10),
		},
		Files: files,
		Sys:   &syscall.SysProcAttr{PidFD: &helperFD},
	})
	unix.Close(childSock)
	if err != nil {
		return nil, fmt.Errorf("exec in %s: start helper: %w", c.id, err)
	}
	// The helper is our child and exits right after reporting; reap it
	// here, whatever happens. (A shim loop that reaps only pidfds it
	// knows of will not race us; one that calls wait(-1) may, which only
	// makes this wait return ECHILD.)
	defer func() {
		if helperFD >= 0 {
			_ = unix.PidfdSendSignal(helperFD, unix.SIGKILL, nil, 0)
			waitPidfd(helperFD)
			unix.Close(helperFD)
		}
	}()

	stop := watchContext(ctx, sock.fd)
	defer stop() // an exec'd process keeps running whatever ctx does now

	// The cgroup before anything is forked: the exec'd process inherits it.
	if err := c.cg.Add(helper); err != nil {
		return nil, fmt.Errorf("exec in %s: %w", c.id, err)
	}
	if err := unix.Sendmsg(sock.fd, []byte("g"), nil, nil, 0); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("exec in %s: release helper: %w", c.id, err)
	}
	m, pidFD, err := sock.recv()
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = ErrInitDied
		}
		return nil, fmt.Errorf("exec in %s: %w", c.id, err)
	}
	if m.Type == msgError && m.Err != nil {
		closeFD(pidFD)
		return nil, fmt.Errorf("exec in %s: %w", c.id, m.Err)
	}
	if m.Type != msgPid || m.Pid <= 0 || pidFD < 0 {
		closeFD(pidFD)
		return nil, fmt.Errorf("exec in %s: unexpected %q message from nsenter", c.id, m.Type)
	}
	p := &Process{Pid: m.Pid, PidFD: pidFD}
	defer func() {
		if retErr != nil {
			// The process failed before execve (or we gave up): make sure
			// it is gone and, if it was reparented to us, reaped.
			_ = unix.PidfdSendSignal(p.PidFD, unix.SIGKILL, nil, 0)
			waitPidfd(p.PidFD)
			unix.Close(p.PidFD)
			closeFile(p.Console)
		}
	}()

	if err := sock.send(syncMsg{Type: msgBootstrap, Config: &initConfig{ProcessJSON: process, Terminal: terminal, Seccomp: c.seccomp}}, -1); err != nil {
		return nil, fmt.Errorf("exec in %s: %w", c.id, err)
	}
	for {
		m, fd, err := sock.recv()
		if ctx.Err() != nil {
			closeFD(fd)
			return nil, fmt.Errorf("exec in %s: %w", c.id, ctx.Err())
		}
		if errors.Is(err, io.EOF) {
			return p, nil // execve closed the socket
		}
		if err != nil {
			return nil, fmt.Errorf("exec in %s: %w", c.id, err)
		}
		switch m.Type {
		case msgConsole:
			if fd < 0 {
				return nil, fmt.Errorf("exec in %s: console message without a pty", c.id)
			}
			if p.Console, err = consoleFile(fd); err != nil {
				return nil, fmt.Errorf("exec in %s: %w", c.id, err)
			}
		case msgReady:
			for _, w := range m.Warnings {
				c.log.Warn("exec", "warning", w)
			}
		case msgError:
			closeFD(fd)
			if m.Err == nil {
				m.Err = &InitError{Stage: "unknown", Message: "no detail"}
			}
			return nil, fmt.Errorf("exec in %s: %w", c.id, m.Err)
		default:
			closeFD(fd)
			return nil, fmt.Errorf("exec in %s: unexpected %q message", c.id, m.Type)
		}
	}
}

// waitPidfd reaps the process if it is our child and describes how it
// ended; ECHILD (someone else's child, or already reaped) is not an error
// here and yields "".
func waitPidfd(fd int) string {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ""
		}
		return describeExit(&info)
	}
}

// describeExit renders a waitid result: si_code says whether si_status is
// an exit code or a signal.
func describeExit(info *unix.Siginfo) string {
	// x/sys leaves the SIGCHLD fields opaque: si_status sits at offset
	// 24 on 64-bit Linux (after si_pid and si_uid).
	raw := (*[32]byte)(unsafe.Pointer(info))
	status := int32(binary.NativeEndian.Uint32(raw[24:28]))
	const cldExited = 1
	if info.Code == cldExited {
		return fmt.Sprintf("exit status %d", status)
	}
	return fmt.Sprintf("killed by signal %d (%v)", status, syscall.Signal(status))
}
