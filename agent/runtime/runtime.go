// Package runtime is berthd's runtime manager: it turns a container into a
// task (bundle, rootfs mount, config.json, a berth-shim), talks to the
// task's shim, follows its events, and after a berthd restart reconnects
// to the shims that kept running and cleans up after those that did not.
//
// The shim protocol (start arguments, bootstrap record, socket path, the
// bundle's files) is documented in cmd/berth-shim and shim/bundle.
//
// The shim API is served with ttrpc (the bootstrap record's protocol):
// one connection per task for calls and events, and one more per Attach,
// because ttrpc cannot cancel a single stream: closing its connection is
// how an attach ends.
//
// Events: for every task the manager keeps one goroutine streaming the
// shim's Events and hands each event to Config.OnEvent, in order. The
// shim ends the stream after the init's exit; the manager then re-opens
// it with after_seq, so the shim can forget what the agent has seen. An event that arrives
// twice (after a reconnect, events not yet acknowledged are sent again)
// must be harmless to OnEvent.
package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berth-dev/berth/agent/oci"
	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata/identifiers"
	shimv1 "github.com/berth-dev/berth/proto/berth/shim/v1"
	"github.com/berth-dev/berth/shim/bundle"
	"github.com/berth-dev/berth/shim/container/cgroup"
	"github.com/berth-dev/berth/snapshotter"
)

// BootstrapVersion is the shim start protocol version this agent speaks.
const BootstrapVersion = 1

// Protocol is the RPC protocol this agent speaks to shims (the bootstrap
// record's protocol): ttrpc over the shim's unix socket.
const Protocol = "ttrpc"

// dialTimeout bounds each reconnect to a shim: a dead shim must cost
// seconds, not minutes (containerd#11409).
const dialTimeout = 2 * time.Second

// Config configures a Manager.
type Config struct {
	// State is berthd's state dir; bundles go under <State>/tasks.
	State string
	// ShimBinary is the berth-shim executable.
	ShimBinary string
	// Log receives the manager's messages.
	Log *slog.Logger
	// OnEvent receives every event of every task, in order per task. It
	// runs on the task's event goroutine: it must not call Delete for the
	// same task synchronously (start a goroutine for that).
	OnEvent func(ns, id string, ev *shimv1.EventsResponse)
	// ShimDebug starts shims with debug logging.
	ShimDebug bool
	// WarmShims is how many shims to keep started ahead, each with a
	// container init preforked, for the next task creates (0: none).
	WarmShims int
	// CgroupParent is berthd's cgroup parent: a warm shim makes a group
	// under it ahead, with oci.DefaultResources, for the container it
	// will run (cgroup v1 only; see shim/container.WarmCgroup). Empty:
	// oci.DefaultCgroupParent, as for the containers.
	CgroupParent string
}

// Manager runs tasks. Its methods are safe for concurrent use.
type Manager struct {
	cfg Config

	mu    sync.Mutex
	tasks map[string]*Task // key ns/id

	wg     sync.WaitGroup // event goroutines and the warm pool keeper
	ctx    context.Context
	cancel context.CancelFunc

	warm    chan *warmShim // idle warm shims
	refillc chan struct{}  // wakes the pool keeper
}

// New returns a Manager; call Reconnect before serving.
func New(cfg Config) *Manager {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.OnEvent == nil {
		cfg.OnEvent = func(string, string, *shimv1.EventsResponse) {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{cfg: cfg, tasks: map[string]*Task{}, ctx: ctx, cancel: cancel,
		warm: make(chan *warmShim, max(cfg.WarmShims, 0)), refillc: make(chan struct{}, 1)}
}

// cgroupParent is Config.CgroupParent or its default.
func (m *Manager) cgroupParent() string {
	if m.cfg.CgroupParent == "" {
		return oci.DefaultCgroupParent
	}
	return m.cfg.CgroupParent
}

// StartWarm removes warm shims' leftovers from an earlier run and starts
// keeping Config.WarmShims warm shims (see warm.go). Call it once, after
// Reconnect; Close stops them.
func (m *Manager) StartWarm() {
	if err := removeStaleWarm(m.cfg.State, m.cgroupParent()); err != nil {
		m.cfg.Log.Warn("remove stale warm shims", "err", err)
	}
	if cap(m.warm) == 0 {
		return
	}
	m.wg.Add(1)
	go m.keepWarm()
}

// Task is a container's live task: its bundle and its shim connection.
type Task struct {
	NS, ID string
	// Bundle is the bundle directory.
	Bundle string
	// Shim is the client of the task's shim. Its Attach is not for use:
	// ttrpc cannot cancel a stream, so call Task.Attach, which gives each
	// attach a connection of its own.
	Shim shimv1.ShimServiceClient
	// ShimPid is the long-lived shim's pid.
	ShimPid int
	// Pid is the init's pid as Create reported it (0 after a reconnect).
	Pid uint32

	addr   string // the shim's socket path
	conn   *ttrpc.Client
	cancel context.CancelFunc // stops the event goroutine
	closed chan struct{}      // closed when the event goroutine ends
}

func key(ns, id string) string { return ns + "/" + id }

// CreateOpts describe a task to create.
type CreateOpts struct {
	NS, ID string
	// Rootfs are the snapshot's mounts; the manager mounts them at
	// <bundle>/rootfs before Spec is called.
	Rootfs []snapshotter.Mount
	// Spec generates the runtime spec once the rootfs is mounted (it reads
	// /etc/passwd there); its root.path is set to the mount.
	Spec func(rootfs string) (*specs.Spec, error)
	// Terminal gives the init a pty; Stdin keeps its stdin open.
	Terminal, Stdin bool
	// Log is the container's log file.
	Log *shimv1.LogOptions
	// CgroupParent is where the container's cgroup goes.
	CgroupParent string
	// OnShim, if set, is called with the task once its shim is up and
	// reachable, before the Create call: what runs alongside the init's
	// set-up (an attach opened with wait_create) starts there. The task
	// is not registered yet, and is closed if the create fails.
	OnShim func(*Task)
	// BeforeInit, if set, runs once the shim is up and before it creates
	// the init, so work the init needs (the network's CNI ADD) can go on
	// while the shim starts. An error aborts Create, leaving nothing.
	BeforeInit func() error
}

// Create makes the bundle, mounts the rootfs, starts the shim and creates
// the init (waiting for Start). On error nothing is left: no shim, mount,
// cgroup or bundle. An error from the container init carries the shim's
// gRPC status (see ExitCodeOf).
func (m *Manager) Create(ctx context.Context, o CreateOpts) (_ *Task, retErr error) {
	if err := identifiers.Validate("namespace", o.NS); err != nil {
		return nil, err
	}
	if err := identifiers.Validate("container id", o.ID); err != nil {
		return nil, err
	}
	k := key(o.NS, o.ID)
	m.mu.Lock()
	if _, ok := m.tasks[k]; ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("container %s already has a task: delete it first: %w", o.ID, errdefs.ErrAlreadyExists)
	}
	// Reserve the key while creating, so two creates cannot race.
	m.tasks[k] = nil
	m.mu.Unlock()
	defer func() {
		if retErr != nil {
			m.mu.Lock()
			delete(m.tasks, k)
			m.mu.Unlock()
		}
	}()

	dir := bundle.Dir(m.cfg.State, o.NS, o.ID)
	if _, err := os.Stat(dir); err == nil {
		// A leftover of a crash between Create's steps: no shim serves it
		// (Reconnect would have registered the task).
		m.cleanupBundle(dir, "", false)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
		return nil, fmt.Errorf("create bundle of %s: %w", o.ID, err)
	}
	if err := os.Mkdir(dir, 0o711); err != nil {
		return nil, fmt.Errorf("create bundle of %s: %w", o.ID, err)
	}
	rootfs := filepath.Join(dir, bundle.RootfsDir)
	var t *Task
	defer func() {
		if retErr != nil {
			if t != nil {
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				t.Shim.Shutdown(sctx, &shimv1.ShutdownRequest{Id: o.ID, Now: true})
				cancel()
				t.conn.Close()
				waitGone(t.ShimPid, 2*time.Second)
			}
			m.cleanupBundle(dir, o.CgroupParent, false)
		}
	}()
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return nil, fmt.Errorf("create rootfs dir of %s: %w", o.ID, err)
	}
	tBegin := time.Now()
	if err := snapshotter.MountAll(o.Rootfs, rootfs); err != nil {
		return nil, fmt.Errorf("mount the rootfs of %s: %w", o.ID, err)
	}
	tMount := time.Now()
	spec, err := o.Spec(rootfs)
	if err != nil {
		return nil, err
	}
	if spec.Root == nil {
		spec.Root = &specs.Root{}
	}
	spec.Root.Path = rootfs
	if err := oci.WriteSpec(dir, spec); err != nil {
		return nil, err
	}
	tSpec := time.Now()
	var b *shimv1.Bootstrap
	warm := "no"
	if w := m.takeWarm(); w != nil {
		defer m.refill()
		if b, err = m.adopt(w, o.NS, o.ID, dir, o.CgroupParent); err != nil {
			m.cfg.Log.Warn("adopt a warm shim; starting one", "container", o.ID, "err", err)
		} else {
			warm = "yes"
			// Connected since it was started (see warmShim.conn), and
			// known to be this task's by the adoption: no Connect call.
			t = &Task{NS: o.NS, ID: o.ID, Bundle: dir, ShimPid: int(b.GetPid()), addr: strings.TrimPrefix(b.GetAddress(), "unix://")}
			t.conn = newShimClient(w.takeConn())
			t.Shim = shimv1.NewShimServiceClient(t.conn)
		}
	}
	if b == nil {
		if b, err = m.startShim(ctx, o.NS, o.ID, dir); err != nil {
			return nil, err
		}
	}
	tShim := time.Now()
	if t == nil {
		t, err = m.dial(o.NS, o.ID, dir, b)
	}
	if err != nil {
		// The shim runs but cannot be reached: stop it by pid.
		syscall.Kill(int(b.GetPid()), syscall.SIGKILL)
		return nil, err
	}
	tDial := time.Now()
	defer func() {
		m.cfg.Log.Debug("task created", "container", o.ID, "warm", warm, "mount", tMount.Sub(tBegin), "spec", tSpec.Sub(tMount), "shim_start", tShim.Sub(tSpec), "dial", tDial.Sub(tShim), "create", time.Since(tDial))
	}()
	if o.OnShim != nil {
		o.OnShim(t)
	}
	if o.BeforeInit != nil {
		if err := o.BeforeInit(); err != nil {
			return nil, err
		}
	}
	cr, err := t.Shim.Create(ctx, &shimv1.CreateRequest{Id: o.ID, Bundle: dir, Terminal: o.Terminal, Stdin: o.Stdin,
		Log: o.Log, CgroupParent: o.CgroupParent})
	if err != nil {
		return nil, fromStatus(err, "create task "+o.ID)
	}
	t.Pid = cr.GetPid()
	m.register(t, 0)
	return t, nil
}

// startShim runs `berth-shim start` in the bundle and records its
// bootstrap line as bootstrap.json.
func (m *Manager) startShim(ctx context.Context, ns, id, dir string) (*shimv1.Bootstrap, error) {
	args := []string{"start", "--id", id, "--namespace", ns, "--bundle", dir, "--state", m.cfg.State}
	if m.cfg.ShimDebug {
		args = append(args, "--debug")
	}
	cmd := exec.CommandContext(ctx, m.cfg.ShimBinary, args...)
	cmd.Dir = dir
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("start the shim of %s (%s): %v: %s: %w", id, m.cfg.ShimBinary, err, bytes.TrimSpace(stderr.Bytes()), errdefs.ErrUnavailable)
	}
	line := bytes.TrimSpace(out.Bytes())
	b, err := parseBootstrap(line)
	if err != nil {
		return nil, fmt.Errorf("shim of %s: %w", id, err)
	}
	if err := bundle.WriteFileAtomic(filepath.Join(dir, bundle.BootstrapFile), line, 0o600); err != nil {
		syscall.Kill(int(b.GetPid()), syscall.SIGKILL)
		return nil, err
	}
	return b, nil
}

func parseBootstrap(data []byte) (*shimv1.Bootstrap, error) {
	// The version is read first and alone: a newer shim may carry fields
	// this agent does not know.
	var v struct {
		Version uint32 `json:"version"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("bootstrap record %q is not JSON: %v: %w", data, err, errdefs.ErrDataLoss)
	}
	if v.Version != BootstrapVersion {
		return nil, fmt.Errorf("bootstrap version %d, this berthd speaks %d: use matching berthd and berth-shim binaries: %w",
			v.Version, BootstrapVersion, errdefs.ErrFailedPrecondition)
	}
	b := &shimv1.Bootstrap{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, b); err != nil {
		return nil, fmt.Errorf("bootstrap record: %v: %w", err, errdefs.ErrDataLoss)
	}
	if b.GetProtocol() != Protocol {
		return nil, fmt.Errorf("the shim serves protocol %q, this berthd speaks %q: use matching berthd and berth-shim binaries: %w",
			b.GetProtocol(), Protocol, errdefs.ErrFailedPrecondition)
	}
	return b, nil
}

// dial connects to the shim and checks it is the right one.
func (m *Manager) dial(ns, id, dir string, b *shimv1.Bootstrap) (*Task, error) {
	addr, ok := strings.CutPrefix(b.GetAddress(), "unix://")
	if !ok {
		return nil, fmt.Errorf("shim of %s: address %q is not unix://: %w", id, b.GetAddress(), errdefs.ErrFailedPrecondition)
	}
	conn, err := dialShim(addr)
	if err != nil {
		return nil, fmt.Errorf("shim of %s at %s: %v: %w", id, b.GetAddress(), err, errdefs.ErrUnavailable)
	}
	t := &Task{NS: ns, ID: id, Bundle: dir, Shim: shimv1.NewShimServiceClient(conn), addr: addr, conn: conn}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	resp, err := t.Shim.Connect(ctx, &shimv1.ConnectRequest{Id: id})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("shim of %s at %s does not answer: %v: %w", id, b.GetAddress(), err, errdefs.ErrUnavailable)
	}
	t.ShimPid = int(resp.GetShimPid())
	return t, nil
}

// dialShim connects a ttrpc client to the shim's socket. The shim's
// listener is bound before its address is published, so a live shim
// accepts at once; there is nothing to retry.
func dialShim(path string) (*ttrpc.Client, error) {
	c, err := net.DialTimeout("unix", path, dialTimeout)
	if err != nil {
		return nil, err
	}
	return newShimClient(c), nil
}

// newShimClient is a ttrpc client of the shim on connection c.
func newShimClient(c net.Conn) *ttrpc.Client {
	return ttrpc.NewClient(c, ttrpc.WithUnaryClientInterceptor(
		func(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response, _ *ttrpc.UnaryClientInfo, invoke ttrpc.Invoker) error {
			return transportStatus(invoke(ctx, req, resp))
		}))
}

// transportStatus gives errors of the connection rather than of the shim
// a status, as gRPC's client does: a closed connection is Unavailable, a
// cancelled or expired context Canceled or DeadlineExceeded. The shim's
// own statuses pass unchanged.
func transportStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Unavailable, "shim connection: "+err.Error())
}

// Attach opens the shim's Attach stream on a connection of its own, closed
// when ctx ends: ttrpc has no way to cancel one stream, and closing the
// connection is what ends the shim's side of it.
func (t *Task) Attach(ctx context.Context) (shimv1.ShimService_AttachClient, error) {
	conn, err := dialShim(t.addr)
	if err != nil {
		return nil, transportStatus(err)
	}
	stream, err := shimv1.NewShimServiceClient(conn).Attach(ctx)
	if err != nil {
		conn.Close()
		return nil, transportStatus(err)
	}
	context.AfterFunc(ctx, func() { conn.Close() })
	return stream, nil
}

// register adds t and starts following its events from after.
func (m *Manager) register(t *Task, after uint64) {
	ctx, cancel := context.WithCancel(m.ctx)
	t.cancel = cancel
	t.closed = make(chan struct{})
	m.mu.Lock()
	m.tasks[key(t.NS, t.ID)] = t
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(t.closed)
		m.follow(ctx, t, after)
	}()
}

// follow streams t's events to OnEvent until ctx ends or the shim goes
// away. A shim that dies without reporting the init's exit gets one
// synthesised from exit.json (or status 255 when there is none).
func (m *Manager) follow(ctx context.Context, t *Task, after uint64) {
	sawExit := false
	failures := 0
	for ctx.Err() == nil {
		stream, err := t.Shim.Events(ctx, &shimv1.EventsRequest{AfterSeq: after})
		if err == nil {
			for {
				ev, rerr := stream.Recv()
				if rerr == io.EOF {
					// The shim ends the stream after the init's exit;
					// re-opening acknowledges everything so far.
					break
				}
				if rerr != nil {
					err = rerr
					break
				}
				failures = 0
				m.cfg.OnEvent(t.NS, t.ID, ev)
				after = ev.GetSeq()
				if ev.GetTopic() == "/tasks/exit" && ev.GetExecId() == "" {
					sawExit = true
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			err = transportStatus(err)
			failures++
			if failures >= 3 || status.Code(err) == codes.Unavailable && failures >= 2 {
				if !sawExit {
					m.cfg.Log.Warn("shim went away", "container", t.ID, "err", err)
					m.cfg.OnEvent(t.NS, t.ID, recordedExit(t.Bundle))
				}
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// recordedExit is the init's exit from exit.json as an event, or exit
// status 255 when the shim left no record.
func recordedExit(dir string) *shimv1.EventsResponse {
	ev := &shimv1.EventsResponse{Topic: "/tasks/exit", ExitStatus: 255, ExitedAt: timestamppb.Now()}
	if r, err := bundle.ReadExit(dir); err == nil {
		ev.Pid, ev.ExitStatus, ev.ExitedAt, ev.OomKilled = r.Pid, r.ExitStatus, timestamppb.New(r.ExitedAt), r.OOMKilled
	}
	return ev
}

// Get returns the task of container (ns, id), or ErrNotFound.
func (m *Manager) Get(ns, id string) (*Task, error) {
	m.mu.Lock()
	t := m.tasks[key(ns, id)]
	m.mu.Unlock()
	if t == nil {
		return nil, fmt.Errorf("container %s has no task: create one (start the container): %w", id, errdefs.ErrNotFound)
	}
	return t, nil
}

// Delete removes the task: the shim deletes the container (processes,
// cgroup) and shuts down, then the rootfs is unmounted and the bundle
// removed. With force a live task is killed first.
func (m *Manager) Delete(ctx context.Context, ns, id string, force bool) (*shimv1.DeleteResponse, error) {
	t, err := m.Get(ns, id)
	if err != nil {
		return nil, err
	}
	resp, err := t.Shim.Delete(ctx, &shimv1.DeleteRequest{Id: id})
	if err != nil && status.Code(err) == codes.FailedPrecondition && force {
		t.Shim.Kill(ctx, &shimv1.KillRequest{Id: id, Signal: uint32(unix.SIGKILL), All: true})
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		t.Shim.Wait(wctx, &shimv1.WaitRequest{Id: id})
		cancel()
		resp, err = t.Shim.Delete(ctx, &shimv1.DeleteRequest{Id: id})
	}
	unreachable := status.Code(err) == codes.Unavailable
	if err != nil && !unreachable {
		return nil, fromStatus(err, "delete task "+id)
	}
	if !unreachable {
		t.Shim.Shutdown(ctx, &shimv1.ShutdownRequest{Id: id})
		// Gone when Delete returns, so a caller that counts processes
		// (or removes the state dir) finds nothing of this task.
		waitGone(t.ShimPid, 2*time.Second)
	}
	if resp == nil {
		ev := recordedExit(t.Bundle)
		resp = &shimv1.DeleteResponse{Pid: ev.Pid, ExitStatus: ev.ExitStatus, ExitedAt: ev.ExitedAt}
	}
	m.forget(t)
	// A shim that deleted the container removed its cgroup too.
	m.cleanupBundle(t.Bundle, "", err == nil)
	return resp, nil
}

// forget stops following t and drops it. It does not wait for the event
// goroutine, which may be the caller (through OnEvent).
func (m *Manager) forget(t *Task) {
	t.cancel()
	t.conn.Close()
	m.mu.Lock()
	if m.tasks[key(t.NS, t.ID)] == t {
		delete(m.tasks, key(t.NS, t.ID))
	}
	m.mu.Unlock()
}

// cleanupBundle undoes a task whose shim is gone: kills what is left in
// its cgroup and removes the cgroup, unmounts the rootfs, removes the
// socket and the bundle. cgroupParent is used when config.json cannot be
// read. With cgroupGone (the shim removed it) the cgroup is left alone.
func (m *Manager) cleanupBundle(dir, cgroupParent string, cgroupGone bool) {
	id := filepath.Base(dir)
	ns := filepath.Base(filepath.Dir(dir))
	cgPath := ""
	if !cgroupGone {
		cgPath = bundleCgroup(dir, cgroupParent, id)
	}
	if cgPath != "" {
		if cg, err := cgroup.Load(cgPath); err == nil {
			for i := 0; i < 50; i++ {
				pids, _ := cg.Pids()
				for _, p := range pids {
					unix.Kill(p, unix.SIGKILL)
				}
				if err := cg.Delete(); err == nil || errors.Is(err, errdefs.ErrNotFound) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	if err := snapshotter.Unmount(filepath.Join(dir, bundle.RootfsDir)); err != nil {
		m.cfg.Log.Warn("unmount rootfs", "bundle", dir, "err", err)
	}
	os.Remove(bundle.SocketPath(m.cfg.State, ns, id))
	if err := os.RemoveAll(dir); err != nil {
		m.cfg.Log.Warn("remove bundle", "bundle", dir, "err", err)
	}
}

// bundleCgroup is the cgroup of the task in dir: config.json's, or, when
// that cannot be read, the one under cgroupParent ("" if neither).
func bundleCgroup(dir, cgroupParent, id string) string {
	if spec, err := oci.ReadSpec(dir); err == nil && spec.Linux != nil && spec.Linux.CgroupsPath != "" {
		return spec.Linux.CgroupsPath
	}
	if p, err := cgroup.GroupPath(cgroupParent, id); err == nil {
		return p
	}
	return ""
}

// waitGone waits up to timeout for process pid to exit. The shim is not
// our child, so it is watched through a pidfd rather than waited for.
func waitGone(pid int, timeout time.Duration) {
	if pid <= 0 {
		return
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // already gone
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, int(timeout.Milliseconds()))
		if err != unix.EINTR {
			return
		}
	}
}

// Recovered is what Reconnect found for one bundle.
type Recovered struct {
	NS, ID string
	// Alive: the shim answered and its task is registered again.
	Alive bool
	// Exit is the init's recorded exit for a task whose shim is gone
	// (status 255 when it left no record).
	Exit *shimv1.EventsResponse
}

// Reconnect walks every bundle and dials the recorded shims in parallel,
// each with a short timeout. Live ones are registered again and their
// unacknowledged events replayed to OnEvent; dead ones are cleaned up
// (cgroup, rootfs mount, socket, bundle) and reported with their recorded
// exit.
func (m *Manager) Reconnect(ctx context.Context) []Recovered {
	var dirs []string
	for _, k := range identifiers.ContainerDirs(filepath.Join(m.cfg.State, "tasks")) {
		dirs = append(dirs, bundle.Dir(m.cfg.State, k[0], k[1]))
	}
	out := make([]Recovered, len(dirs))
	var wg sync.WaitGroup
	for i, dir := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = m.reconnectOne(dir)
		}()
	}
	wg.Wait()
	return out
}

func (m *Manager) reconnectOne(dir string) Recovered {
	r := Recovered{NS: filepath.Base(filepath.Dir(dir)), ID: filepath.Base(dir)}
	data, err := os.ReadFile(filepath.Join(dir, bundle.BootstrapFile))
	if err == nil {
		var b *shimv1.Bootstrap
		if b, err = parseBootstrap(bytes.TrimSpace(data)); err == nil {
			var t *Task
			if t, err = m.dial(r.NS, r.ID, dir, b); err == nil {
				m.register(t, 0)
				r.Alive = true
				return r
			}
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		// berthd died between starting the shim and recording it: the
		// shim may be serving at its derived address. Stop it.
		b := &shimv1.Bootstrap{Version: BootstrapVersion, Protocol: Protocol, Address: "unix://" + bundle.SocketPath(m.cfg.State, r.NS, r.ID)}
		if t, derr := m.dial(r.NS, r.ID, dir, b); derr == nil {
			ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
			t.Shim.Shutdown(ctx, &shimv1.ShutdownRequest{Id: r.ID, Now: true})
			cancel()
			t.conn.Close()
			waitGone(t.ShimPid, dialTimeout)
		}
	} else {
		m.cfg.Log.Info("shim gone; cleaning up its task", "container", r.ID, "namespace", r.NS, "err", err)
	}
	r.Exit = recordedExit(dir)
	m.cleanupBundle(dir, "", false)
	return r
}

// Close stops following events and closes the shim connections. The
// shims keep running: a restarted berthd reconnects to them. Warm shims
// stop.
func (m *Manager) Close() {
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, t := range m.tasks {
		if t != nil {
			t.conn.Close()
		}
		delete(m.tasks, k)
	}
}

// fromStatus turns a shim's error status into an errdefs-wrapped error
// that keeps the original status (and its details) reachable with
// errors.As.
func fromStatus(err error, what string) error {
	err = transportStatus(err)
	var kind error
	switch status.Code(err) {
	case codes.NotFound:
		kind = errdefs.ErrNotFound
	case codes.AlreadyExists:
		kind = errdefs.ErrAlreadyExists
	case codes.InvalidArgument:
		kind = errdefs.ErrInvalidArgument
	case codes.FailedPrecondition:
		kind = errdefs.ErrFailedPrecondition
	case codes.Unavailable:
		kind = errdefs.ErrUnavailable
	case codes.Unimplemented:
		kind = errdefs.ErrNotImplemented
	case codes.PermissionDenied:
		kind = errdefs.ErrPermissionDenied
	case codes.Aborted:
		kind = errdefs.ErrAborted
	case codes.DeadlineExceeded:
		kind = context.DeadlineExceeded
	case codes.Canceled:
		kind = context.Canceled
	}
	return &ShimError{What: what, Status: status.Convert(err), kind: kind}
}

// ShimError is an error the shim returned.
type ShimError struct {
	What   string
	Status *status.Status
	kind   error
}

// Error names the operation and gives the shim's message.
func (e *ShimError) Error() string { return e.What + ": " + e.Status.Message() }

// Unwrap gives the errdefs kind.
func (e *ShimError) Unwrap() error { return e.kind }

// FromShim converts a shim client error for callers outside this package.
func FromShim(err error, what string) error {
	if err == nil {
		return nil
	}
	return fromStatus(err, what)
}

// ExitCodeOf returns the shell-style exit code the container init gave
// for a failed create or start (127: command not found, 126: not
// executable), and false for other errors.
func ExitCodeOf(err error) (int, bool) {
	var se *ShimError
	if !errors.As(err, &se) {
		return 0, false
	}
	for _, d := range se.Status.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == "INIT_FAILED" {
			n, perr := strconv.Atoi(info.GetMetadata()["exit_code"])
			return n, perr == nil
		}
	}
	return 0, false
}
