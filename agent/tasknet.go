package agent

import (
	"context"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/agent/network"
	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// attachNetwork starts giving container c its network (a pinned
// namespace, the generated /etc files, ports) before its task is created,
// with CNI ADD running in the background while the shim starts: the
// pending attachment's paths go into the spec at once. Every mode goes
// through the manager, host too: it writes the host's resolv.conf and
// hosts (plus --add-host) for the container, and no namespace. The caller
// holds the container's task lock and must end the attachment with
// joinNetwork before the shim creates the init (runtime.CreateOpts.BeforeInit),
// and with cancelNetwork if the task is not created.
func (a *Agent) attachNetwork(ctx context.Context, ns string, c *berthv1.Container) (*network.Pending, error) {
	// A stale attachment (an earlier task released while berthd died
	// before detaching it) would make Begin refuse: release it first.
	if err := a.network.Detach(context.WithoutCancel(ctx), ns, c.Id); err != nil {
		return nil, err
	}
	return a.network.Begin(ctx, network.AttachRequest{
		Namespace: ns, ContainerID: c.Id, Name: c.GetName(),
		Hostname: c.GetSpec().GetHostname(), Config: c.GetSpec().GetNetwork(),
	})
}

// joinNetwork is runtime.CreateOpts.BeforeInit: once the shim is up, it
// waits for the ADD that attachNetwork started, so the init is only
// created in a namespace whose network is complete. If ADD failed, the
// network is torn down already, Create stops the shim, and CreateTask
// fails as a failed attach always did: no task, no exit event, nothing
// left.
func (a *Agent) joinNetwork(ctx context.Context, id string, p *network.Pending) func() error {
	return func() error {
		start := time.Now()
		_, err := p.Wait(ctx)
		a.log.Debug("network joined", "container", id, "waited", time.Since(start), "err", err)
		return err
	}
}

// cancelNetwork gives up a pending attachment whose task was not created:
// it waits for ADD and releases all of it.
func (a *Agent) cancelNetwork(ctx context.Context, ns, id string, p *network.Pending) {
	if err := p.Cancel(ctx); err != nil {
		a.log.Warn("release the network of a container whose task was not created", "namespace", ns, "container", id, "err", err)
	}
}

// detachNetwork releases a container's network once its task is gone for
// good (exited and released, deleted, replaced or removed). It is
// idempotent; a failure is logged and retried by the next Detach or by
// Recover at the next berthd start.
func (a *Agent) detachNetwork(ctx context.Context, ns, id string) {
	if err := a.network.Detach(context.WithoutCancel(ctx), ns, id); err != nil {
		a.log.Warn("release the network of a container", "namespace", ns, "container", id, "err", err)
	}
}

// withNetwork puts an attachment into a generated spec: the namespace to
// join and the bind mounts of /etc/hosts, /etc/hostname and
// /etc/resolv.conf (Docker's rbind, rprivate; read-only with a read-only
// rootfs).
func withNetwork(in map[specs.LinuxNamespaceType]string, att *network.Attachment) map[specs.LinuxNamespaceType]string {
	if att == nil || att.NetnsPath == "" {
		return in
	}
	if in == nil {
		in = map[specs.LinuxNamespaceType]string{}
	}
	in[specs.NetworkNamespace] = att.NetnsPath
	return in
}

func networkMounts(att *network.Attachment, readonly bool) []specs.Mount {
	if att == nil {
		return nil
	}
	opts := []string{"rbind", "rprivate"}
	if readonly {
		opts = append(opts, "ro")
	}
	var out []specs.Mount
	for _, f := range []struct{ src, dst string }{
		{att.HostsPath, "/etc/hosts"}, {att.HostnamePath, "/etc/hostname"}, {att.ResolvConfPath, "/etc/resolv.conf"},
	} {
		if f.src != "" {
			out = append(out, specs.Mount{Destination: f.dst, Type: "bind", Source: f.src, Options: opts})
		}
	}
	return out
}

// networkLive is Recover's view after the runtime reconnected: a
// container keeps its network while its record exists and it has a task
// or a restart pending (RESTARTING; the restart's CreateTask replaces
// the attachment).
func (a *Agent) networkLive(ns, id string) bool {
	c, err := a.db.Containers().Get(namespaces.WithNamespace(context.Background(), ns), id)
	if errdefs.IsNotFound(err) {
		return false
	}
	if err != nil {
		return true // unsure: keep it; the next start decides again
	}
	if _, err := a.runtime.Get(ns, id); err == nil {
		return true
	}
	return c.GetStatus().GetState() == berthv1.ContainerState_CONTAINER_STATE_RESTARTING
}
