package container

// The container init: the child half of Create. It runs in a re-executed
// copy of the caller's binary (the shim, or a test binary), is PID 1 of the
// new pid namespace, and ends in execve of the user's process. See sync.go
// for the conversation with the parent.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/hugeheap"
)

// initEnv marks a process as a container init ("1") or as a process being
// exec'd into a running container ("exec", with nsenter.EnvFlags beside
// it). These are the only variables in its environment; the user's
// environment comes from the spec at execve.
const (
	initEnv       = "_BERTH_INIT"
	initEnvCreate = "1"
	initEnvExec   = "exec"
)

// initGoMaxProcs is in the init's and exec helper's environment: one P
// means fewer runtime threads, so less memory and a quicker execve, which
// must stop every other thread first.
const initGoMaxProcs = "GOMAXPROCS=1"

// initGoDebug is in their environment too: no sampling of allocations for
// a memory profile nobody reads (the runtime records a stack trace every
// 512 KiB allocated by default, a few percent of the init's work). The
// container's process gets the spec's environment, not this one.
const initGoDebug = "GODEBUG=memprofilerate=0"

// preforkEnv marks a preforked init (see Preforked), which warms up while
// it waits.
const preforkEnv = "_BERTH_PREFORK"

// initSyncFD is where Create puts the init's end of the sync socket.
const initSyncFD = 3

func init() {
	if os.Getenv(initEnv) != "" {
		// Namespace, capability and no_new_privs changes apply to the
		// calling thread, and execve keeps only the thread that calls it:
		// the whole init must run on one thread, the main one, from here
		// on. Package init runs on the main thread, before main.
		runtime.LockOSThread()
	}
}

// IsInit reports whether this process was started by Create as a
// container init. main (or TestMain) must check it first thing and, if
// true, call Init.
func IsInit() bool { return os.Getenv(initEnv) != "" }

// Init runs the container init and never returns: it execs the user's
// process or exits with status 1 after telling the parent why. Call it only
// when IsInit is true, from the main goroutine, before starting any other
// goroutine or touching stdio.
func Init() {
	sock := syncSocket{fd: initSyncFD}
	unix.CloseOnExec(initSyncFD)
	// Not dumpable until execve, so no process in the container can open
	// /proc/<init>/exe and reach the shim's binary (runc's CVE-2019-5736);
	// execve of the user's program resets it. (Exec's nsenter constructor
	// does the same before joining the namespaces.)
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	var ierr *InitError
	if os.Getenv(initEnv) == initEnvExec {
		ierr = runExecInit(sock)
	} else {
		ierr = runInit(sock)
	}
	if ierr != nil {
		_ = sock.send(syncMsg{Type: msgError, Err: ierr}, -1)
	}
	os.Exit(1)
}

func runInit(sock syncSocket) *InitError {
	if os.Getenv(preforkEnv) != "" {
		// Time to spare before the bootstrap: the heap on huge pages (the
		// setup's allocations then fault no page in; 15-20 µs each on a
		// VM with shadow paging), and what can be known ahead.
		hugeheap.Collapse()
		warmUp()
		hostCaps()
	}
	m, fds, err := sock.recvFDs()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil // parent gone; nobody to tell
		}
		return newInitError(StageBootstrap, err)
	}
	if m.Type != msgBootstrap || m.Config == nil {
		closeFDs(fds)
		return &InitError{Stage: StageBootstrap, Message: fmt.Sprintf("unexpected %q message", m.Type), Errno: unix.EPROTO}
	}
	spec, err := m.Config.spec()
	if err == nil && (spec.Process == nil || spec.Linux == nil) {
		err = errors.New("spec without process or linux section")
	}
	if err != nil {
		closeFDs(fds)
		return newInitError(StageBootstrap, err)
	}
	if err := takeStdio(m.Config.Stdio, fds); err != nil {
		return newInitError(StageBootstrap, err)
	}
	if m.Config.UnshareMount {
		// On this thread only, the one that execs: enough for us.
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			return newInitError(StageNamespaces, fmt.Errorf("unshare mount namespace: %w", err))
		}
	}
	cfg := m.Config
	var warnings []string

	if err := joinNamespaces(spec.Linux.Namespaces, false); err != nil {
		return newInitError(StageNamespaces, err)
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace && ns.Path == "" {
			// A new network namespace has only lo, and down; Docker's
			// "--network none" has it up, and so should every
			// container. Other interfaces are the agent's (CNI's) work.
			if err := loopbackUp(); err != nil {
				return newInitError(StageNamespaces, err)
			}
		}
	}

	// oom_score_adj and rlimits first: they limit the setup itself too.
	if w, err := setOOMScoreAdj(spec.Process.OOMScoreAdj); err != nil {
		return newInitError(StageProcess, err)
	} else if w != "" {
		warnings = append(warnings, w)
	}
	w, err := setRlimits(spec.Process.Rlimits)
	if err != nil {
		return newInitError(StageProcess, err)
	}
	warnings = append(warnings, w...)

	// While the parent makes the cgroup: the mounts that do not need it.
	rs, err := startRootfs(spec, cfg.Rootfs, cfg.Bundle)
	if err != nil {
		return newInitError(StageRootfs, err)
	}

	// In the cgroup from here: the parent says so.
	cm, _, err := sock.recv()
	if err != nil {
		return nil // parent gone
	}
	if cm.Type != msgCgroup {
		return &InitError{Stage: StageBootstrap, Message: fmt.Sprintf("expected cgroup, got %q", cm.Type), Errno: unix.EPROTO}
	}
	if err := joinNamespaces(spec.Linux.Namespaces, true); err != nil {
		return newInitError(StageNamespaces, err)
	}
	if err := rs.completeRootfs(); err != nil {
		return newInitError(StageRootfs, err)
	}
	if cfg.Terminal {
		if err := setupConsole(sock, true, spec.Process.ConsoleSize); err != nil {
			return newInitError(StageConsole, err)
		}
	}

	if hasNamespace(spec.Linux.Namespaces, specs.UTSNamespace) {
		if spec.Hostname != "" {
			if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
				return newInitError(StageProcess, fmt.Errorf("sethostname: %w", err))
			}
		}
		if spec.Domainname != "" {
			if err := unix.Setdomainname([]byte(spec.Domainname)); err != nil {
				return newInitError(StageProcess, fmt.Errorf("setdomainname: %w", err))
			}
		}
	}
	// Before finish, which makes /proc/sys read-only.
	for k, v := range spec.Linux.Sysctl {
		p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(p, []byte(v), 0); err != nil {
			return newInitError(StageProcess, fmt.Errorf("sysctl %s=%s: %w", k, v, err))
		}
	}
	if err := rs.finish(); err != nil {
		return newInitError(StageRootfs, err)
	}

	path, filter, seccompEarly, w, ierr := prepareProcess(spec.Process, cm.Seccomp)
	if ierr != nil {
		return ierr
	}
	warnings = append(warnings, w...)

	// After ready the parent applies the pids limit, which may be as low
	// as 1: from here to execve the Go runtime must not start threads,
	// and the garbage collector is what would (its workers need Ms).
	debug.SetGCPercent(-1)
	if err := sock.send(syncMsg{Type: msgReady, Warnings: warnings}, -1); err != nil {
		return nil // parent gone
	}
	m, _, err = sock.recv()
	if err != nil || m.Type != msgStart {
		// The parent went away (Destroy before Start) or spoke out of
		// turn: exit without running anything.
		if err == nil {
			return &InitError{Stage: StageBootstrap, Message: fmt.Sprintf("expected start, got %q", m.Type), Errno: unix.EPROTO}
		}
		return nil
	}
	if seccompEarly {
		filter = nil
	}
	return execProcess(path, spec.Process, filter)
}

// WarmUp is for a process that will create a container soon and has time
// to spare now (a warm shim): it runs the JSON work of a Create on a small
// spec, so that encoding/json's decoders for the fields Create reads and
// its encoders for the init messages are built ahead (the same ones, and
// no more: the shim keeps them for its lifetime).
func WarmUp() {
	const doc = `{"process":{"args":["sh"],"terminal":false},"root":{"path":"rootfs"},` +
		`"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/x"}],` +
		`"resources":{"devices":[{"allow":false,"access":"rwm"}],"memory":{"limit":1},"cpu":{"shares":2,"quota":1,"period":1},"pids":{"limit":3}},` +
		`"seccomp":{"defaultAction":"SCMP_ACT_ERRNO"}}}`
	s, err := ParseSpec([]byte(doc))
	if err != nil {
		return
	}
	for _, m := range []syncMsg{
		{Type: msgBootstrap, Config: &initConfig{SpecJSON: s.raw, Rootfs: "/r", Stdio: []bool{true}}},
		{Type: msgCgroup, Seccomp: &seccompProgram{Filter: make([]byte, 8)}},
		{Type: msgReady, Warnings: []string{"w"}},
	} {
		if data, err := json.Marshal(m); err == nil {
			var back syncMsg
			_ = json.Unmarshal(data, &back)
		}
	}
}

// warmUp runs, in a preforked init that has time to spare, the JSON
// decoding of a typical bootstrap message: encoding/json builds and
// caches its decoders for the spec's types on first use, and the pages of
// that code are faulted in, both of which would otherwise delay the
// container's start.
func warmUp() {
	spec := &specs.Spec{
		Version:  specs.Version,
		Process:  &specs.Process{Args: []string{"sh"}, Env: []string{"PATH=/bin"}, Cwd: "/", Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_CHOWN"}}, Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1, Soft: 1}}},
		Root:     &specs.Root{Path: "rootfs"},
		Hostname: "warm",
		Mounts:   []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid"}}},
		Linux: &specs.Linux{
			Namespaces:    []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: "/x"}},
			Resources:     &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}, Memory: &specs.LinuxMemory{}, CPU: &specs.LinuxCPU{}, Pids: &specs.LinuxPids{}},
			Devices:       []specs.LinuxDevice{{Path: "/dev/null", Type: "c", Major: 1, Minor: 3}},
			MaskedPaths:   []string{"/proc/kcore"},
			ReadonlyPaths: []string{"/proc/sys"},
			Sysctl:        map[string]string{"net.ipv4.ip_forward": "0"},
		},
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return
	}
	msg := syncMsg{Type: msgBootstrap, Config: &initConfig{SpecJSON: raw, Rootfs: "/r", Seccomp: &seccompProgram{Filter: make([]byte, 64)}, Stdio: []bool{true}}}
	if data, err := json.Marshal(msg); err == nil {
		var m syncMsg
		if json.Unmarshal(data, &m) == nil && m.Config != nil {
			_, _ = m.Config.spec()
		}
	}
}

// takeStdio puts the streams a preforked init received with its
// bootstrap message on fds 0-2 (mask says which of the three came, in
// order); the received descriptors are closed.
func takeStdio(mask []bool, fds []int) error {
	defer closeFDs(fds)
	n := 0
	for _, present := range mask {
		if present {
			n++
		}
	}
	if n != len(fds) || len(mask) > 3 {
		return fmt.Errorf("bootstrap carried %d descriptors for %d streams", len(fds), n)
	}
	next := 0
	for target, present := range mask {
		if !present {
			continue
		}
		if err := unix.Dup3(fds[next], target, 0); err != nil {
			return fmt.Errorf("stdio fd %d: %w", target, err)
		}
		next++
	}
	return nil
}

// prepareProcess does the per-process part shared by the init and exec:
// cwd, executable lookup, user and capabilities, no_new_privs, and the
// early load of filter when it must come before the user switch. When
// early is true the filter is already loaded (a filter without
// no_new_privs must be); otherwise the caller loads it last.
func prepareProcess(proc *specs.Process, filter *seccompProgram) (path string, _ *seccompProgram, early bool, warnings []string, ierr *InitError) {
	cwd := proc.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if err := unix.Chdir(cwd); err != nil {
		return "", nil, false, nil, newInitError(StageProcess, fmt.Errorf("chdir to cwd %q: %w", cwd, err))
	}
	path, err := lookPath(proc.Args[0], proc.Env)
	if err != nil {
		return "", nil, false, nil, newInitError(StageLookup, err)
	}
	caps, warnings, err := resolveCaps(proc.Capabilities)
	if err != nil {
		return "", nil, false, nil, newInitError(StageUser, err)
	}
	early = filter != nil && !proc.NoNewPrivileges
	if early {
		// Without no_new_privs, installing a filter takes CAP_SYS_ADMIN,
		// which the user switch below may drop: install it now.
		if err := filter.load(); err != nil {
			return "", nil, false, nil, newInitError(StageSeccomp, err)
		}
	}
	if err := setUser(proc, caps); err != nil {
		return "", nil, false, nil, newInitError(StageUser, err)
	}
	if proc.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return "", nil, false, nil, newInitError(StageUser, fmt.Errorf("set no_new_privs: %w", err))
		}
	}
	// The cwd may be readable only by the user; chdir again as them so a
	// failure shows here rather than as an odd execve error.
	if err := unix.Chdir(cwd); err != nil {
		return "", nil, false, nil, newInitError(StageUser, fmt.Errorf("chdir to cwd %q as uid %d: %w", cwd, proc.User.UID, err))
	}
	return path, filter, early, warnings, nil
}

// execProcess loads the late seccomp filter, if any, and execs. It
// returns only on failure.
func execProcess(path string, proc *specs.Process, filter *seccompProgram) *InitError {
	if filter != nil {
		// Late, so the filter constrains as little of our own setup as
		// possible: only close_range and execve run under it.
		if err := filter.load(); err != nil {
			return newInitError(StageSeccomp, err)
		}
	}
	closeLeakedFDs()
	err := unix.Exec(path, proc.Args, proc.Env)
	return newInitError(StageExec, fmt.Errorf("exec %q: %w", path, err))
}

// runExecInit is the Go half of an exec: the nsenter constructor has put
// this process in the container's namespaces (and the parent in its
// cgroup). There is no start barrier: the process runs as soon as it is
// set up.
func runExecInit(sock syncSocket) *InitError {
	m, _, err := sock.recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return newInitError(StageBootstrap, err)
	}
	if m.Type != msgBootstrap || m.Config == nil {
		return &InitError{Stage: StageBootstrap, Message: fmt.Sprintf("unexpected %q message", m.Type), Errno: unix.EPROTO}
	}
	spec, err := m.Config.spec()
	if err == nil && (spec.Process == nil || len(spec.Process.Args) == 0) {
		err = errors.New("exec without process args")
	}
	if err != nil {
		return newInitError(StageBootstrap, err)
	}
	// Our own session, as the container's processes have: the shim's
	// terminal signals must not reach it, and a pty needs a session leader.
	_, _ = unix.Setsid()
	if m.Config.Terminal {
		if err := setupConsole(sock, false, spec.Process.ConsoleSize); err != nil {
			return newInitError(StageConsole, err)
		}
	}
	var warnings []string
	if w, err := setOOMScoreAdj(spec.Process.OOMScoreAdj); err != nil {
		return newInitError(StageProcess, err)
	} else if w != "" {
		warnings = append(warnings, w)
	}
	w, err := setRlimits(spec.Process.Rlimits)
	if err != nil {
		return newInitError(StageProcess, err)
	}
	warnings = append(warnings, w...)
	path, filter, early, w, ierr := prepareProcess(spec.Process, m.Config.Seccomp)
	if ierr != nil {
		return ierr
	}
	warnings = append(warnings, w...)
	if err := sock.send(syncMsg{Type: msgReady, Warnings: warnings}, -1); err != nil {
		return nil
	}
	if early {
		filter = nil
	}
	return execProcess(path, spec.Process, filter)
}

func hasNamespace(nss []specs.LinuxNamespace, t specs.LinuxNamespaceType) bool {
	for _, ns := range nss {
		if ns.Type == t {
			return true
		}
	}
	return false
}

// joinNamespaces does the namespace work clone flags cannot: setns into
// existing network, uts and ipc namespaces named by path (allowed on a
// single thread, unlike mount and pid, which Create refuses), and a new
// cgroup namespace, which must be made after the parent moved us into the
// container's cgroup so that cgroup becomes its root.
//
// It runs twice: without cgroup for the others, then, once the parent has
// moved us into the container's cgroup, with cgroup for the cgroup
// namespace alone.
func joinNamespaces(nss []specs.LinuxNamespace, cgroup bool) error {
	for _, ns := range nss {
		if ns.Path == "" || (ns.Type == specs.CgroupNamespace) != cgroup {
			continue
		}
		var flag int
		switch ns.Type {
		case specs.NetworkNamespace:
			flag = unix.CLONE_NEWNET
		case specs.UTSNamespace:
			flag = unix.CLONE_NEWUTS
		case specs.IPCNamespace:
			flag = unix.CLONE_NEWIPC
		case specs.CgroupNamespace:
			flag = unix.CLONE_NEWCGROUP
		default:
			continue
		}
		fd, err := unix.Open(ns.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s namespace %s: %w", ns.Type, ns.Path, err)
		}
		err = unix.Setns(fd, flag)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("join %s namespace %s: %w", ns.Type, ns.Path, err)
		}
	}
	for _, ns := range nss {
		if cgroup && ns.Type == specs.CgroupNamespace && ns.Path == "" {
			if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
				return fmt.Errorf("new cgroup namespace: %w", err)
			}
		}
	}
	return nil
}

// loopbackUp sets IFF_UP on lo in the current network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: set flags: %w", err)
	}
	return nil
}

// setOOMScoreAdj applies the spec's score. Lowering it takes
// CAP_SYS_RESOURCE, which some hosts withhold even from root; then the
// score stays as inherited and a warning says so.
func setOOMScoreAdj(adj *int) (string, error) {
	if adj == nil {
		return "", nil
	}
	err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(*adj)), 0)
	if err == nil {
		return "", nil
	}
	if errors.Is(err, os.ErrPermission) {
		cur, _ := os.ReadFile("/proc/self/oom_score_adj")
		return fmt.Sprintf("oom_score_adj %d not allowed by the host, kept %s", *adj, strings.TrimSpace(string(cur))), nil
	}
	return "", fmt.Errorf("set oom_score_adj %d: %w", *adj, err)
}

var rlimitTypes = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}

// setRlimits applies the spec's limits, clamped to the current hard limit:
// raising a hard limit takes CAP_SYS_RESOURCE, which the host may withhold.
func setRlimits(rls []specs.POSIXRlimit) ([]string, error) {
	var warnings []string
	for _, rl := range rls {
		res, ok := rlimitTypes[rl.Type]
		if !ok {
			return nil, fmt.Errorf("rlimit %q: %w", rl.Type, unix.EINVAL)
		}
		want := unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}
		err := unix.Setrlimit(res, &want)
		if err == nil {
			continue
		}
		if err != unix.EPERM {
			return nil, fmt.Errorf("setrlimit %s: %w", rl.Type, err)
		}
		var cur unix.Rlimit
		if err := unix.Getrlimit(res, &cur); err != nil {
			return nil, fmt.Errorf("getrlimit %s: %w", rl.Type, err)
		}
		clamped := unix.Rlimit{Cur: min(rl.Soft, cur.Max), Max: min(rl.Hard, cur.Max)}
		if err := unix.Setrlimit(res, &clamped); err != nil {
			return nil, fmt.Errorf("setrlimit %s (clamped to %d/%d): %w", rl.Type, clamped.Cur, clamped.Max, err)
		}
		warnings = append(warnings, fmt.Sprintf("%s %d/%d above the host's hard limit, clamped to %d/%d", rl.Type, rl.Soft, rl.Hard, clamped.Cur, clamped.Max))
	}
	return warnings, nil
}

// setupConsole creates the container's pty from its own devpts instance,
// so the slave's /dev/pts/N exists inside the container, sends the master
// to the parent, and makes the slave this process's controlling terminal
// and stdio. Create started us with Setsid, so we have no terminal yet.
func setupConsole(sock syncSocket, devConsole bool, size *specs.Box) error {
	master, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/ptmx: %w", err)
	}
	defer unix.Close(master)
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		return fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(master, unix.TIOCGPTN)
	if err != nil {
		return fmt.Errorf("pty number: %w", err)
	}
	if size != nil {
		ws := &unix.Winsize{Row: uint16(size.Height), Col: uint16(size.Width)}
		if err := unix.IoctlSetWinsize(master, unix.TIOCSWINSZ, ws); err != nil {
			return fmt.Errorf("set console size: %w", err)
		}
	}
	slavePath := "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	slave, err := unix.Open(slavePath, unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", slavePath, err)
	}
	defer unix.Close(slave)
	// /dev/console is the pty too, as in runc, for programs that write to it.
	if devConsole {
		if f, err := os.OpenFile("/dev/console", os.O_CREATE|os.O_RDONLY, 0o600); err == nil {
			f.Close()
			_ = unix.Mount(slavePath, "/dev/console", "", unix.MS_BIND, "")
		}
	}
	if err := sock.send(syncMsg{Type: msgConsole}, master); err != nil {
		return err
	}
	for fd := 0; fd < 3; fd++ {
		if err := unix.Dup3(slave, fd, 0); err != nil {
			return fmt.Errorf("dup pty to fd %d: %w", fd, err)
		}
	}
	if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("set controlling terminal: %w", err)
	}
	return nil
}

// lookPath finds the executable as execvp would, but with the container's
// PATH (from the spec's environment) and the container's filesystem.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		if err := checkExecutable(file); err != nil {
			return "", fmt.Errorf("exec %q: %w", file, err)
		}
		return file, nil
	}
	pathEnv := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	var denied error
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		err := checkExecutable(p)
		if err == nil {
			return p, nil
		}
		if errors.Is(err, unix.EACCES) && denied == nil {
			denied = err
		}
	}
	if denied != nil {
		return "", fmt.Errorf("exec %q: %w", file, denied)
	}
	return "", fmt.Errorf("exec %q: executable file not found in $PATH (%s): %w", file, pathEnv, unix.ENOENT)
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return errno
		}
		return err
	}
	if fi.IsDir() {
		return unix.EACCES
	}
	if fi.Mode()&0o111 == 0 {
		return unix.EACCES
	}
	return nil
}

// setUser switches to the spec's uid, gid and supplementary groups while
// keeping exactly the spec's capabilities. KEEPCAPS carries the permitted
// set across setuid; capset then trims all three sets.
func setUser(proc *specs.Process, caps capSets) error {
	if err := dropBounding(caps.bounding); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set keepcaps: %w", err)
	}
	groups := make([]int, 0, len(proc.User.AdditionalGids))
	for _, g := range proc.User.AdditionalGids {
		groups = append(groups, int(g))
	}
	// This thread's credentials only, like its capabilities and
	// no_new_privs: it is the one that execs, and execve ends every other
	// thread. The syscall package's variants change every thread, which
	// with cgo is glibc signalling each one and waiting for it, three
	// times: about a millisecond of a container's start. The other
	// threads are the Go runtime's own until execve; nothing else runs in
	// a process that is not dumpable, alone in its pid namespace.
	if err := unix.Setgroups(groups); err != nil { // per thread (raw)
		return fmt.Errorf("setgroups %v: %w", groups, err)
	}
	gid, uid := uintptr(proc.User.GID), uintptr(proc.User.UID)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, gid, gid, gid); e != 0 {
		return fmt.Errorf("setgid %d: %w", proc.User.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uid, uid, uid); e != 0 {
		return fmt.Errorf("setuid %d: %w", proc.User.UID, e)
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("clear keepcaps: %w", err)
	}
	if proc.User.Umask != nil {
		unix.Umask(int(*proc.User.Umask))
	}
	return applyCaps(caps)
}

// closeLeakedFDs marks every descriptor above stdio close-on-exec, so
// nothing the shim or the Go runtime opened reaches the user's process.
func closeLeakedFDs() {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}
