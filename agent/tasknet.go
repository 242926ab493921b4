package agent

import (
	"context"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/agent/network"
	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// attachNetwork gives container c its network (a pinned namespace, CNI
// ADD, ports and the generated /etc files) before its task is created.
// Every mode goes through the manager, host too: it writes the host's
// resolv.conf and hosts (plus --add-host) for the container, and no
// namespace. The caller holds the container's task lock and must call
// detachNetwork if the task is not created after all.
func (a *Agent) attachNetwork(ctx context.Context, ns string, c *berthv1.Container) (*network.Attachment, error) {
	// A stale attachment (an earlier task released while berthd died
	// before detaching it) would make Attach refuse: release it first.
	if err := a.network.Detach(context.WithoutCancel(ctx), ns, c.Id); err != nil {
		return nil, err
	}
	return a.network.Attach(ctx, network.AttachRequest{
		Namespace: ns, ContainerID: c.Id, Name: c.GetName(),
		Hostname: c.GetSpec().GetHostname(), Config: c.GetSpec().GetNetwork(),
	})
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
