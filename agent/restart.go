package agent

import (
	"context"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// Restart backoff, Docker's: the first restart waits 100 ms, each next one
// twice as long, at most a minute; a container that ran for 10 s or more
// starts the sequence over.
const (
	restartFirstDelay = 100 * time.Millisecond
	restartMaxDelay   = time.Minute
	restartResetAfter = 10 * time.Second
)

// restarter applies containers' restart policies. A policy is decided
// from the container's record alone (policy, exit code, restart count,
// stopped_by_user), so a decision made before a berthd restart is made
// the same way after it: the pending restart of a container in state
// RESTARTING is simply made again when berthd starts.
type restarter struct {
	a *Agent

	mu      sync.Mutex
	pending map[string]*time.Timer // ns/id
	closed  bool
}

func newRestarter(a *Agent) *restarter {
	return &restarter{a: a, pending: map[string]*time.Timer{}}
}

// wants reports whether policy p restarts container c after its exit.
// atStart is true when berthd itself is starting: `always` then restarts
// even a container the user stopped, as Docker's daemon does at start.
func wants(c *berthv1.Container, atStart bool) bool {
	p, st := c.GetSpec().GetRestartPolicy(), c.GetStatus()
	if c.GetSpec().GetAutoRemove() {
		return false
	}
	switch p.GetName() {
	case "always":
		return atStart || !st.GetStoppedByUser()
	case "unless-stopped":
		return !st.GetStoppedByUser()
	case "on-failure":
		return !st.GetStoppedByUser() && st.GetExitCode() != 0 &&
			(p.GetMaxRetries() == 0 || st.GetRestartCount() < p.GetMaxRetries())
	}
	return false
}

// backoff is the wait before restart number count+1 of a container that
// last ran for ran.
func backoff(count int32, ran time.Duration) time.Duration {
	if ran >= restartResetAfter {
		return restartFirstDelay
	}
	d := restartFirstDelay
	for i := int32(0); i < count && d < restartMaxDelay; i++ {
		d *= 2
	}
	return min(d, restartMaxDelay)
}

// onExit decides, after the init of c exited, whether to restart it, and
// schedules the restart with backoff. It reports whether it did.
func (r *restarter) onExit(ctx context.Context, c *berthv1.Container) bool {
	if !wants(c, false) {
		if c.GetSpec().GetRestartPolicy().GetName() != "" {
			r.a.log.Debug("restart policy: no restart", "container", c.GetId(), "policy", c.GetSpec().GetRestartPolicy().GetName(),
				"exit_code", c.GetStatus().GetExitCode(), "restart_count", c.GetStatus().GetRestartCount())
		}
		return false
	}
	st := c.GetStatus()
	ran := st.GetFinishedAt().AsTime().Sub(st.GetStartedAt().AsTime())
	if st.GetStartedAt() == nil || st.GetFinishedAt() == nil {
		ran = 0
	}
	delay := backoff(st.GetRestartCount(), ran)
	c, err := r.a.setStatus(ctx, c.Id, func(st *berthv1.ContainerStatus) {
		st.State = berthv1.ContainerState_CONTAINER_STATE_RESTARTING
		st.RestartCount++
	})
	if err != nil {
		r.a.log.Warn("restart policy", "container", c.GetId(), "err", err)
		return false
	}
	r.a.log.Debug("restart scheduled", "container", c.Id, "restart_count", c.GetStatus().GetRestartCount(), "delay", delay)
	r.schedule(namespaces.FromContext(ctx), c.Id, delay)
	return true
}

// atStart restarts, once berthd has reconnected to its shims, the
// containers whose policy asks for it and that have no live task.
func (r *restarter) atStart(ctx context.Context) {
	nss, err := r.a.db.Namespaces().List(ctx)
	if err != nil {
		r.a.log.Warn("restart policies at start", "err", err)
		return
	}
	for _, n := range nss {
		nctx := namespaces.WithNamespace(ctx, n.GetName())
		list, err := r.a.db.Containers().List(nctx, nil)
		if err != nil {
			continue
		}
		for _, c := range list {
			switch c.GetStatus().GetState() {
			case berthv1.ContainerState_CONTAINER_STATE_RESTARTING:
				// berthd stopped during a backoff: the decision stands.
			case berthv1.ContainerState_CONTAINER_STATE_EXITED:
				if !wants(c, true) {
					continue
				}
			default:
				continue
			}
			if _, err := r.a.runtime.Get(n.GetName(), c.Id); err == nil && c.GetStatus().GetState() != berthv1.ContainerState_CONTAINER_STATE_EXITED {
				continue
			}
			r.a.setStatus(nctx, c.Id, func(st *berthv1.ContainerStatus) {
				st.State = berthv1.ContainerState_CONTAINER_STATE_RESTARTING
				// A berthd start is the one event that restarts an
				// `always` container the user stopped.
				st.StoppedByUser = false
			})
			r.schedule(n.GetName(), c.Id, 0)
		}
	}
}

func (r *restarter) schedule(ns, id string, delay time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	key := ns + "/" + id
	if t, ok := r.pending[key]; ok && t.Stop() {
		r.a.bg.Done() // the replaced timer will not run to say it
	}
	r.a.bg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(delay, func() {
		defer r.a.bg.Done()
		r.mu.Lock()
		if r.pending[key] != t || r.closed {
			r.mu.Unlock()
			return
		}
		delete(r.pending, key)
		r.mu.Unlock()
		r.restart(ns, id)
	})
	r.pending[key] = t
}

// restart gives the container a new task and starts it, unless the user
// stopped or removed it in the meantime.
// restartTimeout bounds one restart's task create and start.
const restartTimeout = 2 * time.Minute

func (r *restarter) restart(ns, id string) {
	ctx := namespaces.WithNamespace(context.Background(), ns)
	c, err := r.a.db.Containers().Get(ctx, id)
	if err != nil {
		return // removed meanwhile
	}
	st := c.GetStatus()
	if st.GetState() != berthv1.ContainerState_CONTAINER_STATE_RESTARTING {
		r.a.log.Debug("restart dropped: the container is no longer restarting", "container", id, "state", st.GetState())
		return
	}
	if st.GetStoppedByUser() {
		r.a.setStatus(ctx, id, func(st *berthv1.ContainerStatus) { st.State = berthv1.ContainerState_CONTAINER_STATE_EXITED })
		return
	}
	ts := &tasksService{a: r.a}
	// Bounded, as a client's call would be: a restart that hangs is
	// reported and left to the policy rather than waited for forever.
	cctx, cancel := context.WithTimeout(ctx, restartTimeout)
	defer cancel()
	_, err = ts.CreateTask(cctx, &berthv1.CreateTaskRequest{ContainerId: id})
	if err == nil {
		_, err = ts.StartTask(cctx, &berthv1.StartTaskRequest{ContainerId: id})
	}
	if err != nil {
		r.a.log.Warn("restart failed", "container", id, "err", err)
		// A start that fails counts as a failed run: the policy decides
		// again, with the longer backoff.
		c, serr := r.a.setStatus(ctx, id, func(st *berthv1.ContainerStatus) {
			st.State, st.Error, st.FinishedAt = berthv1.ContainerState_CONTAINER_STATE_EXITED, err.Error(), timestamppb.Now()
			if st.ExitCode == 0 {
				st.ExitCode = 128
			}
		})
		if serr == nil && !errdefs.IsNotFound(err) {
			r.onExit(ctx, c)
		}
		return
	}
	r.a.log.Debug("restarted", "container", id)
	r.a.events.Publish(ctx, "/containers/restart", id, map[string]string{"name": c.GetName()})
}

// cancel drops a pending restart: the user stopped, killed or removed
// the container. It reports whether one was pending.
func (r *restarter) cancel(ns, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.pending[ns+"/"+id]
	if ok && t.Stop() {
		delete(r.pending, ns+"/"+id)
		r.a.bg.Done()
		return true
	}
	return false
}

// close stops every pending restart; the records keep state RESTARTING,
// so the next berthd makes them.
func (r *restarter) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for key, t := range r.pending {
		if t.Stop() {
			r.a.bg.Done()
		}
		delete(r.pending, key)
	}
}

// stopRestarting cancels a pending restart of container id, which then
// stays exited: the user stopped it.
func (a *Agent) stopRestarting(ctx context.Context, id string) {
	if a.restarts.cancel(namespaces.FromContext(ctx), id) {
		a.setStatus(ctx, id, func(st *berthv1.ContainerStatus) {
			if st.State == berthv1.ContainerState_CONTAINER_STATE_RESTARTING {
				st.State = berthv1.ContainerState_CONTAINER_STATE_EXITED
			}
		})
	}
}
