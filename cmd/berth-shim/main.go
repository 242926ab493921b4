// Command berth-shim supervises one container for berthd: it owns the
// container's namespaces, cgroup and stdio and outlives berthd restarts.
// berthd starts it; it is not meant to be run by hand.
//
// # Start protocol (bootstrap version 1)
//
// berthd runs, with the bundle as working directory:
//
//	berth-shim start --id ID --namespace NS --bundle DIR --state STATE
//
// start binds the socket STATE/s/<hash>.sock (package shim/bundle names
// it), re-executes itself as `berth-shim serve …` in a new session with
// the listener as fd 3, stdin and stdout on /dev/null and stderr appended
// to DIR/shim.log, so nothing ties it to berthd. It then prints one line
// of protobuf JSON, a berth.shim.v1.Bootstrap with version 1, the
// protocol ("ttrpc"), the address and the long-lived shim's pid, and
// exits 0. Any failure exits non-zero with the reason on stderr. berthd
// records the line as DIR/bootstrap.json.
//
// serve is a child subreaper (exec'd processes are reparented to it),
// serves ShimService with ttrpc (github.com/containerd/ttrpc) on fd 3,
// and exits after a Shutdown call, removing its socket.
//
// `berth-shim start --warm --state STATE` starts a warm shim, one not yet
// bound to a container, which berthd adopts for a later task over the
// control socket it passes as fd 3; see shim/bundle/warm.go.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata/identifiers"
	shimv1 "github.com/berth-dev/berth/proto/berth/shim/v1"
	"github.com/berth-dev/berth/shim/bundle"
	"github.com/berth-dev/berth/shim/container"
	"github.com/berth-dev/berth/shim/task"
	"github.com/berth-dev/berth/version"
)

// BootstrapVersion is the version of the start protocol this shim speaks.
const BootstrapVersion = 1

// Protocol is the RPC protocol ShimService is served with, as the
// bootstrap record names it. ttrpc rather than gRPC: one per container,
// the shim's memory counts, and ttrpc's server is a fraction of gRPC's.
const Protocol = "ttrpc"

func main() {
	// No heap profiling: nothing reads it, and its first sample makes the
	// runtime allocate a profile hash table that each shim would keep.
	runtime.MemProfileRate = 0
	if container.IsInit() {
		container.Init() // never returns
	}
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Printf("berth-shim %s (%s)\n", version.Version, version.GitCommit)
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "berth-shim: started by berthd (berth-shim start --id … --namespace … --bundle … --state …), not by hand")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("berth-shim "+os.Args[1], flag.ContinueOnError)
	id := fs.String("id", "", "container id")
	ns := fs.String("namespace", "", "namespace")
	bundleDir := fs.String("bundle", "", "bundle directory")
	state := fs.String("state", "", "berthd's state directory")
	debugLog := fs.Bool("debug", false, "debug logging")
	warm := fs.Bool("warm", false, "start a warm shim, adopted later by berthd (see shim/bundle/warm.go)")
	warmDir := fs.String("dir", "", "serve --warm: the warm shim's directory")
	warmCgParent := fs.String("cgroup-parent", "", "--warm: the cgroup parent of the group made ahead (empty: none)")
	warmCgRes := fs.String("cgroup-resources", "", "--warm: the resources of the group made ahead, as runtime-spec JSON")
	if err := fs.Parse(os.Args[2:]); err != nil {
		os.Exit(2)
	}
	if *warm {
		if *state == "" || !filepath.IsAbs(*state) {
			fmt.Fprintln(os.Stderr, "berth-shim: --state must be an absolute path")
			os.Exit(2)
		}
		var err error
		wc := warmCgroupArgs{parent: *warmCgParent, resources: *warmCgRes}
		switch os.Args[1] {
		case "start":
			err = startWarm(*state, *debugLog, wc)
		case "serve":
			err = serveWarm(*state, *warmDir, *debugLog, wc)
		default:
			err = fmt.Errorf("unknown command %q (start)", os.Args[1])
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "berth-shim %s --warm: %v\n", os.Args[1], err)
			os.Exit(1)
		}
		return
	}
	for _, v := range []struct{ field, val string }{{"id", *id}, {"namespace", *ns}} {
		if err := identifiers.Validate(v.field, v.val); err != nil {
			fmt.Fprintln(os.Stderr, "berth-shim:", err)
			os.Exit(2)
		}
	}
	if *bundleDir == "" || !filepath.IsAbs(*bundleDir) || *state == "" || !filepath.IsAbs(*state) {
		fmt.Fprintln(os.Stderr, "berth-shim: --bundle and --state must be absolute paths")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "start":
		if err := start(*id, *ns, *bundleDir, *state, *debugLog); err != nil {
			fmt.Fprintln(os.Stderr, "berth-shim start:", err)
			os.Exit(1)
		}
	case "serve":
		if err := serve(*id, *ns, *bundleDir, *state, *debugLog); err != nil {
			fmt.Fprintln(os.Stderr, "berth-shim serve:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "berth-shim: unknown command %q (start)\n", os.Args[1])
		os.Exit(2)
	}
}

// start binds the socket, launches the long-lived shim and prints the
// bootstrap record.
func start(id, ns, bundleDir, state string, debugLog bool) error {
	sock := bundle.SocketPath(state, ns, id)
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		return err
	}
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("socket %s is served by a running shim: delete that task first", sock)
	}
	os.Remove(sock)
	args := []string{"serve", "--id", id, "--namespace", ns, "--bundle", bundleDir, "--state", state}
	if debugLog {
		args = append(args, "--debug")
	}
	return launch(sock, bundleDir, args, nil)
}

// startWarm is start for a warm shim: its socket and log go to a fresh
// directory under bundle.WarmDir, and the control socket (fd 3) is handed
// on to serve as fd 4.
func startWarm(state string, debugLog bool, wc warmCgroupArgs) error {
	ctl := os.NewFile(3, "control")
	if ctl == nil {
		return errors.New("no control socket on fd 3 (started by berthd?)")
	}
	defer ctl.Close()
	if err := os.MkdirAll(bundle.WarmDir(state), 0o700); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(bundle.WarmDir(state), "")
	if err != nil {
		return err
	}
	args := []string{"serve", "--warm", "--state", state, "--dir", dir}
	if wc.parent != "" {
		args = append(args, "--cgroup-parent", wc.parent, "--cgroup-resources", wc.resources)
	}
	if debugLog {
		args = append(args, "--debug")
	}
	if err := launch(filepath.Join(dir, bundle.WarmSocketName), dir, args, ctl); err != nil {
		os.RemoveAll(dir)
		return err
	}
	return nil
}

// launch binds sock, re-executes this binary with args in its own session
// (cwd dir, the listener as fd 3, extra as fd 4 when set, stderr appended
// to dir's shim.log) and prints the bootstrap record.
func launch(sock, dir string, args []string, extra *os.File) error {
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", sock)
	unix.Umask(old)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", sock, err)
	}
	ul := l.(*net.UnixListener)
	// The socket file stays when the listener closes here: it belongs to
	// the shim that serves it from now on.
	ul.SetUnlinkOnClose(false)
	lf, err := ul.File()
	ul.Close()
	if err != nil {
		os.Remove(sock)
		return err
	}
	defer lf.Close()
	logf, err := os.OpenFile(filepath.Join(dir, bundle.ShimLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		os.Remove(sock)
		return err
	}
	defer logf.Close()
	self, err := os.Executable()
	if err != nil {
		os.Remove(sock)
		return err
	}
	cmd := exec.Command(self, args...)
	cmd.Env = serveEnv(os.Environ())
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = nil, logf // stdin/stdout: /dev/null
	cmd.ExtraFiles = []*os.File{lf}
	if extra != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, extra)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		os.Remove(sock)
		return err
	}
	b := &shimv1.Bootstrap{Version: BootstrapVersion, Address: "unix://" + sock, Pid: int32(cmd.Process.Pid),
		Protocol: Protocol, ShimVersion: version.Version}
	out, err := protojson.Marshal(b)
	if err != nil {
		cmd.Process.Kill()
		return err
	}
	// Not waited for: it outlives us, and init (or a subreaper) reaps it.
	cmd.Process.Release()
	_, err = fmt.Println(string(out))
	return err
}

// serveEnv is the environment of the long-lived shim (launch is the one
// way it starts): the runtime settings that must hold from its first
// instruction, before main could make them. One P: a shim mostly sleeps,
// every P carries its own caches, and GOMAXPROCS(1) in main would hand
// the second P's cached spans back to the heap, which costs the runtime
// bookkeeping pages it never returns. No heap profiling: its first
// sample, taken during package initialisation, would allocate the
// profile's tables. The container's processes do not inherit it: they get
// the spec's environment.
func serveEnv(env []string) []string {
	out := make([]string, 0, len(env)+2)
	godebug := "memprofilerate=0"
	for _, kv := range env {
		switch {
		case strings.HasPrefix(kv, "GOMAXPROCS="):
			continue
		case strings.HasPrefix(kv, "GODEBUG="):
			if v := strings.TrimPrefix(kv, "GODEBUG="); v != "" {
				godebug = v + "," + godebug
			}
			continue
		}
		out = append(out, kv)
	}
	return append(out, "GOMAXPROCS=1", "GODEBUG="+godebug)
}

// serve runs the long-lived shim.
func serve(id, ns, bundleDir, state string, debugLog bool) error {
	log, l, err := setupServe(debugLog)
	if err != nil {
		return err
	}
	log = log.With("id", id, "namespace", ns)
	return run(log, l, id, ns, bundleDir, state, nil, nil)
}

// The shim's memory policy.
//
// A shim runs without garbage collection for as long as it can. Measured
// with 20 idle containers, that is 2.2 MiB of PSS per shim against 3.0
// with a collector on: the first collection of a process moves the spans
// of every size class in use into fresh span sets, whose blocks and
// spines (some 150 of each here, about 1 MiB) the runtime keeps for good,
// while the garbage of a shim's start that stays uncollected is smaller.
// What a shim does once its container runs allocates little or nothing
// (its output goes to the log through reused buffers), so the heap grows
// only with what clients ask of it. A memory limit bounds that growth: a
// shim whose heap reaches it is collected, and from that first
// collection on (its one-time cost paid) it runs a collector as usual,
// at GOGC 25 (the GC runs often, which costs little in a process that
// mostly sleeps) and without a limit, which a live heap above it would
// turn into back-to-back collections.
const (
	// busyMemoryLimit bounds the runtime's memory during start-up and the
	// first Create.
	busyMemoryLimit = 64 << 20
	// idleHeadroom is how much the runtime's memory may grow once the
	// container is created before the first collection.
	idleHeadroom     = 4 << 20
	settledGCPercent = 25
)

// memPolicy carries out the policy above; trim is the task service's
// Trim hook.
type memPolicy struct {
	settled    sync.Once
	collecting atomic.Bool
}

// shimMemory is the shim's one memory policy.
var shimMemory memPolicy

// gcSentinel is an object nothing references, whose cleanup runs at the
// first collection.
type gcSentinel struct{ _ *byte }

// start is the policy from the shim's first instruction in main.
func (m *memPolicy) start() {
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(busyMemoryLimit)
	runtime.AddCleanup(new(gcSentinel), func(struct{}) { m.collected() }, struct{}{})
}

// settle runs once the container is created (trim's first call): the
// limit becomes the runtime's memory now plus idleHeadroom.
func (m *memPolicy) settle() {
	if m.collecting.Load() {
		return
	}
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		m.collected() // cannot tell: collect as usual
		return
	}
	debug.SetMemoryLimit(int64(s[0].Value.Uint64()-s[1].Value.Uint64()) + idleHeadroom)
}

// collected switches to the usual collector, after the first collection.
func (m *memPolicy) collected() {
	if m.collecting.Swap(true) {
		return
	}
	debug.SetGCPercent(settledGCPercent)
	debug.SetMemoryLimit(math.MaxInt64)
	// The heap grew to the limit: hand back what this collection freed
	// now, rather than at the background scavenger's pace.
	debug.FreeOSMemory()
}

// trim settles the policy after the container's Create, then hands the
// heap grown by a burst of work back to the OS once a collector runs;
// before that, a collection would cost more than the garbage it frees.
func (m *memPolicy) trim() {
	m.settled.Do(m.settle)
	if m.collecting.Load() {
		debug.FreeOSMemory()
	}
}

// setupServe is what every long-lived shim does first: runtime settings,
// logging, subreaper, signals, and the listener on fd 3.
func setupServe(debugLog bool) (*slog.Logger, net.Listener, error) {
	// No garbage collection for as long as it can (see memPolicy). One P
	// it has from its environment (serveEnv).
	shimMemory.start()
	level := slog.LevelInfo
	if debugLog {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, nil, fmt.Errorf("become a child subreaper: %w", err)
	}
	// berthd's terminal signals never reach us (own session); SIGTERM
	// from the system is ignored too: the agent decides when we go.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE)
	lf := os.NewFile(3, "listener")
	l, err := net.FileListener(lf)
	lf.Close() // FileListener holds a dup; fd 3 must not linger for children
	if err != nil {
		return nil, nil, fmt.Errorf("listener on fd 3: %w", err)
	}
	return log, l, nil
}

// run serves ShimService for container (ns, id) on l until Shutdown (or
// until l is closed). pre, if set, is a preforked init for the
// container's Create.
func run(log *slog.Logger, l net.Listener, id, ns, bundleDir, state string, pre *container.Preforked, cg *container.PreparedCgroup) error {
	sock := bundle.SocketPath(state, ns, id)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc, err := task.New(ctx, id, ns, bundleDir, log)
	if err != nil {
		pre.Close()
		return err
	}
	defer svc.Close()
	svc.SeccompCacheDir = filepath.Join(state, "seccomp")
	svc.Trim = shimMemory.trim
	svc.Prefork, svc.Cgroup = pre, cg
	srv, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	shimv1.RegisterShimServiceService(srv, svc)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx, l) }()
	log.Debug("serving", "socket", sock, "protocol", Protocol)
	select {
	case <-svc.Done:
		// Let the Shutdown reply go out (berthd does not need it: it
		// waits for this process to end), then stop. Every container
		// removal waits for this, so the pause is short.
		time.Sleep(time.Millisecond)
		srv.Close()
		if err = <-errc; errors.Is(err, ttrpc.ErrServerClosed) {
			err = nil
		}
	case err = <-errc:
	}
	os.Remove(sock)
	return err
}

// warmCgroupArgs say which group a warm shim makes ahead for its
// preforked init (container.WarmCgroup): berthd's default cgroup parent
// and the resources of a container run with no options.
type warmCgroupArgs struct {
	parent, resources string
}

// make makes the group, nil when there is none to make or it fails (the
// adoption then makes the container's group as a cold start does).
func (wc warmCgroupArgs) make(log *slog.Logger, dir string, pre *container.Preforked) *container.WarmCgroup {
	if wc.parent == "" || pre == nil {
		return nil
	}
	var res specs.LinuxResources
	if err := json.Unmarshal([]byte(wc.resources), &res); err != nil {
		log.Warn("warm cgroup: --cgroup-resources", "err", err)
		return nil
	}
	cg, err := container.NewWarmCgroup(wc.parent, filepath.Base(dir), &res, pre)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotImplemented) {
			log.Debug("no warm cgroup", "err", err) // cgroup v2
		} else {
			log.Warn("warm cgroup", "err", err)
		}
		return nil
	}
	return cg
}

// serveWarm is a warm shim: it preforks a container init, waits to be
// adopted over the control socket (fd 4), then serves like any shim.
func serveWarm(state, dir string, debugLog bool, wc warmCgroupArgs) error {
	if dir == "" || filepath.Dir(dir) != bundle.WarmDir(state) {
		return fmt.Errorf("--dir %q is not a directory under %s", dir, bundle.WarmDir(state))
	}
	unix.CloseOnExec(4) // never inherited by the init or exec'd processes
	// Non-blocking, so os.File reads it through the poller: a read that
	// waits parks its goroutine. A blocking read would hold the shim's
	// only P (GOMAXPROCS=1) in the syscall, and the goroutine that waits
	// for the adoption's commit would stall the cgroup's preparation and
	// the server until the runtime's monitor took the P back, which after
	// the warm shim's long idle took milliseconds.
	if err := unix.SetNonblock(4, true); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	ctl := os.NewFile(4, "control")
	log, l, err := setupServe(debugLog)
	if err != nil {
		return err
	}
	warmSock := filepath.Join(dir, bundle.WarmSocketName)
	// Until adopted, every way out removes what this shim made.
	abandon := func() {
		l.Close()
		os.Remove(warmSock)
		os.RemoveAll(dir)
	}
	pre, err := container.Prefork(container.DefaultNamespaces)
	if err != nil {
		// Still useful: only the init's start-up is not saved.
		log.Warn("prefork a container init", "err", err)
	}
	// Time to spare: do now what the container's Create would do cold.
	container.WarmUp()
	// The local time zone is read from /etc/localtime on first use: the
	// container's exit record, or a log line, would pay it at its exit.
	time.Now().Zone()
	container.PreloadSeccomp(filepath.Join(state, "seccomp"))
	warmCg := wc.make(log, dir, pre)
	closePre := func() {
		pre.Close()
		if err := warmCg.Close(); err != nil {
			log.Warn("remove the warm cgroup", "err", err)
		}
	}
	req, err := readAdopt(ctl)
	if err != nil {
		closePre()
		abandon()
		if errors.Is(err, io.EOF) {
			return nil // berthd went away before using us
		}
		return err
	}
	if err := adopt(state, dir, req); err != nil {
		writeAdoptReply(ctl, err)
		closePre()
		abandon()
		return err
	}
	log = log.With("id", req.ID, "namespace", req.Namespace)
	sock := bundle.SocketPath(state, req.Namespace, req.ID)
	// The commit, or EOF: berthd went away before recording this shim in
	// the bundle, so nobody would ever find it. Stop.
	go func() {
		defer ctl.Close()
		next, err := readAdopt(ctl)
		if err == nil && next.Commit {
			return
		}
		log.Warn("adoption not committed by berthd; stopping", "err", err)
		l.Close()
	}()
	if err := writeAdoptReply(ctl, nil); err != nil {
		closePre()
		l.Close()
		os.Remove(sock)
		return err
	}
	os.RemoveAll(dir)
	// The bundle's config.json is written: make the cgroup now (rename
	// the warm one), while berthd records this shim and calls Create.
	var cg *container.PreparedCgroup
	if pre != nil {
		cg = container.PrepareCgroup(func() (*container.Spec, error) { return task.LoadSpec(req.Bundle) },
			req.CgroupParent, req.ID, pre, warmCg)
		// Let it run now, ahead of the server's start: with one P, a
		// new goroutine otherwise waits behind the server's and the
		// Create call's, which then waits for it (measured: 3 ms).
		runtime.Gosched()
	}
	return run(log, l, req.ID, req.Namespace, req.Bundle, state, pre, cg)
}

// adopt binds this warm shim to the container: log, cwd and socket move
// to the container's. The warm directory goes after the reply (it is
// nobody's once the socket has moved).
func adopt(state, dir string, req bundle.AdoptRequest) error {
	for _, v := range []struct{ field, val string }{{"id", req.ID}, {"namespace", req.Namespace}} {
		if err := identifiers.Validate(v.field, v.val); err != nil {
			return err
		}
	}
	if req.Bundle != bundle.Dir(state, req.Namespace, req.ID) {
		return fmt.Errorf("bundle %q is not the task's bundle %s", req.Bundle, bundle.Dir(state, req.Namespace, req.ID))
	}
	logf, err := os.OpenFile(filepath.Join(req.Bundle, bundle.ShimLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	err = unix.Dup3(int(logf.Fd()), 2, 0)
	logf.Close()
	if err != nil {
		return fmt.Errorf("log to the bundle: %w", err)
	}
	if err := os.Chdir(req.Bundle); err != nil {
		return err
	}
	sock := bundle.SocketPath(state, req.Namespace, req.ID)
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(dir, bundle.WarmSocketName), sock); err != nil {
		return fmt.Errorf("move the socket: %w", err)
	}
	return nil
}

// maxAdoptMsg bounds an adoption message: a bundle path (at most
// PATH_MAX), an ID, a namespace and JSON around them.
const maxAdoptMsg = 8 << 10

func readAdopt(ctl *os.File) (bundle.AdoptRequest, error) {
	var req bundle.AdoptRequest
	// One datagram (SOCK_SEQPACKET) of a few paths: one that does not fit
	// is cut short and fails to decode. Not 64 KiB: the shim runs without
	// a collector (see memPolicy), so what it allocates stays.
	buf := make([]byte, maxAdoptMsg)
	n, err := ctl.Read(buf)
	if err != nil {
		return req, err
	}
	if n == 0 {
		return req, io.EOF
	}
	if err := json.Unmarshal(buf[:n], &req); err != nil {
		return req, fmt.Errorf("adopt request: %w", err)
	}
	return req, nil
}

func writeAdoptReply(ctl *os.File, err error) error {
	var r bundle.AdoptReply
	if err != nil {
		r.Error = err.Error()
	}
	data, _ := json.Marshal(r)
	_, werr := ctl.Write(data)
	return werr
}
