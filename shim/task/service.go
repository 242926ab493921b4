// Package task is the shim's ShimService: one container, its init and the
// processes exec'd into it.
//
// # Process state and exits
//
// One goroutine, the loop, owns every process's state. RPC handlers and
// the exit watcher talk to it by sending closures (do) or exit events; no
// handler touches a process's state directly, so there is no ordering
// between locks to get wrong. Blocking work (creating the container,
// starting a process) runs outside the loop, which only records results.
//
// An exit goes: pidfd readable → the watcher reaps it (waitid P_PIDFD) →
// the process's output copiers drain (bounded wait) → for the init,
// exit.json is written durably → the loop records the exit, wakes waiters
// and queues a /tasks/exit event.
//
// # Events
//
// Events carry a sequence number and stay queued until an Events call's
// after_seq acknowledges them. While berthd is away they accumulate (the
// queue is bounded; the oldest non-exit events go first) and a
// reconnecting agent gets them all.
package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/errdefs/errgrpc"
	shimv1 "github.com/berth-dev/berth/proto/berth/shim/v1"
	"github.com/berth-dev/berth/shim/bundle"
	"github.com/berth-dev/berth/shim/container"
	"github.com/berth-dev/berth/shim/logfile"
	"github.com/berth-dev/berth/version"
)

// ReasonInitFailed is the ErrorInfo reason on a Create or Start error from
// the container init; its metadata "exit_code" is the shell-style code
// (127 not found, 126 not executable, 128 otherwise).
const ReasonInitFailed = "INIT_FAILED"

// maxEvents bounds the unacknowledged event queue.
const maxEvents = 4096

// startWaitBound bounds how long an exit waits for the Start under way
// to record itself (see handleExit).
const startWaitBound = 30 * time.Second

// ioDrainTimeout bounds how long an exit waits for the process's output to
// reach EOF: a process that left a grandchild holding the pipe must not
// delay its exit forever.
const ioDrainTimeout = 2 * time.Second

// proc is one process: the init (execID "") or an exec'd one. Owned by
// the loop, except the io fields set before it is shared.
type proc struct {
	execID string
	// process is an exec'd process's specs.Process as JSON, until it
	// starts.
	process  []byte
	terminal bool
	// wantStdin: the client asked for stdin (a terminal's is the console).
	wantStdin bool
	pid       int
	status    shimv1.Status
	exit      uint32
	exitedAt  time.Time
	oom       bool
	// failCode is the exit status to report when Start failed in the init
	// (127, 126): the process then exits with no meaningful status.
	failCode int
	done     chan struct{} // closed once the exit is recorded

	out     *fanout
	stdinW  *os.File // pipe or console; nil when stdin is closed
	console *os.File
	ioWG    sync.WaitGroup // output copiers
	outR    []*os.File     // read ends, closed after the copiers end
	childIO []*os.File     // ends passed to the process, closed after start
	logW    *logfile.Writer
	// logPath and logFiles locate the init's log, for attach with logs.
	logPath  string
	logFiles int
	lineW    []*logfile.LineWriter // stdout's, stderr's; set before sharing
	// starting is closed when a Start of the init has done its
	// bookkeeping (the start event, or the failure code); nil before.
	starting chan struct{}
	// mntNS holds the init's mount namespace (the init's proc only).
	mntNS *heldNS
}

// heldNS keeps a namespace alive through an open file of it.
//
// Why the init's mount namespace: when the last process in it exits, the
// kernel tears it down (every mount of the container, with RCU grace
// periods) inside that process's exit, before its parent is told. Held by
// the shim, the teardown happens when the task is deleted (Delete lets
// go before it unmounts the rootfs), after the exit has reached berthd
// and the client: 1-2 ms off every container's exit as its client sees
// it. Not at once after the exit is published: the close that tears it
// down blocks a thread for those milliseconds, and with one P the shim's
// other goroutines, the ones sending the exit, wait for sysmon to notice.
type heldNS struct {
	once sync.Once
	f    *os.File
}

// holdNS opens /proc/<pid>/ns/<kind>; nil (nothing held) on failure.
func holdNS(pid int, kind string) *heldNS {
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
	if err != nil {
		return nil
	}
	return &heldNS{f: f}
}

// release lets the namespace go and returns once it has (the close that
// ends it may take milliseconds); it is idempotent and safe from several
// goroutines.
func (h *heldNS) release() {
	if h != nil {
		h.once.Do(func() { h.f.Close() })
	}
}

// Service serves ShimService for one container.
type Service struct {
	id, ns, bundleDir string
	log               *slog.Logger

	ops   chan func()
	exits chan exitEvent
	w     *exitWatcher
	ctx   context.Context // the shim's lifetime
	stop  context.CancelFunc
	// Done is closed when a Shutdown call asks main to stop serving.
	Done chan struct{}
	// SeccompCacheDir keeps compiled seccomp programs across shims (set
	// before serving; empty for none).
	SeccompCacheDir string
	// Prefork is a container init started ahead (a warm shim's), for
	// Create; set before serving. The Service owns it.
	Prefork *container.Preforked
	// Cgroup is the container's cgroup being made ahead (a warm shim's,
	// from its adoption), for Create; set before serving.
	Cgroup    *container.PreparedCgroup
	preforkMu sync.Mutex
	// Trim, when set, replaces debug.FreeOSMemory after a burst of work,
	// the first being the container's Create (berth-shim's sets its
	// memory policy then, and frees nothing while its collector is off).
	Trim func()

	// createEnded is closed when the first Create call ends, however it
	// ends: an attach opened with wait_create waits for it.
	createEnded chan struct{}
	endCreate   func()

	// Loop-owned state.
	c          *container.Container
	procs      map[string]*proc
	events     []*shimv1.EventsResponse
	seq        uint64
	eventsWake chan struct{} // closed and replaced on each new event
	deleted    bool
	oomSeen    bool // a /tasks/oom event has been queued
	// oomWatched is closed once the init's OOM notifications are set up
	// (after Create's reply); the init's Start waits for it.
	oomWatched chan struct{}
	shutOnce   sync.Once
}

// New makes the service and starts its loop and exit watcher; both end
// when ctx is cancelled (the shim exiting).
func New(ctx context.Context, id, ns, bundleDir string, log *slog.Logger) (*Service, error) {
	exits := make(chan exitEvent, 16)
	w := newExitWatcher(exits)
	ctx, stop := context.WithCancel(ctx)
	s := &Service{
		id: id, ns: ns, bundleDir: bundleDir, log: log,
		ops: make(chan func()), exits: exits, w: w, ctx: ctx, stop: stop,
		Done: make(chan struct{}), procs: map[string]*proc{}, eventsWake: make(chan struct{}),
		createEnded: make(chan struct{}),
	}
	s.endCreate = sync.OnceFunc(func() { close(s.createEnded) })
	go s.loop()
	return s, nil
}

// Close stops the loop and the watcher, and kills an unused prefork.
func (s *Service) Close() {
	s.stop()
	s.w.close()
	pre, cg := s.takePrefork()
	pre.Close()
	// An unused prepared cgroup goes with the bundle; a warm one that was
	// not renamed into it is not the bundle's.
	cg.ReleaseWarm()
}

// takePrefork hands the prefork to its one user.
func (s *Service) takePrefork() (*container.Preforked, *container.PreparedCgroup) {
	s.preforkMu.Lock()
	defer s.preforkMu.Unlock()
	p, cg := s.Prefork, s.Cgroup
	s.Prefork, s.Cgroup = nil, nil
	return p, cg
}

// LoadSpec reads and parses the bundle's config.json.
func LoadSpec(bundleDir string) (*container.Spec, error) {
	data, err := os.ReadFile(filepath.Join(bundleDir, bundle.ConfigFile))
	if err != nil {
		return nil, err
	}
	return container.ParseSpec(data)
}

func (s *Service) loop() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case f := <-s.ops:
			f()
		case e := <-s.exits:
			s.handleExit(e)
		}
	}
}

// do runs f in the loop and waits for it.
func (s *Service) do(f func()) error {
	done := make(chan struct{})
	select {
	case s.ops <- func() { f(); close(done) }:
	case <-s.ctx.Done():
		return fmt.Errorf("shim of %s is stopping: %w", s.id, errdefs.ErrUnavailable)
	}
	<-done
	return nil
}

// handleExit runs in the loop. The output drain and the durable record
// happen in a goroutine, which hands the result back through do.
func (s *Service) handleExit(e exitEvent) {
	p := s.procs[e.execID]
	if p == nil {
		return
	}
	c := s.c
	starting := p.starting
	go func() {
		if starting != nil {
			// A Start is under way: its event (or its failure code) comes
			// before this exit, however fast the process was. Bounded, as
			// Start returns once the init has exec'd or failed.
			select {
			case <-starting:
			case <-time.After(startWaitBound):
				s.log.Warn("exit recorded while its start is still under way", "exec", e.execID)
			}
		}
		drained := make(chan struct{})
		go func() { p.ioWG.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-time.After(ioDrainTimeout):
			s.log.Warn("output still open after exit; not waiting for it", "exec", e.execID)
		}
		if e.execID != "" {
			// An exec's stdio is ours (the init's belongs to the
			// container until Destroy): release it now.
			closeAll(p.outR)
			var console, stdin *os.File
			s.do(func() { console, stdin, p.console, p.stdinW = p.console, p.stdinW, nil, nil })
			if stdin != nil && stdin != console {
				stdin.Close()
			}
			if console != nil {
				console.Close()
			}
		}
		status := e.status
		var oom bool
		if e.execID == "" && c != nil {
			oom, _ = c.OOMKilled()
		}
		s.do(func() {
			if p.failCode != 0 {
				status = uint32(p.failCode)
			}
			p.exit, p.exitedAt, p.oom = status, e.at, oom
		})
		if e.execID == "" {
			// Durable before anyone is told: an agent that misses the
			// event reads this file.
			rec := bundle.ExitRecord{Pid: uint32(p.pid), ExitStatus: status, ExitedAt: e.at, OOMKilled: oom}
			if err := bundle.WriteExit(s.bundleDir, rec); err != nil {
				s.log.Error("record exit", "err", err)
			}
		}
		s.do(func() {
			p.status = shimv1.Status_STATUS_STOPPED
			close(p.done)
			if e.execID != "" {
				s.forgetOldExecs()
			}
			if oom && !s.oomSeen {
				// The kernel's notification may trail the exit; the OOM
				// is reported before the exit it caused either way.
				s.oomSeen = true
				s.publish(&shimv1.EventsResponse{Topic: "/tasks/oom"})
			}
			s.publish(&shimv1.EventsResponse{Topic: "/tasks/exit", ExecId: e.execID, Pid: uint32(p.pid),
				ExitStatus: status, ExitedAt: timestamppb.New(e.at), OomKilled: oom})
		})
	}()
}

// maxExitedExecs bounds the exited exec'd processes a shim remembers for
// Wait, State and Delete. A client that execs and never deletes (berthctl
// exec, as docker exec) would otherwise grow the shim by each one, for the
// container's lifetime.
const maxExitedExecs = 32

// forgetOldExecs drops the oldest exited execs beyond maxExitedExecs;
// loop only.
func (s *Service) forgetOldExecs() {
	var exited []*proc
	for id, q := range s.procs {
		if id != "" && q.status == shimv1.Status_STATUS_STOPPED {
			exited = append(exited, q)
		}
	}
	if len(exited) <= maxExitedExecs {
		return
	}
	slices.SortFunc(exited, func(a, b *proc) int { return a.exitedAt.Compare(b.exitedAt) })
	for _, q := range exited[:len(exited)-maxExitedExecs] {
		delete(s.procs, q.execID)
	}
}

// publish queues an event; loop only.
func (s *Service) publish(ev *shimv1.EventsResponse) {
	s.seq++
	ev.Seq = s.seq
	ev.Id = s.id
	if ev.Timestamp == nil {
		ev.Timestamp = timestamppb.Now()
	}
	s.events = append(s.events, ev)
	if len(s.events) > maxEvents {
		for i, old := range s.events {
			if old.Topic != "/tasks/exit" {
				s.events = append(s.events[:i], s.events[i+1:]...)
				break
			}
		}
	}
	close(s.eventsWake)
	s.eventsWake = make(chan struct{})
}

func (s *Service) checkID(id string) error {
	if id != s.id {
		return status.Errorf(codes.NotFound, "this shim serves container %s, not %q", s.id, id)
	}
	return nil
}

// getProc finds a process in the loop.
func (s *Service) getProc(execID string) (*proc, error) {
	var p *proc
	if err := s.do(func() { p = s.procs[execID] }); err != nil {
		return nil, err
	}
	if p == nil {
		if execID == "" {
			return nil, status.Errorf(codes.NotFound, "container %s has no task: create it first", s.id)
		}
		return nil, status.Errorf(codes.NotFound, "container %s has no exec %q", s.id, execID)
	}
	return p, nil
}

// Connect implements ShimService.
func (s *Service) Connect(ctx context.Context, req *shimv1.ConnectRequest) (*shimv1.ConnectResponse, error) {
	resp := &shimv1.ConnectResponse{ShimPid: uint32(os.Getpid()), Version: version.Version}
	s.do(func() {
		if p := s.procs[""]; p != nil {
			resp.TaskPid = uint32(p.pid)
		}
	})
	return resp, nil
}

// Create implements ShimService: it makes the container's init, waiting
// for Start, with its stdio wired to the log file and attach.
func (s *Service) Create(ctx context.Context, req *shimv1.CreateRequest) (_ *shimv1.CreateResponse, retErr error) {
	defer s.endCreate()
	if err := s.checkID(req.GetId()); err != nil {
		return nil, err
	}
	var exists bool
	s.do(func() { exists = s.procs[""] != nil })
	if exists {
		return nil, status.Errorf(codes.AlreadyExists, "container %s already has a task", s.id)
	}
	// A warm shim read config.json at its adoption, to make the cgroup.
	s.preforkMu.Lock()
	prepared := s.Cgroup
	s.preforkMu.Unlock()
	spec := prepared.Spec()
	var err error
	if spec == nil {
		if spec, err = LoadSpec(s.bundleDir); errors.Is(err, errdefs.ErrInvalidArgument) {
			return nil, status.Errorf(codes.InvalidArgument, "the bundle's config.json: %v", err)
		} else if err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "read the bundle's config.json: %v", err)
		}
	}
	terminal := req.GetTerminal() || spec.Terminal()

	p := &proc{terminal: terminal, status: shimv1.Status_STATUS_CREATED, done: make(chan struct{}), out: newFanout(false)}
	defer func() {
		if retErr != nil {
			closeAll(p.childIO)
			closeAll(p.outR)
			if p.stdinW != nil {
				p.stdinW.Close()
			}
			if p.logW != nil {
				p.logW.Close()
			}
		}
	}()
	if lo := req.GetLog(); lo.GetPath() != "" {
		p.logPath, p.logFiles = lo.GetPath(), int(lo.GetMaxFiles())
		if p.logW, err = logfile.Open(lo.GetPath(), lo.GetMaxSizeBytes(), int(lo.GetMaxFiles())); err != nil {
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
	}
	var stdio container.Stdio
	if !terminal {
		if req.GetStdin() {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
			stdio.Stdin, p.stdinW = r, w
			p.childIO = append(p.childIO, r)
		}
		for i, stream := range []shimv1.OutputStream{shimv1.OutputStream_OUTPUT_STREAM_STDOUT, shimv1.OutputStream_OUTPUT_STREAM_STDERR} {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
			p.childIO = append(p.childIO, w)
			p.outR = append(p.outR, r)
			if i == 0 {
				stdio.Stdout = w
			} else {
				stdio.Stderr = w
			}
			_ = stream
		}
	}
	rootfs := filepath.Join(s.bundleDir, bundle.RootfsDir)
	pre, preCg := s.takePrefork()
	c, err := container.Create(ctx, container.Config{
		ID: s.id, Bundle: s.bundleDir, Parsed: spec, Rootfs: rootfs, Stdio: stdio,
		Terminal: terminal, CgroupParent: req.GetCgroupParent(), Logger: s.log,
		SeccompCacheDir: s.SeccompCacheDir, Prefork: pre, Cgroup: preCg,
	})
	if err != nil {
		return nil, initStatus(err)
	}
	closeAll(p.childIO)
	p.childIO = nil
	p.pid = c.Pid()
	if terminal {
		p.console = c.Console()
		if req.GetStdin() {
			p.stdinW = p.console
		}
	}
	s.startCopiers(p)
	// A pidfd of the watcher's own (not a dup, which would share its
	// non-blocking mode with the container's).
	pidfd, err := unix.PidfdOpen(c.Pid(), unix.PIDFD_NONBLOCK)
	if err == nil {
		err = s.w.add(pidfd, "")
	}
	if err != nil {
		c.Destroy()
		return nil, status.Errorf(codes.Internal, "watch the init of %s: %v", s.id, err)
	}
	p.mntNS = holdNS(c.Pid(), "mnt")
	// The OOM notifications are set up after the reply, while berthd
	// records the task and asks for its start (a millisecond of cgroup
	// files off the start's path): the init's Start waits for them, and
	// nothing can run out of memory before it.
	oomWatched := make(chan struct{})
	s.do(func() {
		s.c = c
		s.procs[""] = p
		s.oomWatched = oomWatched
	})
	go func() {
		defer close(oomWatched)
		s.watchOOM(c)
	}()
	// Creating is the shim's busiest moment and the heap it grew is
	// garbage now: hand it back, as the shim then idles for the
	// container's lifetime.
	go s.trimMemory()
	return &shimv1.CreateResponse{Pid: uint32(p.pid)}, nil
}

func (s *Service) startCopiers(p *proc) {
	streams := []shimv1.OutputStream{shimv1.OutputStream_OUTPUT_STREAM_STDOUT, shimv1.OutputStream_OUTPUT_STREAM_STDERR}
	names := []logfile.Stream{logfile.Stdout, logfile.Stderr}
	srcs := p.outR
	if p.console != nil {
		srcs = []*os.File{p.console}
	}
	for i, r := range srcs {
		var lw *logfile.LineWriter
		if p.logW != nil {
			lw = &logfile.LineWriter{W: p.logW, Stream: names[i]}
			p.lineW = append(p.lineW, lw)
		}
		p.ioWG.Add(1)
		go func(r *os.File, stream shimv1.OutputStream) {
			defer p.ioWG.Done()
			copyOutput(r, stream, lw, p.out)
		}(r, streams[i])
	}
}

// watchOOM publishes /tasks/oom for each OOM kill until the shim stops or
// the cgroup goes away.
func (s *Service) watchOOM(c *container.Container) {
	ch, err := c.OOMEvents(s.ctx)
	if err != nil {
		s.log.Warn("no OOM notifications", "err", err)
		return
	}
	go func() {
		for range ch {
			s.do(func() {
				if p := s.procs[""]; p != nil && p.status == shimv1.Status_STATUS_STOPPED && s.oomSeen {
					return // reported with the exit already
				}
				s.oomSeen = true
				s.publish(&shimv1.EventsResponse{Topic: "/tasks/oom"})
			})
		}
	}()
}

// trimMemory returns the heap grown by a burst of work to the OS, and
// logs the runtime's view of the shim's memory at debug level.
func (s *Service) trimMemory() {
	if s.Trim != nil {
		s.Trim()
	} else {
		debug.FreeOSMemory()
	}
	if s.log.Enabled(s.ctx, slog.LevelDebug) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s.log.Debug("memory", "heap_inuse", ms.HeapInuse, "heap_alloc", ms.HeapAlloc, "stack_inuse", ms.StackInuse,
			"mspan", ms.MSpanInuse, "gc_sys", ms.GCSys, "other_sys", ms.OtherSys, "sys", ms.Sys, "heap_released", ms.HeapReleased)
	}
}

// initStatus turns an error from the container package into a gRPC
// status; an init failure carries its shell-style exit code.
func initStatus(err error) error {
	var ie *container.InitError
	if errors.As(err, &ie) {
		code := codes.FailedPrecondition
		switch ie.ExitCode() {
		case 127:
			code = codes.NotFound
		case 126:
			code = codes.PermissionDenied
		}
		st := status.New(code, err.Error())
		if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: ReasonInitFailed, Domain: "berth.dev",
			Metadata: map[string]string{"exit_code": strconv.Itoa(ie.ExitCode())}}); derr == nil {
			st = d
		}
		return st.Err()
	}
	return errStatus(err)
}

// errStatus maps errdefs kinds to codes, as berthd's API edge does.
func errStatus(err error) error { return errgrpc.ToStatus(err) }

// Start implements ShimService: it runs the init or a created exec.
func (s *Service) Start(ctx context.Context, req *shimv1.StartRequest) (*shimv1.StartResponse, error) {
	if err := s.checkID(req.GetId()); err != nil {
		return nil, err
	}
	p, err := s.getProc(req.GetExecId())
	if err != nil {
		return nil, err
	}
	var c *container.Container
	var st shimv1.Status
	var started chan struct{} // the init's: see handleExit
	var oomWatched chan struct{}
	if req.GetExecId() == "" {
		started = make(chan struct{})
	}
	s.do(func() {
		c, st, oomWatched = s.c, p.status, s.oomWatched
		if st == shimv1.Status_STATUS_CREATED && started != nil && p.starting == nil {
			p.starting = started
		}
	})
	if st != shimv1.Status_STATUS_CREATED {
		return nil, status.Errorf(codes.FailedPrecondition, "process %q of %s is %s, not created", req.GetExecId(), s.id, st)
	}
	if req.GetExecId() == "" {
		if oomWatched != nil {
			<-oomWatched
		}
		// The init's exit, however soon it comes, is recorded after this
		// start (its event or its failure code): see handleExit.
		defer close(started)
		if err := c.Start(); err != nil {
			var ie *container.InitError
			if errors.As(err, &ie) {
				s.do(func() { p.failCode = ie.ExitCode() })
			}
			return nil, initStatus(err)
		}
		s.do(func() {
			if p.status == shimv1.Status_STATUS_CREATED {
				p.status = shimv1.Status_STATUS_RUNNING
				s.publish(&shimv1.EventsResponse{Topic: "/tasks/start", Pid: uint32(p.pid)})
			}
		})
		go s.trimMemory()
		return &shimv1.StartResponse{Pid: uint32(p.pid)}, nil
	}
	return s.startExec(ctx, c, p)
}

func (s *Service) startExec(ctx context.Context, c *container.Container, p *proc) (*shimv1.StartResponse, error) {
	var stdio container.Stdio
	if !p.terminal {
		for i, f := range p.childIO {
			switch {
			case len(p.childIO) == 3 && i == 0:
				stdio.Stdin = f
			case len(p.childIO)-i == 2:
				stdio.Stdout = f
			default:
				stdio.Stderr = f
			}
		}
	}
	xp, err := c.ExecJSON(ctx, p.process, p.terminal, stdio)
	closeAll(p.childIO)
	p.childIO, p.process = nil, nil
	if err != nil {
		var ie *container.InitError
		code := 128
		if errors.As(err, &ie) {
			code = ie.ExitCode()
		}
		// The exec never ran: report it as exited with the shell's code,
		// so Wait and Attach give the client something to exit with.
		now := time.Now()
		closeAll(p.outR)
		s.do(func() {
			p.status, p.exit, p.exitedAt = shimv1.Status_STATUS_STOPPED, uint32(code), now
			close(p.done)
			s.forgetOldExecs()
			s.publish(&shimv1.EventsResponse{Topic: "/tasks/exit", ExecId: p.execID, ExitStatus: uint32(code), ExitedAt: timestamppb.New(now)})
		})
		return nil, initStatus(err)
	}
	s.do(func() {
		p.pid = xp.Pid
		p.status = shimv1.Status_STATUS_RUNNING
		if p.terminal {
			p.console = xp.Console
			if p.wantStdin {
				p.stdinW = xp.Console
			}
		}
		s.publish(&shimv1.EventsResponse{Topic: "/tasks/exec-started", ExecId: p.execID, Pid: uint32(xp.Pid)})
	})
	s.startCopiers(p)
	if err := s.w.add(xp.PidFD, p.execID); err != nil {
		// add closed the pidfd; the pid is safe to signal: our child,
		// not yet reaped, it cannot have been reused.
		unix.Kill(xp.Pid, unix.SIGKILL)
		return nil, status.Errorf(codes.Internal, "watch exec %s: %v", p.execID, err)
	}
	return &shimv1.StartResponse{Pid: uint32(xp.Pid)}, nil
}

// Exec implements ShimService: it records a process to be started by
// Start(exec_id), with its stdio ready so a client can attach first.
func (s *Service) Exec(ctx context.Context, req *shimv1.ExecRequest) (_ *shimv1.ExecResponse, retErr error) {
	if err := s.checkID(req.GetId()); err != nil {
		return nil, err
	}
	if req.GetExecId() == "" {
		return nil, status.Error(codes.InvalidArgument, "exec_id is required")
	}
	// Checked here, and passed on as it came: the exec's init decodes it.
	var view struct {
		Args []string `json:"args"`
	}
	if err := json.Unmarshal(req.GetProcess(), &view); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "exec process: %v", err)
	}
	if len(view.Args) == 0 {
		return nil, status.Error(codes.InvalidArgument, "exec process: no args")
	}
	p := &proc{execID: req.GetExecId(), process: req.GetProcess(), terminal: req.GetTerminal(), wantStdin: req.GetStdin(), status: shimv1.Status_STATUS_CREATED,
		done: make(chan struct{}), out: newFanout(true)}
	if !p.terminal {
		if req.GetStdin() {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
			p.childIO, p.stdinW = append(p.childIO, r), w
		}
		for i := 0; i < 2; i++ {
			r, w, err := os.Pipe()
			if err != nil {
				closeAll(p.childIO)
				closeAll(p.outR)
				return nil, status.Error(codes.Internal, err.Error())
			}
			p.childIO, p.outR = append(p.childIO, w), append(p.outR, r)
		}
	}
	var err error
	s.do(func() {
		init := s.procs[""]
		switch {
		case init == nil || s.c == nil:
			err = status.Errorf(codes.FailedPrecondition, "container %s has no task", s.id)
		case init.status != shimv1.Status_STATUS_RUNNING:
			err = status.Errorf(codes.FailedPrecondition, "container %s is not running", s.id)
		case s.procs[p.execID] != nil:
			err = status.Errorf(codes.AlreadyExists, "exec %q already exists in %s", p.execID, s.id)
		default:
			s.procs[p.execID] = p
		}
	})
	if err != nil {
		closeAll(p.childIO)
		closeAll(p.outR)
		if p.stdinW != nil {
			p.stdinW.Close()
		}
		return nil, err
	}
	return &shimv1.ExecResponse{}, nil
}

// State implements ShimService.
func (s *Service) State(ctx context.Context, req *shimv1.StateRequest) (*shimv1.StateResponse, error) {
	if err := s.checkID(req.GetId()); err != nil {
		return nil, err
	}
	p, err := s.getProc(req.GetExecId())
	if err != nil {
		return nil, err
	}
	resp := &shimv1.StateResponse{Id: s.id, ExecId: req.GetExecId(), Bundle: s.bundleDir}
	var c *container.Container
	s.do(func() {
		c = s.c
		resp.Pid, resp.Status, resp.ExitStatus, resp.OomKilled, resp.Terminal = uint32(p.pid), p.status, p.exit, p.oom, p.terminal
		if !p.exitedAt.IsZero() {
			resp.ExitedAt = timestamppb.New(p.exitedAt)
		}
	})
	if req.GetExecId() == "" && resp.Status == shimv1.Status_STATUS_RUNNING && c != nil {
		if paused, _ := c.Paused(); paused {
			resp.Status = shimv1.Status_STATUS_PAUSED
		}
	}
	return resp, nil
}

// Kill implements ShimService.
func (s *Service) Kill(ctx context.Context, req *shimv1.KillRequest) (*shimv1.KillResponse, error) {
	if err := s.checkID(req.GetId()); err != nil {
		return nil, err
	}
	p, err := s.getProc(req.GetExecId())
	if err != nil {
		return nil, err
	}
	sig := syscall.Signal(req.GetSignal())
	if sig == 0 {
		sig = syscall.SIGKILL
	}
	var c *container.Container
	var st shimv1.Status
	s.do(func() { c, st = s.c, p.status })
	if st == shimv1.Status_STATUS_STOPPED {
		return nil, status.Errorf(codes.NotFound, "process %q of %s has exited", req.GetExecId(), s.id)
	}
	switch {
	case req.GetAll():
		err = c.SignalAll(sig)
	case req.GetExecId() == "":
		err = c.Signal(sig)
	default:
		if p.pid == 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "exec %q has not started", req.GetExecId())
		}
		// The watcher owns the exec's pidfd; signal through a fresh one,
		// which fails rather than hit a recycled pid once it is reaped.
		fd, ferr := unix.PidfdOpen(p.pid, 0)
		if ferr != nil {
			return nil, status.Errorf(codes.NotFound, "exec %q has exited", req.GetExecId())
		}
		err = unix.PidfdSendSignal(fd, sig, nil, 0)
		unix.Close(fd)
	}
	if err != nil {
		return nil, errStatus(err)
	}
	return &shimv1.KillResponse{}, nil
}

// ResizePty implements ShimService.
func (s *Service) ResizePty(ctx context.Context, req *shimv1.ResizePtyRequest) (*shimv1.ResizePtyResponse, error) {
	if err := s.checkID(req.GetId()); err != nil {
		return nil, err
	}
	p, err := s.getProc(req.GetExecId())
	if err != nil {
		return nil, err
	}
	if err := s.resize(p, req.GetWidth(), req.GetHeight()); err != nil {
		return nil, err
	}
	return &shimv1.ResizePtyResponse{}, nil
}

func (s *Service) resize(p *proc, w, h uint32) error {
	var console *os.File
	s.do(func() { console = p.console })
	if console == nil {
		return status.Errorf(codes.FailedPrecondition, "process %q of %s has no terminal", p.execID, s.id)
	}
	ws := &unix.Winsize{Row: uint16(h), Col: uint16(w)}
	if err := unix.IoctlSetWinsize(int(console.Fd()), unix.TIOCSWINSZ, ws); err != nil {
		return status.Errorf(codes.Internal, "resize terminal: %v", err)
	}
	return nil
}

// CloseIO implements ShimService.
func (s *Service) CloseIO(ctx context.Context, req *shimv1.CloseIORequest) (*shimv1.CloseIOResponse, error) {
	if err := s.checkID(req.GetId()); err != nil {
		return nil, err
	}
	p, err := s.getProc(req.GetExecId())
	if err != nil {
		return nil, err
	}
	s.closeStdin(p)
	return &shimv1.CloseIOResponse{}, nil
}

func (s *Service) closeStdin(p *proc) {
	s.do(func() {
		if p.stdinW == nil {
			return
		}
		if p.stdinW == p.console {
			// A terminal's EOF is ^D at the start of a line; closing the
			// master would hang the process up instead.
			p.stdinW.Write([]byte{4})
		} else {
			p.stdinW.Close()
		}
		p.stdinW = nil
	})
}

// Pause implements ShimService.
func (s *Service) Pause(ctx context.Context, req *shimv1.PauseRequest) (*shimv1.PauseResponse, error) {
	c, err := s.running(req.GetId())
	if err != nil {
		return nil, err
	}
	if err := c.Pause(); err != nil {
		return nil, errStatus(err)
	}
	s.do(func() { s.publish(&shimv1.EventsResponse{Topic: "/tasks/paused"}) })
	return &shimv1.PauseResponse{}, nil
}

// Resume implements ShimService.
func (s *Service) Resume(ctx context.Context, req *shimv1.ResumeRequest) (*shimv1.ResumeResponse, error) {
	c, err := s.running(req.GetId())
	if err != nil {
		return nil, err
	}
	if err := c.Resume(); err != nil {
		return nil, errStatus(err)
	}
	s.do(func() { s.publish(&shimv1.EventsResponse{Topic: "/tasks/resumed"}) })
	return &shimv1.ResumeResponse{}, nil
}

func (s *Service) running(id string) (*container.Container, error) {
	if err := s.checkID(id); err != nil {
		return nil, err
	}
	var c *container.Container
	var st shimv1.Status
	s.do(func() {
		c = s.c
		if p := s.procs[""]; p != nil {
			st = p.status
		}
	})
	if c == nil || st != shimv1.Status_STATUS_RUNNING {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s is not running", s.id)
	}
	return c, nil
}

// Stats implements ShimService.
func (s *Service) Stats(ctx context.Context, req *shimv1.StatsRequest) (*shimv1.StatsResponse, error) {
	if err := s.checkID(req.GetId()); err != nil {
		return nil, err
	}
	var c *container.Container
	s.do(func() { c = s.c })
	if c == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s has no task", s.id)
	}
	st, err := c.Stats()
	if err != nil {
		return nil, errStatus(err)
	}
	return &shimv1.StatsResponse{
		Timestamp: timestamppb.Now(), CpuUsageTotalNs: st.CPUUsageNanos, CpuUsageUserNs: st.CPUUserNanos,
		CpuUsageKernelNs: st.CPUSystemNanos, CpuThrottledPeriods: st.CPUThrottledCount, CpuThrottledTimeNs: st.CPUThrottledNanos,
		MemoryUsageBytes: st.MemoryUsage, MemoryLimitBytes: st.MemoryLimit, MemoryMaxUsageBytes: st.MemoryMaxUsage,
		MemorySwapBytes: st.SwapUsage, MemoryOomEvents: st.OOMKills, PidsCurrent: st.PidsCurrent, PidsLimit: st.PidsLimit,
		IoReadBytes: st.IOReadBytes, IoWriteBytes: st.IOWriteBytes,
	}, nil
}

// Pids implements ShimService.
func (s *Service) Pids(ctx context.Context, req *shimv1.PidsRequest) (*shimv1.PidsResponse, error) {
	if err := s.checkID(req.GetId()); err != nil {
		return nil, err
	}
	var c *container.Container
	byPid := map[int]string{}
	s.do(func() {
		c = s.c
		for id, p := range s.procs {
			if id != "" && p.pid > 0 {
				byPid[p.pid] = id
			}
		}
	})
	if c == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s has no task", s.id)
	}
	pids, err := c.Pids()
	if err != nil {
		return nil, errStatus(err)
	}
	resp := &shimv1.PidsResponse{}
	for _, pid := range pids {
		resp.Processes = append(resp.Processes, &shimv1.ProcessInfo{Pid: uint32(pid), ExecId: byPid[pid]})
	}
	return resp, nil
}

// Wait implements ShimService.
func (s *Service) Wait(ctx context.Context, req *shimv1.WaitRequest) (*shimv1.WaitResponse, error) {
	if err := s.checkID(req.GetId()); err != nil {
		return nil, err
	}
	p, err := s.getProc(req.GetExecId())
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return s.waitResponse(p), nil
}

func (s *Service) waitResponse(p *proc) *shimv1.WaitResponse {
	resp := &shimv1.WaitResponse{}
	s.do(func() {
		resp.ExitStatus, resp.OomKilled = p.exit, p.oom
		resp.ExitedAt = timestamppb.New(p.exitedAt)
	})
	return resp
}

// Delete implements ShimService: for the init it destroys the container
// (every process, the cgroup); for an exec it forgets the exited process.
func (s *Service) Delete(ctx context.Context, req *shimv1.DeleteRequest) (*shimv1.DeleteResponse, error) {
	if err := s.checkID(req.GetId()); err != nil {
		return nil, err
	}
	p, err := s.getProc(req.GetExecId())
	if err != nil {
		return nil, err
	}
	var c *container.Container
	var st shimv1.Status
	s.do(func() { c, st = s.c, p.status })
	if req.GetExecId() != "" {
		if st == shimv1.Status_STATUS_RUNNING {
			return nil, status.Errorf(codes.FailedPrecondition, "exec %q of %s is running: kill it first", req.GetExecId(), s.id)
		}
		s.do(func() { delete(s.procs, req.GetExecId()) })
		// Never started: its stdio was never handed to a process.
		closeAll(p.childIO)
		closeAll(p.outR)
		if st == shimv1.Status_STATUS_CREATED && p.stdinW != nil {
			p.stdinW.Close()
		}
		return &shimv1.DeleteResponse{Pid: uint32(p.pid), ExitStatus: p.exit, ExitedAt: timestamppb.New(p.exitedAt)}, nil
	}
	if st == shimv1.Status_STATUS_RUNNING || st == shimv1.Status_STATUS_PAUSED {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s is running: stop or kill it first", s.id)
	}
	p.mntNS.release() // before the rootfs is unmounted
	if err := c.Destroy(); err != nil {
		return nil, errStatus(err)
	}
	if st == shimv1.Status_STATUS_CREATED {
		// Never started: Destroy killed the init; wait for its exit so
		// the record and event exist like for any other end.
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	s.do(func() {
		for _, q := range s.procs {
			closeAll(q.outR)
			if q.stdinW != nil && q.stdinW != q.console {
				q.stdinW.Close()
			}
			q.stdinW = nil
		}
		s.deleted = true
	})
	if p.logW != nil {
		p.logW.Close()
	}
	return &shimv1.DeleteResponse{Pid: uint32(p.pid), ExitStatus: p.exit, ExitedAt: timestamppb.New(p.exitedAt)}, nil
}

// Shutdown implements ShimService: the shim exits once the call returns.
func (s *Service) Shutdown(ctx context.Context, req *shimv1.ShutdownRequest) (*shimv1.ShutdownResponse, error) {
	var c *container.Container
	var live bool
	s.do(func() {
		c = s.c
		for _, p := range s.procs {
			if p.status == shimv1.Status_STATUS_RUNNING || p.status == shimv1.Status_STATUS_PAUSED {
				live = true
			}
		}
	})
	if live && !req.GetNow() {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s still has processes: delete the task or shut down with now", s.id)
	}
	if c != nil {
		c.Destroy()
	}
	s.shutOnce.Do(func() { close(s.Done) })
	return &shimv1.ShutdownResponse{}, nil
}

// Events implements ShimService; see the package doc. The stream ends
// after the init's exit: ttrpc cannot cancel a stream, so the agent, which
// re-opens it then with after_seq (acknowledging what it has seen), reads
// it to its end instead of abandoning it.
func (s *Service) Events(ctx context.Context, req *shimv1.EventsRequest, stream shimv1.ShimService_EventsServer) error {
	after := req.GetAfterSeq()
	for {
		var batch []*shimv1.EventsResponse
		var wake chan struct{}
		if err := s.do(func() {
			// Acknowledge: drop what the agent has seen.
			i := 0
			for i < len(s.events) && s.events[i].Seq <= req.GetAfterSeq() {
				i++
			}
			s.events = s.events[i:]
			for _, ev := range s.events {
				if ev.Seq > after {
					batch = append(batch, ev)
				}
			}
			wake = s.eventsWake
		}); err != nil {
			return err
		}
		for _, ev := range batch {
			if err := stream.Send(ev); err != nil {
				return err
			}
			after = ev.Seq
			if ev.GetTopic() == "/tasks/exit" && ev.GetExecId() == "" {
				return nil
			}
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil
		case <-s.ctx.Done():
			return nil
		}
	}
}

// Attach implements ShimService: output of the named process to the
// client, the client's stdin and resizes to the process, and last the
// exit status if the process exits while attached.
//
// ttrpc cannot cancel a stream: the agent opens each Attach on a
// connection of its own and closes it to detach, which ends ctx.
func (s *Service) Attach(ctx context.Context, stream shimv1.ShimService_AttachServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return status.Error(codes.InvalidArgument, "the first attach message must be open")
	}
	if err := s.checkID(open.GetId()); err != nil {
		return err
	}
	if open.GetWaitCreate() && open.GetExecId() == "" {
		// berthd opened this alongside its Create call: the task is there
		// once that call has ended (and not if it failed).
		select {
		case <-s.createEnded:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p, err := s.getProc(open.GetExecId())
	if err != nil {
		return err
	}
	var ch chan chunk
	var history []chunk
	if open.GetLogs() && open.GetExecId() == "" && p.logPath != "" {
		ch = p.out.subscribeWith(func() {
			history = readLog(p.logPath, p.logFiles)
			// Output already published but still short of a newline is
			// not in the file yet.
			for i, lw := range p.lineW {
				if pend := lw.Pending(); len(pend) > 0 {
					st := shimv1.OutputStream_OUTPUT_STREAM_STDOUT
					if i == 1 {
						st = shimv1.OutputStream_OUTPUT_STREAM_STDERR
					}
					history = append(history, chunk{stream: st, data: append([]byte(nil), pend...)})
				}
			}
		})
	} else {
		ch, history = p.out.subscribe()
	}
	defer p.out.unsubscribe(ch)
	// The first message tells the agent (and through it the client) that
	// the subscription is in place: output from now on reaches this
	// stream, so the client may start the process.
	if err := stream.Send(&shimv1.AttachResponse{Output: &shimv1.AttachResponse_Subscribed{Subscribed: true}}); err != nil {
		return err
	}

	// The input side: owned by this call, it ends when the stream does
	// (Recv fails once the handler returns).
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				return
			}
			switch in := req.GetInput().(type) {
			case *shimv1.AttachRequest_Stdin:
				if !open.GetStdin() {
					continue
				}
				var w *os.File
				s.do(func() { w = p.stdinW })
				if w != nil {
					w.Write(in.Stdin)
				}
			case *shimv1.AttachRequest_Resize:
				s.resize(p, in.Resize.GetWidth(), in.Resize.GetHeight())
			case *shimv1.AttachRequest_CloseStdin:
				if in.CloseStdin && open.GetStdin() {
					s.closeStdin(p)
				}
			}
		}
	}()

	want := func(st shimv1.OutputStream) bool {
		if !open.GetStdout() && !open.GetStderr() {
			return true
		}
		return (st == shimv1.OutputStream_OUTPUT_STREAM_STDOUT && open.GetStdout()) ||
			(st == shimv1.OutputStream_OUTPUT_STREAM_STDERR && open.GetStderr())
	}
	send := func(c chunk) error {
		if !want(c.stream) {
			return nil
		}
		return stream.Send(&shimv1.AttachResponse{Output: &shimv1.AttachResponse_Data{Data: &shimv1.AttachOutput{Stream: c.stream, Data: c.data}}})
	}
	for _, c := range history {
		if err := send(c); err != nil {
			return err
		}
	}
	for {
		select {
		case c := <-ch:
			if err := send(c); err != nil {
				return err
			}
		case <-p.done:
		drain:
			for {
				select {
				case c := <-ch:
					if err := send(c); err != nil {
						return err
					}
				default:
					break drain
				}
			}
			return stream.Send(&shimv1.AttachResponse{Output: &shimv1.AttachResponse_Exit{Exit: s.waitResponse(p)}})
		case <-ctx.Done():
			return nil
		}
	}
}

// readLog reads the log files (rotated ones first) back into output
// chunks. A line's pieces are joined, and a complete line gets its
// newline back.
func readLog(path string, maxFiles int) []chunk {
	var out []chunk
	for _, name := range logfile.Files(path, maxFiles) {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		logfile.ReadAll(f, func(r logfile.Record) error {
			st := shimv1.OutputStream_OUTPUT_STREAM_STDOUT
			if r.Stream == logfile.Stderr {
				st = shimv1.OutputStream_OUTPUT_STREAM_STDERR
			}
			data := r.Content
			if !r.Partial {
				data = append(data, '\n')
			}
			out = append(out, chunk{stream: st, data: data})
			return nil
		})
		f.Close()
	}
	return out
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}
