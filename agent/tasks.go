package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"google.golang.org/grpc/metadata"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berth-dev/berth/agent/network"
	"github.com/berth-dev/berth/agent/oci"
	"github.com/berth-dev/berth/agent/runtime"
	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata/identifiers"
	"github.com/berth-dev/berth/metadata/namespaces"
	shimv1 "github.com/berth-dev/berth/proto/berth/shim/v1"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
	"github.com/berth-dev/berth/shim/bundle"
)

// tasksService serves TasksService over the runtime manager.
type tasksService struct {
	berthv1.UnimplementedTasksServiceServer
	a *Agent
}

// defaultStopTimeout is Docker's: SIGKILL 10 s after the stop signal.
const defaultStopTimeout = 10 * time.Second

// logPath is where a container's log file lives:
// <root>/containers/<ns>/<id>/<id>.log.
func (a *Agent) logPath(ns, id string) string {
	return filepath.Join(a.cfg.Root, "containers", ns, id, id+".log")
}

func (s *tasksService) container(ctx context.Context, ref string) (*berthv1.Container, error) {
	c, err := s.a.db.Containers().Resolve(ctx, ref)
	if err != nil {
		return nil, fieldErr("container_id", err)
	}
	return c, nil
}

func (s *tasksService) task(ctx context.Context, ref string) (*berthv1.Container, *runtime.Task, error) {
	c, err := s.container(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	t, err := s.a.runtime.Get(namespaces.FromContext(ctx), c.Id)
	if err != nil {
		return c, nil, err
	}
	return c, t, nil
}

// setStatus updates the container's status with fn, read-modify-write.
func (a *Agent) setStatus(ctx context.Context, id string, fn func(st *berthv1.ContainerStatus)) (*berthv1.Container, error) {
	return a.setStatusAnd(ctx, id, fn, nil)
}

// setStatusAnd is setStatus that also sets the log path when logPath is
// not nil, in the same transaction.
func (a *Agent) setStatusAnd(ctx context.Context, id string, fn func(st *berthv1.ContainerStatus), logPath *string) (*berthv1.Container, error) {
	return a.setStatusOrdered(ctx, id, fn, logPath, nil)
}

// setStatusOrdered is setStatusAnd that closes inLine, when not nil, once
// it holds the status lock: every status update that starts after that
// comes after this one.
func (a *Agent) setStatusOrdered(ctx context.Context, id string, fn func(st *berthv1.ContainerStatus), logPath *string, inLine chan<- struct{}) (*berthv1.Container, error) {
	a.statusMu.Lock()
	defer a.statusMu.Unlock()
	if inLine != nil {
		close(inLine)
	}
	c, err := a.db.Containers().Get(ctx, id)
	if err != nil {
		return nil, err
	}
	st := proto.Clone(c.GetStatus()).(*berthv1.ContainerStatus)
	if st == nil {
		st = &berthv1.ContainerStatus{}
	}
	fn(st)
	if logPath == nil && proto.Equal(st, c.GetStatus()) {
		// Nothing changed (a start event after StartTask recorded the
		// start, say): no commit, which costs a disk flush.
		return c, nil
	}
	c.Status = st
	paths := []string{"status"}
	if logPath != nil {
		c.LogPath = *logPath
		paths = append(paths, "log_path")
	}
	return a.db.Containers().Update(ctx, c, paths...)
}

func (s *tasksService) CreateTask(ctx context.Context, req *berthv1.CreateTaskRequest) (*berthv1.CreateTaskResponse, error) {
	c, err := s.container(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	created, err := s.createTask(ctx, c, nil)
	if err != nil {
		return nil, err
	}
	created.record(ctx, s.a, c.Id, nil)
	return &berthv1.CreateTaskResponse{Pid: created.pid}, nil
}

// createdTask is what creating a task leaves to record in the container's
// status: by CreateTask before it answers, or by an attach with
// create_task while the init starts (see Attach).
type createdTask struct {
	pid     uint32
	att     *network.Attachment
	logPath *string // the new log path, if it changed
}

// apply puts the created task into st.
func (ct *createdTask) apply(st *berthv1.ContainerStatus) {
	st.State, st.Pid, st.ExitCode, st.Error, st.OomKilled, st.FinishedAt, st.StoppedByUser =
		berthv1.ContainerState_CONTAINER_STATE_CREATED, ct.pid, 0, "", false, nil, false
	st.Networks, st.Ports = ct.att.Networks, ct.att.Ports
}

// record commits the created task's status and publishes /tasks/create;
// inLine is as for setStatusOrdered.
func (ct *createdTask) record(ctx context.Context, a *Agent, id string, inLine chan<- struct{}) {
	a.setStatusOrdered(ctx, id, ct.apply, ct.logPath, inLine)
	a.events.Publish(ctx, "/tasks/create", id, map[string]string{"pid": strconv.Itoa(int(ct.pid))})
}

// createTask creates c's task (shim, init waiting for Start, network) and
// returns what the caller must record. onShim, if set, is
// runtime.CreateOpts.OnShim.
func (s *tasksService) createTask(ctx context.Context, c *berthv1.Container, onShim func(*runtime.Task)) (*createdTask, error) {
	ns := namespaces.FromContext(ctx)
	defer s.a.taskLocks.lock(ns, c.Id)()
	if old, err := s.a.runtime.Get(ns, c.Id); err == nil {
		// Starting an exited container again (docker start): its old
		// task has served its purpose once its init has exited.
		st, serr := old.Shim.State(ctx, &shimv1.StateRequest{Id: c.Id})
		if serr == nil && st.GetStatus() != shimv1.Status_STATUS_STOPPED {
			return nil, fmt.Errorf("container %s already has a task (%s): stop it first: %w", c.Id, st.GetStatus(), errdefs.ErrFailedPrecondition)
		}
		if _, err := s.a.runtime.Delete(ctx, ns, c.Id, false); err != nil {
			return nil, err
		}
		s.a.detachNetwork(ctx, ns, c.Id)
	}
	var imgCfg *berthv1.ImageConfig
	if img, err := s.a.db.Images().Get(ctx, c.GetSpec().GetImage()); err == nil {
		imgCfg = img.GetConfig()
	} else if !errdefs.IsNotFound(err) {
		return nil, err
	}
	mounts, err := s.a.snapshots.Mounts(ctx, c.GetSnapshotKey())
	if err != nil {
		return nil, fmt.Errorf("rootfs of container %s (snapshot %q): %w", c.Id, c.GetSnapshotKey(), err)
	}
	logPath := c.GetLogPath()
	if logPath == "" {
		logPath = s.a.logPath(ns, c.Id)
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return nil, fmt.Errorf("log dir of %s: %w", c.Id, err)
	}
	maxSize, maxFiles := s.a.cfg.Logs.MaxSize, s.a.cfg.Logs.MaxFiles
	if l := c.GetSpec().GetLog(); l != nil {
		if l.GetMaxSizeBytes() != 0 {
			maxSize = l.GetMaxSizeBytes()
		}
		if l.GetMaxFiles() > 0 {
			maxFiles = int(l.GetMaxFiles())
		}
	}
	pending, err := s.a.attachNetwork(ctx, ns, c)
	if err != nil {
		return nil, err
	}
	created := false
	defer func() {
		if !created {
			// Nothing of the network outlives a task that was never made.
			s.a.cancelNetwork(ctx, ns, c.Id, pending)
		}
	}()
	att := pending.Attachment // CNI ADD runs while the shim starts
	t, err := s.a.runtime.Create(ctx, runtime.CreateOpts{
		NS: ns, ID: c.Id, Rootfs: mounts,
		Spec: func(rootfs string) (*specs.Spec, error) {
			sp, err := oci.Generate(ctx, oci.Input{ID: c.Id, Spec: c.GetSpec(), Image: imgCfg, Rootfs: rootfs,
				CgroupParent: s.a.cfg.CgroupParent, Logger: s.a.log, NamespacePaths: withNetwork(nil, att)})
			if err != nil {
				return nil, err
			}
			sp.Mounts = append(sp.Mounts, networkMounts(att, c.GetSpec().GetReadOnlyRootfs())...)
			return sp, nil
		},
		Terminal: c.GetSpec().GetTty(), Stdin: c.GetSpec().GetOpenStdin(),
		Log:          &shimv1.LogOptions{Path: logPath, MaxSizeBytes: maxSize, MaxFiles: int32(maxFiles)},
		CgroupParent: s.a.cfg.CgroupParent,
		OnShim:       onShim,
		BeforeInit:   s.a.joinNetwork(ctx, c.Id, pending),
	})
	if err != nil {
		if code, ok := runtime.ExitCodeOf(err); ok {
			// Docker keeps such a container, created, with the shell's
			// code, so `ps -a` and `inspect` tell what went wrong.
			s.a.setStatus(ctx, c.Id, func(st *berthv1.ContainerStatus) {
				st.State, st.ExitCode, st.Error = berthv1.ContainerState_CONTAINER_STATE_CREATED, int32(code), err.Error()
			})
			return nil, fmt.Errorf("%w (exit code %d)", err, code)
		}
		return nil, err
	}
	created = true
	if full, err := pending.Wait(ctx); err == nil { // joined already, by BeforeInit
		att = full
	}
	ct := &createdTask{pid: t.Pid, att: att}
	if c.GetLogPath() != logPath {
		ct.logPath = &logPath
	}
	return ct, nil
}

func (s *tasksService) StartTask(ctx context.Context, req *berthv1.StartTaskRequest) (*berthv1.StartTaskResponse, error) {
	c, err := s.container(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if req.GetExecId() == "" {
		// A program that exits at once (true) is released by the exit
		// handler; the lock holds that back until Start has returned.
		defer s.a.taskLocks.lock(namespaces.FromContext(ctx), c.Id)()
	}
	t, err := s.a.runtime.Get(namespaces.FromContext(ctx), c.Id)
	if err != nil {
		return nil, err
	}
	resp, err := t.Shim.Start(ctx, &shimv1.StartRequest{Id: c.Id, ExecId: req.GetExecId()})
	if err != nil {
		err = runtime.FromShim(err, "start "+describe(c.Id, req.GetExecId()))
		if code, ok := runtime.ExitCodeOf(err); ok {
			if req.GetExecId() == "" {
				s.a.setStatus(ctx, c.Id, func(st *berthv1.ContainerStatus) { st.ExitCode, st.Error = int32(code), err.Error() })
			}
			return nil, fmt.Errorf("%w (exit code %d)", err, code)
		}
		return nil, err
	}
	if req.GetExecId() == "" {
		s.a.setStatus(ctx, c.Id, func(st *berthv1.ContainerStatus) {
			// A fast process may have exited, and its exit been recorded,
			// before we get here: never turn EXITED back into RUNNING.
			// The shim's start event may have come first, with the
			// start's time: then there is nothing to record.
			if st.State == berthv1.ContainerState_CONTAINER_STATE_CREATED {
				st.State, st.Pid, st.StartedAt = berthv1.ContainerState_CONTAINER_STATE_RUNNING, resp.GetPid(), timestamppb.Now()
			} else if st.StartedAt == nil {
				st.StartedAt = timestamppb.Now()
			}
		})
	}
	return &berthv1.StartTaskResponse{Pid: resp.GetPid()}, nil
}

func describe(id, execID string) string {
	if execID == "" {
		return "container " + id
	}
	return "exec " + execID + " in container " + id
}

func (s *tasksService) GetTask(ctx context.Context, req *berthv1.GetTaskRequest) (*berthv1.GetTaskResponse, error) {
	c, t, err := s.task(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	st, err := t.Shim.State(ctx, &shimv1.StateRequest{Id: c.Id, ExecId: req.GetExecId()})
	if err != nil {
		return nil, runtime.FromShim(err, "state of "+describe(c.Id, req.GetExecId()))
	}
	return &berthv1.GetTaskResponse{Task: &berthv1.Task{ContainerId: c.Id, ExecId: req.GetExecId(), Pid: st.GetPid(),
		Status: berthv1.TaskStatus(st.GetStatus()), ExitStatus: st.GetExitStatus(), ExitedAt: st.GetExitedAt(),
		OomKilled: st.GetOomKilled(), Terminal: st.GetTerminal()}}, nil
}

// parseSignal accepts "9", "KILL" and "SIGKILL".
func parseSignal(v string) (unix.Signal, error) {
	if v == "" {
		return unix.SIGKILL, nil
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("signal %d is out of range 1-64: %w", n, errdefs.ErrInvalidArgument)
		}
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(v)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q (use a name such as TERM or a number): %w", v, errdefs.ErrInvalidArgument)
}

func (s *tasksService) KillTask(ctx context.Context, req *berthv1.KillTaskRequest) (*berthv1.KillTaskResponse, error) {
	sig, err := parseSignal(req.GetSignal())
	if err != nil {
		return nil, err
	}
	c, t, err := s.task(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if req.GetExecId() == "" {
		s.a.setStatus(ctx, c.Id, func(st *berthv1.ContainerStatus) { st.StoppedByUser = true })
		s.a.stopRestarting(ctx, c.Id)
	}
	if _, err := t.Shim.Kill(ctx, &shimv1.KillRequest{Id: c.Id, ExecId: req.GetExecId(), Signal: uint32(sig), All: req.GetAll()}); err != nil {
		return nil, runtime.FromShim(err, "kill "+describe(c.Id, req.GetExecId()))
	}
	return &berthv1.KillTaskResponse{}, nil
}

func (s *tasksService) StopTask(ctx context.Context, req *berthv1.StopTaskRequest) (*berthv1.StopTaskResponse, error) {
	c, t, err := s.task(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	var imgCfg *berthv1.ImageConfig
	if img, err := s.a.db.Images().Get(ctx, c.GetSpec().GetImage()); err == nil {
		imgCfg = img.GetConfig()
	}
	sig, err := oci.StopSignal(c.GetSpec(), imgCfg)
	if err != nil {
		return nil, err
	}
	timeout := defaultStopTimeout
	if n := c.GetSpec().GetStopTimeoutSeconds(); n > 0 {
		timeout = time.Duration(n) * time.Second
	}
	if n := req.GetTimeoutSeconds(); n >= 0 {
		timeout = time.Duration(n) * time.Second
	}
	s.a.setStatus(ctx, c.Id, func(st *berthv1.ContainerStatus) { st.StoppedByUser = true })
	s.a.stopRestarting(ctx, c.Id)
	if _, err := t.Shim.Kill(ctx, &shimv1.KillRequest{Id: c.Id, Signal: uint32(sig)}); err != nil && !errdefs.IsNotFound(runtime.FromShim(err, "")) {
		return nil, runtime.FromShim(err, "stop container "+c.Id)
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	w, err := t.Shim.Wait(wctx, &shimv1.WaitRequest{Id: c.Id})
	cancel()
	if err != nil && ctx.Err() == nil {
		s.a.log.Info("stop timed out; killing", "container", c.Id, "signal", sig, "timeout", timeout)
		t.Shim.Kill(ctx, &shimv1.KillRequest{Id: c.Id, Signal: uint32(unix.SIGKILL), All: true})
		w, err = t.Shim.Wait(ctx, &shimv1.WaitRequest{Id: c.Id})
	}
	if err != nil {
		return nil, runtime.FromShim(err, "stop container "+c.Id)
	}
	return &berthv1.StopTaskResponse{ExitStatus: w.GetExitStatus()}, nil
}

func (s *tasksService) WaitTask(ctx context.Context, req *berthv1.WaitTaskRequest) (*berthv1.WaitTaskResponse, error) {
	c, t, err := s.task(ctx, req.GetContainerId())
	if errdefs.IsNotFound(err) && c != nil && req.GetExecId() == "" {
		// The record read before the task lookup may predate the exit
		// that released the task: read it again.
		if fresh, gerr := s.a.db.Containers().Get(ctx, c.Id); gerr == nil {
			c = fresh
		}
	}
	if errdefs.IsNotFound(err) && c != nil && req.GetExecId() == "" &&
		c.GetStatus().GetState() == berthv1.ContainerState_CONTAINER_STATE_EXITED {
		// The task is gone already (deleted, or berthd restarted after the
		// shim did): the record has the exit.
		st := c.GetStatus()
		return &berthv1.WaitTaskResponse{ExitStatus: uint32(st.GetExitCode()), ExitedAt: st.GetFinishedAt(), OomKilled: st.GetOomKilled()}, nil
	}
	if err != nil {
		return nil, err
	}
	w, err := t.Shim.Wait(ctx, &shimv1.WaitRequest{Id: c.Id, ExecId: req.GetExecId()})
	if err != nil && req.GetExecId() == "" && ctx.Err() == nil {
		// The exited task may have been released while we waited: its
		// exit was recorded before that.
		if c, gerr := s.a.db.Containers().Get(ctx, c.Id); gerr == nil && c.GetStatus().GetState() == berthv1.ContainerState_CONTAINER_STATE_EXITED {
			st := c.GetStatus()
			return &berthv1.WaitTaskResponse{ExitStatus: uint32(st.GetExitCode()), ExitedAt: st.GetFinishedAt(), OomKilled: st.GetOomKilled()}, nil
		}
	}
	if err != nil {
		return nil, runtime.FromShim(err, "wait for "+describe(c.Id, req.GetExecId()))
	}
	if req.GetExecId() == "" {
		// The exit event may still be on its way: record the exit here
		// too, so a client that waited then reads the status sees it.
		s.a.recordExit(ctx, c.Id, w.GetExitStatus(), w.GetExitedAt(), w.GetOomKilled())
	}
	return &berthv1.WaitTaskResponse{ExitStatus: w.GetExitStatus(), ExitedAt: w.GetExitedAt(), OomKilled: w.GetOomKilled()}, nil
}

func (s *tasksService) DeleteTask(ctx context.Context, req *berthv1.DeleteTaskRequest) (*berthv1.DeleteTaskResponse, error) {
	c, err := s.container(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if req.GetExecId() == "" {
		defer s.a.taskLocks.lock(namespaces.FromContext(ctx), c.Id)()
	}
	t, err := s.a.runtime.Get(namespaces.FromContext(ctx), c.Id)
	if err != nil {
		return nil, err
	}
	if req.GetExecId() != "" {
		d, err := t.Shim.Delete(ctx, &shimv1.DeleteRequest{Id: c.Id, ExecId: req.GetExecId()})
		if err != nil {
			return nil, runtime.FromShim(err, "delete "+describe(c.Id, req.GetExecId()))
		}
		return &berthv1.DeleteTaskResponse{ExitStatus: d.GetExitStatus(), ExitedAt: d.GetExitedAt()}, nil
	}
	d, err := s.a.runtime.Delete(ctx, namespaces.FromContext(ctx), c.Id, req.GetForce())
	if err != nil {
		return nil, err
	}
	s.a.detachNetwork(ctx, namespaces.FromContext(ctx), c.Id)
	s.a.setStatus(ctx, c.Id, func(st *berthv1.ContainerStatus) {
		st.Networks, st.Ports = nil, nil
		if st.State != berthv1.ContainerState_CONTAINER_STATE_EXITED {
			st.State, st.ExitCode, st.FinishedAt = berthv1.ContainerState_CONTAINER_STATE_EXITED, int32(d.GetExitStatus()), d.GetExitedAt()
		}
		st.Pid = 0
	})
	s.a.events.Publish(ctx, "/tasks/delete", c.Id, map[string]string{"exit_code": strconv.Itoa(int(d.GetExitStatus()))})
	return &berthv1.DeleteTaskResponse{ExitStatus: d.GetExitStatus(), ExitedAt: d.GetExitedAt()}, nil
}

func newExecID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *tasksService) Exec(ctx context.Context, req *berthv1.ExecRequest) (*berthv1.ExecResponse, error) {
	ps := req.GetProcess()
	if len(ps.GetArgs()) == 0 {
		return nil, fmt.Errorf("process.args: give the command to run: %w", errdefs.ErrInvalidArgument)
	}
	execID := req.GetExecId()
	if execID == "" {
		execID = newExecID()
	} else if err := identifiers.Validate("exec_id", execID); err != nil {
		return nil, err
	}
	c, t, err := s.task(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	spec, err := oci.ReadSpec(t.Bundle)
	if err != nil {
		return nil, err
	}
	// The init's process is the template: same capabilities, rlimits,
	// no_new_privs and user unless the request says otherwise.
	p := *spec.Process
	p.Args = ps.GetArgs()
	p.Env = append(append([]string(nil), p.Env...), ps.GetEnv()...)
	p.Terminal = ps.GetTerminal()
	if ps.GetCwd() != "" {
		p.Cwd = ps.GetCwd()
	}
	if sz := ps.GetConsoleSize(); sz != nil && sz.GetWidth() > 0 {
		p.ConsoleSize = &specs.Box{Width: uint(sz.GetWidth()), Height: uint(sz.GetHeight())}
	}
	if ps.GetPrivileged() {
		// Refused rather than ignored: the caller asked for more than it
		// would get.
		return nil, fmt.Errorf("process.privileged: privileged exec is not supported yet: %w", errdefs.ErrNotImplemented)
	}
	if u := ps.GetUser(); u != "" {
		// Names are looked up in the container's files as they are now
		// (read inside its rootfs, symlinks kept inside), as docker exec
		// does.
		user, err := oci.ResolveUser(filepath.Join(t.Bundle, bundle.RootfsDir), u)
		if err != nil {
			return nil, fmt.Errorf("process.user: %w", err)
		}
		p.User = user
	}
	data, err := json.Marshal(&p)
	if err != nil {
		return nil, err
	}
	if _, err := t.Shim.Exec(ctx, &shimv1.ExecRequest{Id: c.Id, ExecId: execID, Terminal: ps.GetTerminal(), Stdin: ps.GetStdin(), Process: data}); err != nil {
		return nil, runtime.FromShim(err, "exec in container "+c.Id)
	}
	s.a.events.Publish(ctx, "/tasks/exec-added", c.Id, map[string]string{"exec_id": execID})
	return &berthv1.ExecResponse{ExecId: execID}, nil
}

func (s *tasksService) ResizePty(ctx context.Context, req *berthv1.ResizePtyRequest) (*berthv1.ResizePtyResponse, error) {
	c, t, err := s.task(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if _, err := t.Shim.ResizePty(ctx, &shimv1.ResizePtyRequest{Id: c.Id, ExecId: req.GetExecId(),
		Width: req.GetSize().GetWidth(), Height: req.GetSize().GetHeight()}); err != nil {
		return nil, runtime.FromShim(err, "resize the terminal of "+describe(c.Id, req.GetExecId()))
	}
	return &berthv1.ResizePtyResponse{}, nil
}

func (s *tasksService) CloseStdin(ctx context.Context, req *berthv1.CloseStdinRequest) (*berthv1.CloseStdinResponse, error) {
	c, t, err := s.task(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if _, err := t.Shim.CloseIO(ctx, &shimv1.CloseIORequest{Id: c.Id, ExecId: req.GetExecId(), Stdin: true}); err != nil {
		return nil, runtime.FromShim(err, "close stdin of "+describe(c.Id, req.GetExecId()))
	}
	return &berthv1.CloseStdinResponse{}, nil
}

// Attach relays between the client and the shim's Attach stream. The
// input goroutine is owned by this call: it ends when the client's
// stream ends or when the shim stream is closed by our return.
func (s *tasksService) Attach(stream berthv1.TasksService_AttachServer) (retErr error) {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return fmt.Errorf("the first attach message must be open: %w", errdefs.ErrInvalidArgument)
	}
	var (
		c          *berthv1.Container
		t          *runtime.Task
		up         shimv1.ShimService_AttachClient
		header     = metadata.MD{}
		headerSent bool
	)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	createTask := open.GetCreateTask()
	if cr := open.GetCreateContainer(); cr != nil {
		if open.GetContainerId() != "" || open.GetExecId() != "" {
			return fmt.Errorf("attach: create_container with container_id %q and exec_id %q: leave both empty, the container is the one it creates: %w", open.GetContainerId(), open.GetExecId(), errdefs.ErrInvalidArgument)
		}
		resp, err := (&containersService{a: s.a}).CreateContainer(ctx, cr)
		if err != nil {
			return err
		}
		c, createTask = resp.GetContainer(), true
		header.Set(api.ContainerIDHeader, c.Id)
		defer func() {
			// Until the headers are out, a failure is the run's.
			if retErr != nil && !headerSent {
				s.cleanupFailedRun(context.WithoutCancel(ctx), c)
			}
		}()
	}
	if createTask {
		if open.GetExecId() != "" {
			return fmt.Errorf("attach: create_task with exec_id %q: a task is the container's, not an exec's: %w", open.GetExecId(), errdefs.ErrInvalidArgument)
		}
		if c == nil {
			if c, err = s.container(ctx, open.GetContainerId()); err != nil {
				return err
			}
		}
		// The shim's attach is opened as soon as the shim is up, while
		// the init sets up (wait_create): it is subscribed by the time
		// the Create call returns, a connection and two round trips
		// sooner than after it.
		var early chan shimAttach
		ct, err := s.createTask(ctx, c, func(t *runtime.Task) {
			early = make(chan shimAttach, 1)
			go func() {
				up, err := openShimAttach(sctx, t, c.Id, open, true)
				early <- shimAttach{up, err}
			}()
		})
		if early != nil {
			// Owned here: ended by the Create's end, or by cancel.
			defer func() {
				if early != nil {
					cancel()
					<-early
				}
			}()
		}
		if err != nil {
			return err
		}
		// Recorded while the stream attaches to the shim and the init
		// starts: the commit holds the status lock before the start
		// begins, so the start's status, and the start and exit events',
		// come after it.
		recorded, inLine := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(recorded)
			ct.record(context.WithoutCancel(ctx), s.a, c.Id, inLine)
		}()
		<-inLine
		defer func() { <-recorded }()
		if t, err = s.a.runtime.Get(namespaces.FromContext(ctx), c.Id); err != nil {
			return err
		}
		if early != nil {
			r := <-early
			early = nil
			if up, err = r.up, r.err; err != nil {
				return err
			}
		}
	} else if c, t, err = s.task(ctx, open.GetContainerId()); err != nil {
		return err
	}
	if up == nil {
		if up, err = openShimAttach(sctx, t, c.Id, open, false); err != nil {
			return err
		}
	}
	// The shim has subscribed this stream: the client is told, by our
	// headers, that it may start the process.
	if open.GetStart() {
		// Attached: start it now, a round trip sooner than the client
		// could, and say so.
		if _, err := s.StartTask(ctx, &berthv1.StartTaskRequest{ContainerId: c.Id, ExecId: open.GetExecId()}); err != nil {
			return err
		}
		header.Set(api.StartedHeader, "true")
	}
	if err := stream.SendHeader(header); err != nil {
		return err
	}
	headerSent = true
	go func() {
		for {
			in, err := stream.Recv()
			if err != nil {
				// The client went away or half-closed: output keeps going
				// to the log; stop relaying input.
				up.CloseSend()
				return
			}
			var out *shimv1.AttachRequest
			switch v := in.GetInput().(type) {
			case *berthv1.AttachRequest_Stdin:
				out = &shimv1.AttachRequest{Input: &shimv1.AttachRequest_Stdin{Stdin: v.Stdin}}
			case *berthv1.AttachRequest_Resize:
				out = &shimv1.AttachRequest{Input: &shimv1.AttachRequest_Resize{Resize: &shimv1.ResizePtyRequest{
					Id: c.Id, ExecId: open.GetExecId(), Width: v.Resize.GetWidth(), Height: v.Resize.GetHeight()}}}
			case *berthv1.AttachRequest_CloseStdin:
				out = &shimv1.AttachRequest{Input: &shimv1.AttachRequest_CloseStdin{CloseStdin: v.CloseStdin}}
			default:
				continue
			}
			if err := up.Send(out); err != nil {
				return
			}
		}
	}()
	for {
		msg, err := up.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return runtime.FromShim(err, "attach to "+describe(c.Id, open.GetExecId()))
		}
		var resp *berthv1.AttachResponse
		switch v := msg.GetOutput().(type) {
		case *shimv1.AttachResponse_Data:
			resp = &berthv1.AttachResponse{Output: &berthv1.AttachResponse_Data{Data: &berthv1.Output{
				Stream: berthv1.Stream(v.Data.GetStream()), Data: v.Data.GetData()}}}
		case *shimv1.AttachResponse_Exit:
			resp = &berthv1.AttachResponse{Output: &berthv1.AttachResponse_Exit{Exit: &berthv1.WaitTaskResponse{
				ExitStatus: v.Exit.GetExitStatus(), ExitedAt: v.Exit.GetExitedAt(), OomKilled: v.Exit.GetOomKilled()}}}
			if open.GetExecId() == "" && c.GetSpec().GetAutoRemove() {
				// As docker run --rm: the client hears of the exit once
				// the container is gone, so its name is free again.
				s.a.waitRemoved(ctx, c.Id, 30*time.Second)
			}
		default:
			continue
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		if _, ok := msg.GetOutput().(*shimv1.AttachResponse_Exit); ok {
			return nil
		}
	}
}

// cleanupFailedRun removes what an attach with create_container leaves
// when the task could not be created or started, as `docker run` does:
// the failed task, and the container too when it was to be removed
// anyway (auto_remove); otherwise the container stays, created, with the
// error in its status, for the user to inspect.
func (s *tasksService) cleanupFailedRun(ctx context.Context, c *berthv1.Container) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := s.DeleteTask(ctx, &berthv1.DeleteTaskRequest{ContainerId: c.Id, Force: true}); err != nil && !errdefs.IsNotFound(err) {
		s.a.log.Warn("delete the task of a run that failed", "container", c.Id, "err", err)
	}
	if c.GetSpec().GetAutoRemove() {
		if _, err := (&containersService{a: s.a}).DeleteContainer(ctx, &berthv1.DeleteContainerRequest{Id: c.Id, Force: true}); err != nil && !errdefs.IsNotFound(err) {
			s.a.log.Warn("remove a container whose run failed", "container", c.Id, "err", err)
		}
	}
}

// shimAttach is an attach stream to a shim, subscribed, or why not.
type shimAttach struct {
	up  shimv1.ShimService_AttachClient
	err error
}

// openShimAttach opens an attach stream to t's shim for open and returns
// it once the shim has subscribed it (its first message says so): output
// from then on reaches it. waitCreate: the task's Create call is under
// way, and the shim waits for its end (see AttachOpen.wait_create).
func openShimAttach(ctx context.Context, t *runtime.Task, id string, open *berthv1.AttachOpen, waitCreate bool) (shimv1.ShimService_AttachClient, error) {
	what := "attach to " + describe(id, open.GetExecId())
	up, err := t.Attach(ctx)
	if err != nil {
		return nil, runtime.FromShim(err, what)
	}
	if err := up.Send(&shimv1.AttachRequest{Input: &shimv1.AttachRequest_Open{Open: &shimv1.AttachOpen{
		Id: id, ExecId: open.GetExecId(), Stdin: open.GetStdin(), Stdout: open.GetStdout(), Stderr: open.GetStderr(),
		Logs: open.GetLogs(), WaitCreate: waitCreate}}}); err != nil {
		return nil, runtime.FromShim(err, what)
	}
	msg, err := up.Recv()
	if err != nil {
		return nil, runtime.FromShim(err, what)
	}
	if !msg.GetSubscribed() {
		return nil, fmt.Errorf("%s: the shim's first message is not \"subscribed\" (a berth-shim of another release?): %w", what, errdefs.ErrFailedPrecondition)
	}
	return up, nil
}

func (s *tasksService) PauseTask(ctx context.Context, req *berthv1.PauseTaskRequest) (*berthv1.PauseTaskResponse, error) {
	c, t, err := s.task(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if _, err := t.Shim.Pause(ctx, &shimv1.PauseRequest{Id: c.Id}); err != nil {
		return nil, runtime.FromShim(err, "pause container "+c.Id)
	}
	s.a.setStatus(ctx, c.Id, func(st *berthv1.ContainerStatus) { st.State = berthv1.ContainerState_CONTAINER_STATE_PAUSED })
	return &berthv1.PauseTaskResponse{}, nil
}

func (s *tasksService) ResumeTask(ctx context.Context, req *berthv1.ResumeTaskRequest) (*berthv1.ResumeTaskResponse, error) {
	c, t, err := s.task(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if _, err := t.Shim.Resume(ctx, &shimv1.ResumeRequest{Id: c.Id}); err != nil {
		return nil, runtime.FromShim(err, "resume container "+c.Id)
	}
	s.a.setStatus(ctx, c.Id, func(st *berthv1.ContainerStatus) {
		if st.State == berthv1.ContainerState_CONTAINER_STATE_PAUSED {
			st.State = berthv1.ContainerState_CONTAINER_STATE_RUNNING
		}
	})
	return &berthv1.ResumeTaskResponse{}, nil
}

func (s *tasksService) Stats(ctx context.Context, req *berthv1.StatsRequest) (*berthv1.StatsResponse, error) {
	c, t, err := s.task(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	st, err := t.Shim.Stats(ctx, &shimv1.StatsRequest{Id: c.Id})
	if err != nil {
		return nil, runtime.FromShim(err, "stats of container "+c.Id)
	}
	return &berthv1.StatsResponse{
		Timestamp: st.GetTimestamp(),
		Cpu: &berthv1.CPUStats{UsageTotalNs: st.GetCpuUsageTotalNs(), UsageUserNs: st.GetCpuUsageUserNs(),
			UsageKernelNs: st.GetCpuUsageKernelNs(), ThrottledPeriods: st.GetCpuThrottledPeriods(),
			ThrottledTimeNs: st.GetCpuThrottledTimeNs(), OnlineCpus: uint32(onlineCPUs())},
		Memory: &berthv1.MemoryStats{UsageBytes: st.GetMemoryUsageBytes(), LimitBytes: st.GetMemoryLimitBytes(),
			MaxUsageBytes: st.GetMemoryMaxUsageBytes(), CacheBytes: st.GetMemoryCacheBytes(), RssBytes: st.GetMemoryRssBytes(),
			SwapBytes: st.GetMemorySwapBytes(), OomEvents: st.GetMemoryOomEvents()},
		Pids: &berthv1.PidsStats{Current: st.GetPidsCurrent(), Limit: st.GetPidsLimit()},
		Io:   &berthv1.IOStats{ReadBytes: st.GetIoReadBytes(), WriteBytes: st.GetIoWriteBytes()},
	}, nil
}

func onlineCPUs() int {
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) == nil {
		return set.Count()
	}
	return 1
}

func (s *tasksService) ListPids(ctx context.Context, req *berthv1.ListPidsRequest) (*berthv1.ListPidsResponse, error) {
	c, t, err := s.task(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	resp, err := t.Shim.Pids(ctx, &shimv1.PidsRequest{Id: c.Id})
	if err != nil {
		return nil, runtime.FromShim(err, "processes of container "+c.Id)
	}
	out := &berthv1.ListPidsResponse{}
	for _, p := range resp.GetProcesses() {
		info := &berthv1.ProcessInfo{Pid: p.GetPid(), ExecId: p.GetExecId()}
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.GetPid())); err == nil {
			// comm is in parentheses and may hold spaces: split after ")".
			if i := strings.LastIndexByte(string(stat), ')'); i > 0 {
				if open := strings.IndexByte(string(stat), '('); open >= 0 {
					info.Command = string(stat[open+1 : i])
				}
				f := strings.Fields(string(stat[i+1:]))
				if len(f) > 1 {
					pp, _ := strconv.Atoi(f[1])
					info.Ppid = uint32(pp)
				}
			}
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d", p.GetPid()), &st) == nil {
			info.Uid = st.Uid
		}
		out.Processes = append(out.Processes, info)
	}
	return out, nil
}

// onTaskEvent turns a shim's event into the container's status and a
// public event. It runs on the task's event goroutine and must be
// idempotent: after a berthd restart unacknowledged events come again.
func (a *Agent) onTaskEvent(ns, id string, ev *shimv1.EventsResponse) {
	ctx := namespaces.WithNamespace(context.Background(), ns)
	attrs := map[string]string{}
	if ev.GetExecId() != "" {
		attrs["exec_id"] = ev.GetExecId()
	}
	if ev.GetPid() != 0 {
		attrs["pid"] = strconv.Itoa(int(ev.GetPid()))
	}
	switch ev.GetTopic() {
	case "/tasks/exit":
		attrs["exit_code"] = strconv.Itoa(int(ev.GetExitStatus()))
		if ev.GetExecId() != "" {
			break
		}
		a.log.Debug("task exited", "container", id, "pid", ev.GetPid(), "exit_code", ev.GetExitStatus())
		if ev.GetOomKilled() {
			attrs["oom_killed"] = "true"
		}
		if a.autoRemoveOnExit(ctx, id) {
			break
		}
		c, err := a.recordExit(ctx, id, ev.GetExitStatus(), ev.GetExitedAt(), ev.GetOomKilled())
		if errdefs.IsNotFound(err) {
			// Removed with force while running: the record went first.
			a.log.Debug("exit of a removed container", "container", id)
			return
		}
		if err != nil {
			a.log.Warn("record exit", "container", id, "err", err)
			return
		}
		if !a.restarts.onExit(ctx, c) {
			// Nothing runs in the container any more: its shim, rootfs
			// mount and cgroup go now, as Docker deletes the task, rather
			// than one idle shim per exited container. The exit is in
			// the record, the output in the log.
			a.bg.Add(1)
			go func() {
				defer a.bg.Done()
				a.releaseTask(ctx, id)
			}()
		}
	case "/tasks/start":
		a.setStatus(ctx, id, func(st *berthv1.ContainerStatus) {
			// Only a created container becomes running: the exit of a
			// fast process may have been recorded already, and a restart
			// policy may have acted on it (RESTARTING), which a late
			// start must not undo.
			if st.State == berthv1.ContainerState_CONTAINER_STATE_CREATED {
				st.State, st.Pid, st.StartedAt = berthv1.ContainerState_CONTAINER_STATE_RUNNING, ev.GetPid(), ev.GetTimestamp()
			}
		})
	case "/tasks/oom":
		a.setStatus(ctx, id, func(st *berthv1.ContainerStatus) { st.OomKilled = true })
	}
	a.events.Publish(ctx, ev.GetTopic(), id, attrs)
}

// recordExit puts an init's exit into the container's status. It is
// idempotent: the exit event, a Wait and a replay after reconnect all
// record the same exit.
func (a *Agent) recordExit(ctx context.Context, id string, code uint32, at *timestamppb.Timestamp, oom bool) (*berthv1.Container, error) {
	return a.setStatus(ctx, id, func(st *berthv1.ContainerStatus) {
		st.State, st.ExitCode, st.FinishedAt, st.Pid = berthv1.ContainerState_CONTAINER_STATE_EXITED, int32(code), at, 0
		st.OomKilled = st.OomKilled || oom
		// An exited container publishes nothing (ps shows no ports); its
		// network goes with its task.
		st.Networks, st.Ports = nil, nil
	})
}

// releaseTask deletes the task of an exited container. A newer task (the
// user started the container again meanwhile) is left alone.
func (a *Agent) releaseTask(ctx context.Context, id string) {
	ns := namespaces.FromContext(ctx)
	defer a.taskLocks.lock(ns, id)()
	t, err := a.runtime.Get(ns, id)
	if err != nil {
		return
	}
	st, err := t.Shim.State(ctx, &shimv1.StateRequest{Id: id})
	if err != nil || st.GetStatus() != shimv1.Status_STATUS_STOPPED {
		return
	}
	if _, err := a.runtime.Delete(ctx, ns, id, false); err != nil && !errdefs.IsNotFound(err) {
		a.log.Warn("release the task of an exited container", "container", id, "err", err)
		return
	}
	a.detachNetwork(ctx, ns, id)
}

// autoRemoveOnExit deletes a --rm container whose init exited, and says
// whether it did (false: not a --rm container, or its removal failed and
// the exit is to be recorded as for any other). Its exit is not recorded
// first: that would be one more commit, a disk flush, on the way to the
// `run --rm` client, for a record about to go. The record is deleted
// here, before the event is acknowledged (so a crash cannot lose the
// exit: the container is either gone or its exit replays); the task, the
// rootfs and the logs go in the background, as this goroutine follows
// the task's events, which deleting the task ends.
func (a *Agent) autoRemoveOnExit(ctx context.Context, id string) bool {
	c, err := a.db.Containers().Get(ctx, id)
	if err != nil || !c.GetSpec().GetAutoRemove() {
		return false
	}
	rest, err := a.deleteContainerRecord(ctx, id, true)
	if err != nil {
		if !errdefs.IsNotFound(err) {
			a.log.Warn("remove --rm container", "container", id, "err", err)
		}
		return false
	}
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		// After the client has its answer: the attach waiting for this
		// removal sends the exit as soon as the record is gone, and the
		// teardown (unmounts, the shim's exit) competed with that and
		// with the client's own exit for the CPU.
		time.Sleep(autoRemoveRestDelay)
		rest()
	}()
	return true
}

// autoRemoveRestDelay is how long a --rm container's task, rootfs and
// logs outlive its record: a few times what the exit takes to reach a
// client after the record is gone (about 5 ms here).
const autoRemoveRestDelay = 20 * time.Millisecond

// removeOrphans finishes the removals a crash cut short. A removal
// deletes the record first and the rest after it (for --rm, after the
// client has its answer), so a berthd killed in between leaves a task, a
// rootfs snapshot and a log dir that no record names: their key is the
// container's ID.
func (a *Agent) removeOrphans(ctx context.Context, recs []runtime.Recovered) {
	orphan := func(ns, id string) bool {
		_, err := a.db.Containers().Get(namespaces.WithNamespace(ctx, ns), id)
		return errdefs.IsNotFound(err)
	}
	ids := map[[2]string]bool{}
	for _, r := range recs {
		if orphan(r.NS, r.ID) {
			ids[[2]string{r.NS, r.ID}] = true
		}
	}
	for _, k := range identifiers.ContainerDirs(filepath.Join(a.cfg.Root, "containers")) {
		if orphan(k[0], k[1]) {
			ids[k] = true
		}
	}
	for k := range ids {
		ns, id := k[0], k[1]
		a.log.Info("removing what a cut-short removal left", "container", id, "namespace", ns)
		a.releaseRemoved(namespaces.WithNamespace(ctx, ns), ns, id, id)
	}
}

// recover reconnects to the shims that outlived the last berthd and
// settles the containers whose shims are gone.
func (a *Agent) recoverTasks(ctx context.Context) {
	start := time.Now()
	recs := a.runtime.Reconnect(ctx)
	alive := map[string]bool{}
	for _, r := range recs {
		alive[r.NS+"/"+r.ID] = r.Alive
		if !r.Alive && r.Exit != nil {
			a.onTaskEvent(r.NS, r.ID, r.Exit)
		}
	}
	// Containers the records call live but that have no bundle at all (a
	// reboot wiped the state dir) did exit; their code is unknown.
	nss, _ := a.db.Namespaces().List(ctx)
	for _, n := range nss {
		nctx := namespaces.WithNamespace(ctx, n.GetName())
		list, _ := a.db.Containers().List(nctx, nil)
		for _, c := range list {
			switch c.GetStatus().GetState() {
			case berthv1.ContainerState_CONTAINER_STATE_RUNNING, berthv1.ContainerState_CONTAINER_STATE_PAUSED:
			default:
				continue
			}
			if _, ok := alive[n.GetName()+"/"+c.Id]; ok {
				continue
			}
			a.setStatus(nctx, c.Id, func(st *berthv1.ContainerStatus) {
				st.State, st.ExitCode, st.Pid, st.FinishedAt = berthv1.ContainerState_CONTAINER_STATE_EXITED, 255, 0, timestamppb.Now()
				st.Error = "the task was gone when berthd started (host reboot?)"
			})
		}
	}
	a.log.Info("reconnected to shims", "bundles", len(recs), "took", time.Since(start).Round(time.Millisecond))
	a.removeOrphans(ctx, recs)
	// Now that the runtime knows its tasks: release the networks of
	// containers that are gone or have no task (a berthd killed between
	// deleting a task or container and detaching its network).
	if err := a.network.Recover(ctx, a.networkLive); err != nil {
		a.log.Warn("network recovery left something behind; it is retried at the next start", "error", err)
	}
	if a.cfg.Network.WarmAttachments > 0 {
		a.network.KeepWarm()
	}
	a.restarts.atStart(ctx)
}
