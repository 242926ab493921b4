// Package container is Berth's OCI runtime: it turns a bundle's
// config.json into a process in its own namespaces, rootfs and cgroup,
// without runc.
//
// Lifecycle: Create re-executes the current binary as the container init,
// places it in the cgroup, lets it build the rootfs and stops it just
// before execve; Start lets it exec the user's process; Exec runs more
// processes inside it; Destroy kills what is left and removes the cgroup.
//
// What a binary using this package (the shim) must do:
//
// First thing in main (or TestMain), before any goroutine, flag parsing
// or output:
//
//	if container.IsInit() {
//		container.Init() // never returns
//	}
//
// Create and Exec start /proc/self/exe with the environment variable
// _BERTH_INIT set ("1" for an init, "exec" for Exec) and their sync socket
// as fd 3; the package's init function has already locked the main
// goroutine to the main thread for such a process. Further:
//
//   - Be built with cgo (CGO_ENABLED=1, libseccomp-dev installed): seccomp
//     profiles are compiled with libseccomp, and Exec needs the nsenter C
//     constructor, which runs before the Go runtime when _BERTH_NSENTER is
//     set. Without cgo, Create refuses a spec with seccomp and Exec returns
//     ErrNotImplemented.
//   - Reap. The init is the caller's child; wait for it with its pidfd
//     (PidFD) or wait4. Nothing here waits on a process it handed out;
//     Create reaps only an init that failed before Create returned, and
//     Exec only its own short-lived helper. A process started by Exec is
//     reparented from that helper to the nearest child subreaper, so the
//     shim must be one (prctl PR_SET_CHILD_SUBREAPER) and should reap by
//     pidfd (waitid P_PIDFD) rather than wait(-1), which would race the
//     helper reaping here (harmlessly, but its exit would surface as an
//     unknown pid).
//   - Expect warnings, not failures, where the host allows less than the
//     spec asks (rlimits above the hard limit, a lower oom_score_adj,
//     capabilities outside the host's bounding set, blkio weights without
//     a weight-capable scheduler): they are logged on Config.Logger.
//   - Know the init's footprint: until its execve the init is this Go
//     binary, with a few threads and a few MiB. The pids limit is
//     therefore applied by Start, not Create; a memory limit below a few
//     MiB kills the init during Create (reported as ErrInitDied with the
//     signal); and an Exec into a container at its pids limit fails, as
//     the exec'd process is briefly a Go program too.
package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/shim/container/cgroup"
)

// Stdio is the init's standard streams. The caller keeps ownership of the
// files (Create dups them into the child and does not close them); a nil
// stream is /dev/null. Ignored when Config.Terminal is set.
type Stdio struct {
	Stdin, Stdout, Stderr *os.File
}

// Config describes a container to create.
type Config struct {
	// ID names the container; it is the last element of the cgroup path.
	ID string
	// Bundle is the bundle directory; a relative spec.Root.Path is
	// resolved against it.
	Bundle string
	// Parsed is config.json as ParseSpec read it. Its process and linux
	// sections are required, and the namespaces must include a new mount
	// namespace.
	Parsed *Spec
	// Spec is used, encoded, when Parsed is nil (for callers that build a
	// spec rather than read one).
	Spec *specs.Spec
	// Rootfs, when set, overrides spec.Root.Path.
	Rootfs string
	Stdio  Stdio
	// Terminal gives the process a pty made inside the container; the
	// master is then Console(). Spec.Process.Terminal has the same effect.
	Terminal bool
	// CgroupParent is the cgroup under which the container's group goes
	// (default cgroup.DefaultParent, "/berth"); the group is
	// <CgroupParent>/<ID>.
	CgroupParent string
	// Prefork, when set, is an init started ahead by Prefork. Create
	// takes it over (the caller must not use it again) when it was made
	// with the namespaces the spec asks for, and closes it otherwise.
	Prefork *Preforked
	// Cgroup, when set, is the container's cgroup made ahead
	// (PrepareCgroup); Create takes it if it is the one it would make.
	Cgroup *PreparedCgroup
	// SeccompCacheDir, when set, keeps compiled seccomp programs across
	// processes (see seccomp.go); berth-shim uses <state>/seccomp.
	SeccompCacheDir string
	// Logger receives the init's warnings (clamped limits, dropped
	// capabilities); default slog.Default().
	Logger *slog.Logger
}

// Container is a created container. Its methods are safe for concurrent
// use.
type Container struct {
	id string
	// execFlags are the namespaces an exec joins (those of the init that
	// are not the host's).
	execFlags uintptr
	pid       int
	pidfd     int
	cg        cgroup.Manager
	console   *os.File
	log       *slog.Logger

	// pidsLimit is applied by Start (see Create); nil for none.
	pidsLimit *specs.LinuxPids
	// seccomp is the compiled profile, for Exec too; nil for none.
	seccomp *seccompProgram

	mu         sync.Mutex
	sock       syncSocket // open until Start or Destroy
	started    bool
	destroying bool // Destroy has begun killing
	closed     bool // Destroy has finished
}

// ErrInitDied is wrapped when the init went away without reporting an
// error (for example it was killed).
var ErrInitDied = errors.New("container init exited without a word")

// cloneFlags maps the namespaces that clone(2) creates for us.
var cloneFlags = map[specs.LinuxNamespaceType]uintptr{
	specs.MountNamespace:   unix.CLONE_NEWNS,
	specs.PIDNamespace:     unix.CLONE_NEWPID,
	specs.UTSNamespace:     unix.CLONE_NEWUTS,
	specs.IPCNamespace:     unix.CLONE_NEWIPC,
	specs.NetworkNamespace: unix.CLONE_NEWNET,
}

// specView is what Create acts on of a config.json; the init decodes the
// rest. A shim lives as long as its container, and what encoding/json
// caches for each type it has decoded stays with it: decoding only these
// types (and not the whole runtime spec, twice) keeps the shim small.
type specView struct {
	Process *struct {
		Args            []string `json:"args"`
		Terminal        bool     `json:"terminal"`
		ApparmorProfile string   `json:"apparmorProfile"`
		SelinuxLabel    string   `json:"selinuxLabel"`
	} `json:"process"`
	Root *struct {
		Path string `json:"path"`
	} `json:"root"`
	Linux *struct {
		Namespaces []specs.LinuxNamespace `json:"namespaces"`
		Resources  *specs.LinuxResources  `json:"resources"`
		MountLabel string                 `json:"mountLabel"`
		// Seccomp is compiled, or found compiled, by its bytes' digest.
		Seccomp json.RawMessage `json:"seccomp"`
	} `json:"linux"`
}

// Spec is a config.json as Create takes it: its bytes, which go to the
// init as they are, and the few fields the caller's process acts on.
type Spec struct {
	raw  []byte
	view specView
}

// ParseSpec reads what Create needs of config.json's bytes.
func ParseSpec(raw []byte) (*Spec, error) {
	s := &Spec{raw: raw}
	if err := json.Unmarshal(raw, &s.view); err != nil {
		return nil, fmt.Errorf("parse config.json: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return s, nil
}

// Terminal reports whether the spec's process asks for a terminal.
func (s *Spec) Terminal() bool { return s.view.Process != nil && s.view.Process.Terminal }

// execFlags are the namespaces an exec joins: the init's own, not those
// it shares with the host (absent from the list).
func execFlags(nss []specs.LinuxNamespace) uintptr {
	var flags uintptr
	for _, ns := range nss {
		if f, ok := cloneFlags[ns.Type]; ok {
			flags |= f
		} else if ns.Type == specs.CgroupNamespace {
			flags |= unix.CLONE_NEWCGROUP
		}
	}
	return flags
}

// Create starts the container's init and returns once the init has set up
// the rootfs and is waiting for Start, or with the reason it could not
// (an *InitError for failures inside the init). On error nothing is left
// behind: no process, no cgroup.
func Create(ctx context.Context, cfg Config) (_ *Container, retErr error) {
	// A prepared cgroup not taken goes, last, once the prefork that may
	// be in it is dead.
	defer cfg.Cgroup.discard()
	// Create consumes a prefork in every case: taken below, or killed here.
	defer cfg.Prefork.Close()
	if cfg.ID == "" {
		return nil, fmt.Errorf("create container: empty id: %w", errdefs.ErrInvalidArgument)
	}
	parsed := cfg.Parsed
	if parsed == nil {
		raw, err := json.Marshal(cfg.Spec)
		if err == nil {
			parsed, err = ParseSpec(raw)
		}
		if err != nil {
			return nil, fmt.Errorf("create container %s: %w", cfg.ID, err)
		}
	}
	raw, spec := parsed.raw, &parsed.view
	switch {
	case spec.Process == nil || spec.Linux == nil:
		return nil, fmt.Errorf("create container %s: spec needs process and linux sections: %w", cfg.ID, errdefs.ErrInvalidArgument)
	case len(spec.Process.Args) == 0:
		return nil, fmt.Errorf("create container %s: no process args: %w", cfg.ID, errdefs.ErrInvalidArgument)
	}
	// Refused rather than ignored: a security setting that silently does
	// nothing is worse than an error.
	if spec.Process.ApparmorProfile != "" || spec.Process.SelinuxLabel != "" || spec.Linux.MountLabel != "" {
		return nil, fmt.Errorf("create container %s: AppArmor and SELinux labels: %w", cfg.ID, errdefs.ErrNotImplemented)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("container", cfg.ID)

	rootfs := cfg.Rootfs
	if rootfs == "" {
		if spec.Root == nil || spec.Root.Path == "" {
			return nil, fmt.Errorf("create container %s: no rootfs: %w", cfg.ID, errdefs.ErrInvalidArgument)
		}
		rootfs = spec.Root.Path
		if !filepath.IsAbs(rootfs) {
			rootfs = filepath.Join(cfg.Bundle, rootfs)
		}
	}
	rootfs, err := filepath.Abs(rootfs)
	if err == nil {
		// pivot_root wants the real path, not one through a symlink.
		rootfs, err = filepath.EvalSymlinks(rootfs)
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("create container %s: rootfs %s: %w", cfg.ID, rootfs, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("create container %s: rootfs: %w", cfg.ID, err)
	}
	if fi, err := os.Stat(rootfs); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("create container %s: rootfs %s is not a directory: %w", cfg.ID, rootfs, errdefs.ErrInvalidArgument)
	}

	var flags uintptr
	for _, ns := range spec.Linux.Namespaces {
		switch ns.Type {
		case specs.UserNamespace, specs.TimeNamespace:
			return nil, fmt.Errorf("create container %s: %s namespace: %w", cfg.ID, ns.Type, errdefs.ErrNotImplemented)
		case specs.MountNamespace, specs.PIDNamespace:
			if ns.Path != "" {
				// Joining needs setns before the Go runtime starts threads
				// (the nsenter constructor), which Create does not use.
				return nil, fmt.Errorf("create container %s: joining an existing %s namespace: %w", cfg.ID, ns.Type, errdefs.ErrNotImplemented)
			}
		}
		if f, ok := cloneFlags[ns.Type]; ok && ns.Path == "" {
			flags |= f
		}
	}
	if flags&unix.CLONE_NEWNS == 0 {
		// pivot_root in the host's mount namespace would take the host
		// with it.
		return nil, fmt.Errorf("create container %s: a new mount namespace is required: %w", cfg.ID, errdefs.ErrInvalidArgument)
	}
	terminal := cfg.Terminal || spec.Process.Terminal

	cgPath, err := cgroup.GroupPath(cfg.CgroupParent, cfg.ID)
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", cfg.ID, err)
	}
	// The pids limit waits until Start: the init is a Go program with a
	// handful of threads until its execve, and a small limit (a few
	// tasks) would kill it before it could run anything. Nothing the
	// user controls runs before Start, so nothing escapes the limit.
	res, pidsLimit := splitPidsLimit(spec.Linux.Resources)

	var (
		pid, pidfd int
		parentSock syncSocket
		// unshareMount: a preforked init makes its mount namespace now.
		unshareMount bool
		// passStdio: a preforked init was born with /dev/null as stdio
		// and gets its streams with the bootstrap message.
		passStdio []int
	)
	if pre := cfg.Prefork; pre != nil {
		cfg.Prefork = nil
		if pre.flags == flags && !exited(pre.pidfd) {
			pid, pidfd, parentSock = pre.pid, pre.pidfd, pre.sock
			unshareMount = true
			*pre = Preforked{pidfd: -1, sock: syncSocket{fd: -1}}
			if !terminal {
				for _, f := range []*os.File{cfg.Stdio.Stdin, cfg.Stdio.Stdout, cfg.Stdio.Stderr} {
					fd := -1
					if f != nil {
						fd = int(f.Fd())
					}
					passStdio = append(passStdio, fd)
				}
			}
		} else {
			pre.Close()
		}
	}
	if pid == 0 {
		var err error
		pid, pidfd, parentSock, err = forkInit(flags, cfg.ID, cfg.Stdio, terminal)
		if err != nil {
			return nil, fmt.Errorf("create container %s: %w", cfg.ID, err)
		}
	}
	c := &Container{id: cfg.ID, execFlags: execFlags(spec.Linux.Namespaces), pid: pid, pidfd: pidfd, sock: parentSock, log: log, pidsLimit: pidsLimit}
	defer func() {
		if retErr != nil {
			if status := c.abort(); status != "" && errors.Is(retErr, ErrInitDied) {
				retErr = fmt.Errorf("%w (%s)", retErr, status)
			}
			// After the kill: a cgroup with a process in it stays.
			if c.cg != nil {
				if err := c.cg.Delete(); err != nil {
					log.Warn("remove cgroup after failed create", "path", cgPath, "err", err)
				}
			}
		}
	}()

	// ctx cancels a Create stuck waiting for the init: shutting the socket
	// down wakes the blocked recv.
	stop := watchContext(ctx, parentSock.fd)
	defer func() {
		if stop() && retErr == nil {
			// Cancelled just as the init got ready: the socket is shut,
			// so this container could never start.
			retErr = fmt.Errorf("create container %s: %w", cfg.ID, ctx.Err())
		}
	}()

	// The bootstrap goes first, so the init decodes it and joins its
	// namespaces while the cgroup is made and the seccomp profile
	// compiled (or read from the cache); then the init waits for the
	// cgroup message before it goes on with its setup, so it sets up the
	// rootfs in the container's cgroup and cgroup namespace. Nothing the
	// user controls runs before Start.
	boot := syncMsg{Type: msgBootstrap, Config: &initConfig{SpecJSON: raw, Rootfs: rootfs, Bundle: cfg.Bundle, Terminal: terminal}}
	boot.Config.UnshareMount = unshareMount
	if passStdio != nil {
		boot.Config.Stdio = stdioMask(passStdio) // send skips the missing (-1) ones
	}
	if err := parentSock.send(boot, passStdio...); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("create container %s: %w", cfg.ID, err)
	}
	cg := cfg.Cgroup.take(cgPath, res, pid)
	if cg == nil {
		if cg, err = cgroup.New(cgPath, res); err != nil {
			return nil, fmt.Errorf("create container %s: %w", cfg.ID, err)
		}
		if err := cg.Add(pid); err != nil {
			c.cg = cg // removed with the rest, below
			return nil, fmt.Errorf("create container %s: %w", cfg.ID, err)
		}
		// A prepared cgroup not taken is removed on the way out (above).
	}
	c.cg = cg
	// A bad profile fails here, as if the init had found it.
	if c.seccomp, err = prepareSeccomp(spec.Linux.Seccomp, cfg.SeccompCacheDir); err != nil {
		return nil, fmt.Errorf("create container %s: %w", cfg.ID, err)
	}
	if err := parentSock.send(syncMsg{Type: msgCgroup, Seccomp: c.seccomp}); err != nil {
		// The init may have failed meanwhile: its word is queued.
		if m, fd, rerr := parentSock.recv(); rerr == nil && m.Type == msgError && m.Err != nil {
			closeFD(fd)
			return nil, fmt.Errorf("create container %s: %w", cfg.ID, m.Err)
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("create container %s: %w", cfg.ID, err)
	}
	for {
		m, fd, err := parentSock.recv()
		if ctx.Err() != nil {
			closeFD(fd)
			return nil, fmt.Errorf("create container %s: %w", cfg.ID, ctx.Err())
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET) {
				return nil, fmt.Errorf("create container %s: %w", cfg.ID, ErrInitDied)
			}
			return nil, fmt.Errorf("create container %s: %w", cfg.ID, err)
		}
		switch m.Type {
		case msgConsole:
			if fd < 0 {
				return nil, fmt.Errorf("create container %s: console message without a pty", cfg.ID)
			}
			if c.console, err = consoleFile(fd); err != nil {
				return nil, fmt.Errorf("create container %s: %w", cfg.ID, err)
			}
		case msgError:
			closeFD(fd)
			if m.Err == nil {
				m.Err = &InitError{Stage: "unknown", Message: "no detail"}
			}
			return nil, fmt.Errorf("create container %s: %w", cfg.ID, m.Err)
		case msgReady:
			for _, w := range m.Warnings {
				log.Warn("container init", "warning", w)
			}
			return c, nil
		default:
			closeFD(fd)
			return nil, fmt.Errorf("create container %s: unexpected %q message from init", cfg.ID, m.Type)
		}
	}
}

// abort undoes a Create that failed after the init started: kill it, reap
// it (its pid was never handed out, so no one else will wait for it; an
// event loop reaping every child may beat us to it, which is fine) and
// close everything.
//
// It returns how the init ended, for the error message.
func (c *Container) abort() string {
	_ = unix.PidfdSendSignal(c.pidfd, unix.SIGKILL, nil, 0)
	status := waitPidfd(c.pidfd)
	c.sock.close()
	closeFile(c.console)
	if c.pidfd >= 0 {
		unix.Close(c.pidfd)
	}
	return status
}

// watchContext shuts fd down when ctx is done, waking a blocked recv. The
// returned stop ends the watch, waits for the watcher goroutine to exit,
// and reports whether it did shut fd down.
func watchContext(ctx context.Context, fd int) (stop func() bool) {
	done := make(chan struct{})
	fired := make(chan bool, 1)
	go func() {
		select {
		case <-ctx.Done():
			_ = unix.Shutdown(fd, unix.SHUT_RDWR)
			fired <- true
		case <-done:
			fired <- false
		}
	}()
	return func() bool {
		close(done)
		return <-fired
	}
}

// forkInit starts a container init: /proc/self/exe re-executed in new
// namespaces (flags), in a session of its own, with stdio (or /dev/null)
// as fds 0-2 and its end of the sync socket as fd 3. It returns the pid,
// a pidfd and the parent's end of the socket.
func forkInit(flags uintptr, id string, stdio Stdio, terminal bool, env ...string) (pid, pidfd int, sock syncSocket, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, -1, syncSocket{fd: -1}, fmt.Errorf("sync socket: %w", err)
	}
	parentSock, childSock := syncSocket{fd: fds[0]}, fds[1]
	defer unix.Close(childSock)
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		parentSock.close()
		return 0, -1, syncSocket{fd: -1}, err
	}
	defer devnull.Close()
	files := make([]uintptr, 0, 4)
	for _, f := range []*os.File{stdio.Stdin, stdio.Stdout, stdio.Stderr} {
		if f == nil || terminal {
			f = devnull
		}
		files = append(files, f.Fd())
	}
	files = append(files, uintptr(childSock))
	argv := []string{"berth-init"}
	if id != "" {
		argv = append(argv, id)
	}
	pidfd = -1
	pid, err = syscall.ForkExec("/proc/self/exe", argv, &syscall.ProcAttr{
		Dir:   "/",
		Env:   append([]string{initEnv + "=" + initEnvCreate, initGoMaxProcs, initGoDebug}, env...),
		Files: files,
		Sys: &syscall.SysProcAttr{
			Cloneflags: flags,
			// A session of its own: no signals from the shim's
			// terminal, and the init can take a pty as its terminal.
			Setsid: true,
			PidFD:  &pidfd,
		},
	})
	if err != nil {
		parentSock.close()
		return 0, -1, syncSocket{fd: -1}, fmt.Errorf("start init: %w", err)
	}
	return pid, pidfd, parentSock, nil
}

// Preforked is a container init started before its container is known:
// the runtime start-up of the re-executed binary (the larger part of a
// Create) is paid while nothing waits. It sits in its new namespaces,
// outside any container cgroup, running nothing but that start-up until
// Create hands it a bootstrap message; a Preforked whose parent goes away
// exits on the sync socket's EOF.
//
// Its mount namespace is the one exception: it is made only when the
// bootstrap arrives (unshare on the init's one thread), because a copy
// made at fork would miss what was mounted since, such as the rootfs or a
// pinned network namespace on a private mount.
type Preforked struct {
	pid, pidfd int
	sock       syncSocket
	flags      uintptr
}

// DefaultNamespaces are the namespaces Berth's default spec creates by
// clone (the network namespace is joined by path, as berthd pins one for
// every container): what Prefork creates.
const DefaultNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC

// Prefork starts an init with the given clone flags (normally
// DefaultNamespaces) for a later Create. The caller must reap it if it
// is never used: Close does.
func Prefork(flags uintptr) (*Preforked, error) {
	if flags&unix.CLONE_NEWNS == 0 {
		return nil, fmt.Errorf("prefork: a new mount namespace is required: %w", errdefs.ErrInvalidArgument)
	}
	pid, pidfd, sock, err := forkInit(flags&^unix.CLONE_NEWNS, "", Stdio{}, false, preforkEnv+"=1")
	if err != nil {
		return nil, fmt.Errorf("prefork: %w", err)
	}
	return &Preforked{pid: pid, pidfd: pidfd, sock: sock, flags: flags}, nil
}

// Pid is the preforked init's pid (0 once Create took it).
func (p *Preforked) Pid() int { return p.pid }

// Close kills and reaps an unused preforked init. It is a no-op once
// Create has taken it, and idempotent.
func (p *Preforked) Close() {
	if p == nil || p.pidfd < 0 {
		return
	}
	_ = unix.PidfdSendSignal(p.pidfd, unix.SIGKILL, nil, 0)
	waitPidfd(p.pidfd)
	unix.Close(p.pidfd)
	p.sock.close()
	*p = Preforked{pidfd: -1, sock: syncSocket{fd: -1}}
}

// stdioMask says which of stdin, stdout and stderr travel with the
// bootstrap message, in that order (a missing one is /dev/null).
func stdioMask(fds []int) []bool {
	m := make([]bool, len(fds))
	for i, fd := range fds {
		m[i] = fd >= 0
	}
	return m
}

// splitPidsLimit returns r without its pids limit, and the limit.
func splitPidsLimit(r *specs.LinuxResources) (*specs.LinuxResources, *specs.LinuxPids) {
	if r == nil || r.Pids == nil {
		return r, nil
	}
	cp := *r
	cp.Pids = nil
	return &cp, r.Pids
}

// ID returns the container's id.
func (c *Container) ID() string { return c.id }

// Pid returns the init's pid in the caller's pid namespace.
func (c *Container) Pid() int { return c.pid }

// PidFD returns a pidfd for the init (-1 on kernels without them). It
// stays owned by the Container and is closed by Destroy; dup it to keep
// it longer. Poll it for readability to learn of the exit, then reap
// with waitid(P_PIDFD) or wait4.
func (c *Container) PidFD() int { return c.pidfd }

// Console returns the pty master when the container has a terminal, or nil.
// The Container owns it until Destroy.
func (c *Container) Console() *os.File { return c.console }

// CgroupPath is the container's cgroup, e.g. /berth/<id>.
func (c *Container) CgroupPath() string { return c.cg.Path() }

// Cgroup exposes the container's cgroup for resource updates.
func (c *Container) Cgroup() cgroup.Manager { return c.cg }

// Start lets the init exec the user's process. It returns once execve has
// succeeded, or with an *InitError (e.g. exec permission denied, which
// InitError.ExitCode maps to 126); after a failed Start the init has
// exited and must still be reaped by the caller.
func (c *Container) Start() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fmt.Errorf("start container %s: destroyed: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	if c.started {
		c.mu.Unlock()
		return fmt.Errorf("start container %s: already started: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	// EOF after start means "exec'd"; an init that died before start (a
	// stray kill) would look the same, so rule that out first.
	if exited(c.pidfd) {
		c.mu.Unlock()
		return fmt.Errorf("start container %s: %w", c.id, ErrInitDied)
	}
	if c.pidsLimit != nil {
		if err := c.cg.Update(&specs.LinuxResources{Pids: c.pidsLimit}); err != nil {
			c.mu.Unlock()
			// The init still waits: the caller may retry or Destroy.
			return fmt.Errorf("start container %s: apply pids limit: %w", c.id, err)
		}
	}
	// From here Start owns the socket, and the wait for execve happens
	// without the lock, so a Destroy can still kill a stuck init.
	c.started = true
	sock := c.sock
	c.sock.fd = -1
	c.mu.Unlock()
	defer sock.close()

	if err := sock.send(syncMsg{Type: msgStart}, -1); err != nil {
		return fmt.Errorf("start container %s: %w", c.id, err)
	}
	m, fd, err := sock.recv()
	closeFD(fd)
	if errors.Is(err, io.EOF) {
		c.mu.Lock()
		destroyed := c.destroying
		c.mu.Unlock()
		if destroyed {
			return fmt.Errorf("start container %s: destroyed while starting: %w", c.id, errdefs.ErrAborted)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("start container %s: %w", c.id, err)
	}
	if m.Type == msgError && m.Err != nil {
		return fmt.Errorf("start container %s: %w", c.id, m.Err)
	}
	return fmt.Errorf("start container %s: unexpected %q message from init", c.id, m.Type)
}

// exited reports whether the process behind pidfd has exited: a pidfd
// polls readable from that moment.
func exited(pidfd int) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// Signal sends sig to the init through its pidfd, so a recycled pid can
// never be hit.
func (c *Container) Signal(sig syscall.Signal) error {
	if err := unix.PidfdSendSignal(c.pidfd, sig, nil, 0); err != nil {
		if err == unix.ESRCH {
			return fmt.Errorf("signal container %s: init exited: %w", c.id, errdefs.ErrNotFound)
		}
		return fmt.Errorf("signal container %s: %w", c.id, err)
	}
	return nil
}

// SignalAll sends sig to every process in the container's cgroup. A
// running group is frozen meanwhile so a forking process cannot outrun the
// list, and thawed after. A paused container stays paused, except that
// SIGKILL thaws it: frozen processes cannot act on a kill.
func (c *Container) SignalAll(sig syscall.Signal) error {
	paused, _ := c.cg.Frozen()
	frozen := paused
	if !paused {
		frozen = c.cg.Freeze() == nil
	}
	pids, err := c.cg.Pids()
	if err == nil {
		for _, p := range pids {
			if kerr := unix.Kill(p, sig); kerr != nil && kerr != unix.ESRCH {
				err = fmt.Errorf("signal pid %d: %w", p, kerr)
			}
		}
	}
	if frozen && (!paused || sig == unix.SIGKILL) {
		if terr := c.cg.Thaw(); terr != nil && err == nil {
			err = terr
		}
	}
	if err != nil {
		return fmt.Errorf("signal all in container %s: %w", c.id, err)
	}
	return nil
}

// Pause freezes every process in the container.
func (c *Container) Pause() error { return c.cg.Freeze() }

// Paused reports whether the container is frozen.
func (c *Container) Paused() (bool, error) { return c.cg.Frozen() }

// Resume thaws a paused container.
func (c *Container) Resume() error { return c.cg.Thaw() }

// Stats reads the container's cgroup counters.
func (c *Container) Stats() (*cgroup.Stats, error) { return c.cg.Stats() }

// Pids lists the container's processes (host pids).
func (c *Container) Pids() ([]int, error) { return c.cg.Pids() }

// OOMKilled reports whether the kernel's OOM killer has killed any process
// of the container.
func (c *Container) OOMKilled() (bool, error) {
	n, err := c.cg.OOMKillCount()
	return n > 0, err
}

// OOMEvents delivers one value each time the OOM killer kills a process in
// the container. The watching goroutine ends, closing the channel, when
// ctx is done or the cgroup goes away; the caller owns it through ctx.
func (c *Container) OOMEvents(ctx context.Context) (<-chan struct{}, error) {
	fd, err := c.cg.OOMEventFD()
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("oom events of %s: %w", c.id, err)
	}
	// Non-blocking, so the runtime poller owns the wait and Close wakes it.
	f := os.NewFile(uintptr(fd), "oom-events")
	last, _ := c.cg.OOMKillCount()
	ch := make(chan struct{}, 1)
	stop := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-stop:
		}
		f.Close()
	}()
	go func() {
		defer close(ch)
		defer close(stop)
		buf := make([]byte, 4096)
		for {
			_, err := f.Read(buf)
			if err != nil {
				return
			}
			// v1 notifies when the group enters OOM, before the killer has
			// picked a victim and bumped the counter: give it a moment.
			var n uint64
			for try := 0; try < 50; try++ {
				n, err = c.cg.OOMKillCount()
				if err != nil {
					return // cgroup removed
				}
				if n > last {
					break
				}
				select {
				case <-time.After(10 * time.Millisecond):
				case <-ctx.Done():
					return
				}
			}
			for ; last < n; last++ {
				select {
				case ch <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return ch, nil
}

// Destroy kills every process left in the container, waits (up to ten
// seconds) for the cgroup to empty and removes it, and releases the
// pidfd, console and sync socket. It does not reap: the init stays a
// zombie until the caller's wait. The container's mounts live only in its
// mount namespace, which the kernel frees with its last process, so there
// is nothing to unmount on the host. Destroy is idempotent.
func (c *Container) Destroy() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.destroying = true
	// Killing the init (PID 1 of its namespace) kills the namespace; the
	// cgroup-wide kill catches processes outside it (exec'd ones).
	_ = unix.PidfdSendSignal(c.pidfd, unix.SIGKILL, nil, 0)
	// An empty group (the usual case: the init exited, taking its pid
	// namespace along) has nothing to kill and nothing that could fork,
	// so it skips the freeze and thaw, which cost milliseconds each.
	if pids, err := c.cg.Pids(); err != nil || len(pids) > 0 {
		_ = c.SignalAll(unix.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for {
		err = c.cg.Delete()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("destroy container %s: %w", c.id, err)
		}
		time.Sleep(10 * time.Millisecond)
		if errors.Is(err, errdefs.ErrFailedPrecondition) {
			_ = c.SignalAll(unix.SIGKILL)
		}
	}
	c.closed = true
	c.sock.close()
	c.sock.fd = -1
	closeFile(c.console)
	if c.pidfd >= 0 {
		unix.Close(c.pidfd)
		c.pidfd = -1
	}
	return nil
}
