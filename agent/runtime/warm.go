package runtime

// Warm shims: see shim/bundle/warm.go for the protocol. The Manager keeps
// Config.WarmShims of them; Create adopts one when it can and starts a
// shim the ordinary way when none is ready or adoption fails.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/berth-dev/berth/agent/oci"
	"github.com/berth-dev/berth/errdefs"
	shimv1 "github.com/berth-dev/berth/proto/berth/shim/v1"
	"github.com/berth-dev/berth/shim/bundle"
	"github.com/berth-dev/berth/shim/container/cgroup"
)

// adoptTimeout bounds one exchange with a warm shim.
const adoptTimeout = 2 * time.Second

// warmShim is an idle shim waiting to be adopted.
type warmShim struct {
	boot  *shimv1.Bootstrap
	ctl   *os.File // berthd's end of the control socket
	pidfd int      // to kill it without a pid race
	dir   string   // its directory under bundle.WarmDir
	// conn is connected to its socket from the start: the connection
	// waits in the listener's backlog until the shim serves, after its
	// adoption, so the task's client needs no dial then.
	conn net.Conn
}

// takeConn hands the connection over to the task's client.
func (w *warmShim) takeConn() net.Conn {
	c := w.conn
	w.conn = nil
	return c
}

// startWarm starts one warm shim.
func (m *Manager) startWarm(ctx context.Context) (*warmShim, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("warm shim control socket: %w", err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, err
	}
	ctl := os.NewFile(uintptr(fds[0]), "warm-shim-control") // non-blocking: deadlines work
	child := os.NewFile(uintptr(fds[1]), "warm-shim-control-child")
	args := []string{"start", "--warm", "--state", m.cfg.State}
	if cgroup.CanRename() {
		res, err := json.Marshal(oci.DefaultResources())
		if err != nil {
			return nil, err
		}
		args = append(args, "--cgroup-parent", m.cgroupParent(), "--cgroup-resources", string(res))
	}
	if m.cfg.ShimDebug {
		args = append(args, "--debug")
	}
	cmd := exec.CommandContext(ctx, m.cfg.ShimBinary, args...)
	cmd.Dir = m.cfg.State
	cmd.ExtraFiles = []*os.File{child}
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err = cmd.Run()
	child.Close()
	if err != nil {
		ctl.Close()
		return nil, fmt.Errorf("start a warm shim (%s): %v: %s", m.cfg.ShimBinary, err, bytes.TrimSpace(stderr.Bytes()))
	}
	b, err := parseBootstrap(bytes.TrimSpace(out.Bytes()))
	if err != nil {
		ctl.Close()
		return nil, fmt.Errorf("warm shim: %w", err)
	}
	w := &warmShim{boot: b, ctl: ctl, pidfd: -1, dir: filepath.Dir(strings.TrimPrefix(b.GetAddress(), "unix://"))}
	if filepath.Dir(w.dir) != bundle.WarmDir(m.cfg.State) {
		w.dir = "" // not ours to remove
		w.discard()
		return nil, fmt.Errorf("warm shim at %s, not under %s: %w", b.GetAddress(), bundle.WarmDir(m.cfg.State), errdefs.ErrDataLoss)
	}
	if w.pidfd, err = unix.PidfdOpen(int(b.GetPid()), 0); err != nil {
		w.discard()
		return nil, fmt.Errorf("warm shim %d: %w", b.GetPid(), err)
	}
	if w.conn, err = net.DialTimeout("unix", filepath.Join(w.dir, bundle.WarmSocketName), dialTimeout); err != nil {
		w.discard()
		return nil, fmt.Errorf("warm shim %d: %w", b.GetPid(), err)
	}
	return w, nil
}

// discard stops an idle warm shim: closing the control socket makes it
// clean up and exit; it is killed if it takes too long.
func (w *warmShim) discard() {
	if w.conn != nil {
		w.conn.Close()
	}
	w.ctl.Close()
	if w.pidfd >= 0 {
		if !pollPidfd(w.pidfd, 2*time.Second) {
			_ = unix.PidfdSendSignal(w.pidfd, unix.SIGKILL, nil, 0)
			pollPidfd(w.pidfd, 2*time.Second)
		}
		unix.Close(w.pidfd)
		w.pidfd = -1
	}
	if w.dir != "" {
		os.RemoveAll(w.dir)
	}
}

// kill stops a warm shim at once, whatever it was doing (a failed
// adoption): it cannot then touch the socket or bundle it was given.
func (w *warmShim) kill() {
	if w.conn != nil {
		w.conn.Close()
	}
	if w.pidfd >= 0 {
		_ = unix.PidfdSendSignal(w.pidfd, unix.SIGKILL, nil, 0)
		pollPidfd(w.pidfd, 2*time.Second)
		unix.Close(w.pidfd)
		w.pidfd = -1
	}
	w.ctl.Close()
	if w.dir != "" {
		os.RemoveAll(w.dir)
	}
}

// pollPidfd waits up to timeout for the process to exit.
func pollPidfd(fd int, timeout time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		n, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}

// adopt binds w to task (ns, id) in bundle dir and records it there as
// bootstrap.json. On error w is dead and has left nothing behind.
func (m *Manager) adopt(w *warmShim, ns, id, dir, cgroupParent string) (_ *shimv1.Bootstrap, retErr error) {
	defer func() {
		if retErr != nil {
			w.kill()
			os.Remove(bundle.SocketPath(m.cfg.State, ns, id))
			os.Remove(filepath.Join(dir, bundle.BootstrapFile))
		}
	}()
	if err := w.exchange(bundle.AdoptRequest{ID: id, Namespace: ns, Bundle: dir, CgroupParent: cgroupParent}, true); err != nil {
		return nil, err
	}
	b := &shimv1.Bootstrap{Version: w.boot.GetVersion(), Address: "unix://" + bundle.SocketPath(m.cfg.State, ns, id),
		Pid: w.boot.GetPid(), Protocol: w.boot.GetProtocol(), ShimVersion: w.boot.GetShimVersion()}
	line, err := protojson.Marshal(b)
	if err != nil {
		return nil, err
	}
	if err := bundle.WriteFileAtomic(filepath.Join(dir, bundle.BootstrapFile), line, 0o600); err != nil {
		return nil, err
	}
	if err := w.exchange(bundle.AdoptRequest{Commit: true}, false); err != nil {
		return nil, err
	}
	w.ctl.Close()
	unix.Close(w.pidfd)
	w.pidfd = -1
	return b, nil
}

// exchange sends req and, with reply, waits for the answer.
func (w *warmShim) exchange(req bundle.AdoptRequest, reply bool) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	w.ctl.SetDeadline(time.Now().Add(adoptTimeout))
	if _, err := w.ctl.Write(data); err != nil {
		return fmt.Errorf("warm shim %d: %w", w.boot.GetPid(), err)
	}
	if !reply {
		return nil
	}
	buf := make([]byte, 64<<10)
	n, err := w.ctl.Read(buf)
	if err != nil {
		return fmt.Errorf("warm shim %d: %w", w.boot.GetPid(), err)
	}
	var r bundle.AdoptReply
	if err := json.Unmarshal(buf[:n], &r); err != nil {
		return fmt.Errorf("warm shim %d: reply %q: %w", w.boot.GetPid(), buf[:n], errdefs.ErrDataLoss)
	}
	if r.Error != "" {
		return fmt.Errorf("warm shim %d: %s", w.boot.GetPid(), r.Error)
	}
	return nil
}

// takeWarm returns an idle warm shim, or nil when none is ready.
func (m *Manager) takeWarm() *warmShim {
	select {
	case w := <-m.warm:
		return w
	default:
		return nil
	}
}

// refill asks the pool keeper for a new warm shim.
func (m *Manager) refill() {
	select {
	case m.refillc <- struct{}{}:
	default:
	}
}

// keepWarm is the pool keeper: it keeps cap(m.warm) warm shims, starting
// one whenever refill says one was taken, and discards them when the
// Manager closes. It runs until m.ctx ends.
func (m *Manager) keepWarm() {
	defer m.wg.Done()
	defer func() {
		for {
			select {
			case w := <-m.warm:
				w.discard()
			default:
				return
			}
		}
	}()
	backoff := time.Second
	for {
		for len(m.warm) < cap(m.warm) {
			w, err := m.startWarm(m.ctx)
			if err != nil {
				if m.ctx.Err() != nil {
					return
				}
				m.cfg.Log.Warn("warm shim", "err", err, "retry_in", backoff)
				select {
				case <-m.ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, time.Minute)
				continue
			}
			backoff = time.Second
			select {
			case m.warm <- w:
			default:
				w.discard() // cannot happen: only this goroutine fills
			}
		}
		select {
		case <-m.ctx.Done():
			return
		case <-m.refillc:
		}
		if len(m.warm) > 0 && !m.quiet(warmRefillDelay) {
			return
		}
	}
}

// warmRefillDelay is how long the pool keeper waits, after the last warm
// shim was taken, before it starts the next one, while the pool still
// holds one. Starting a shim is three Go runtimes coming up (about 60 ms
// of CPU and a few thousand page faults), and made at once it ran
// alongside the container that took the last one: that container's
// start, exit and removal, about 40 ms more, were 15-20 ms slower on a
// 2-core host. Starting it at SCHED_IDLE did not help (measured): page
// faults contend below the scheduler, in the hypervisor's MMU, not for
// CPU time. 150 ms covers a `run --rm true` to its end.
//
// Once the pool is empty the refill starts at once: containers started
// back to back (a script's loop, a burst) would otherwise all start cold,
// 30-40 ms slower each. That is why the default pool holds two: the
// second covers the next container while the first one's replacement
// waits for quiet.
const warmRefillDelay = 150 * time.Millisecond

// quiet waits until d has passed with no further refill request; it
// returns at once when the pool empties, and false if the Manager closed
// meanwhile.
func (m *Manager) quiet(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return false
		case <-m.refillc:
			if len(m.warm) == 0 {
				return true
			}
			t.Reset(d)
		case <-t.C:
			return true
		}
	}
}

// removeStaleWarm removes what warm shims of an earlier berthd left: they
// exit by themselves when the agent goes, but a shim killed with -9
// leaves its directory, and the empty group it made ahead under
// cgroupParent. Groups of live warm shims (another berthd's on the same
// parent) hold their preforked init, and stay.
func removeStaleWarm(state, cgroupParent string) error {
	return errors.Join(os.RemoveAll(bundle.WarmDir(state)), cgroup.RemoveEmpty(cgroupParent, cgroup.WarmPrefix))
}
