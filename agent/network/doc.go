// Package network gives containers their network: a pinned network
// namespace, CNI networks (bridge, host-local IPAM, portmap) and the
// generated /etc/hosts, /etc/hostname and /etc/resolv.conf.
//
// # Modes
//
// NetworkConfig.mode is "none" (a namespace with only lo, up), "host" (no
// namespace: the container shares berthd's), "bridge" or "" (the default
// network "bridge", Linux bridge berth0, masqueraded to the outside) or the
// name of a user-defined network (`berthctl network create`), whose
// containers find each other by name through /etc/hosts.
//
// # How the runtime manager uses it
//
// One Manager per berthd, built in main with New and then, before the API
// serves, Recover(ctx, live) with live reporting whether a container still
// has a task (shim alive or bundle present). Per container, under the
// runtime's per-container lock:
//
//  1. Begin, before the shim creates the container's init. Its
//     Pending.Attachment has NetnsPath, which goes to agent/oci as
//     Input.NamespacePaths[specs.NetworkNamespace] (empty in host mode:
//     then no network namespace is requested at all), and three files to
//     bind-mount into the container: HostsPath on /etc/hosts (read-write;
//     Berth rewrites it in place when peers come and go), HostnamePath on
//     /etc/hostname and ResolvConfPath on /etc/resolv.conf. Hostname is
//     the UTS hostname to set. The namespace is made and pinned, and CNI
//     ADD run, in the background meanwhile.
//  2. Shim start, then Wait, before the shim creates the init: it joins
//     them (the namespace exists from then on) and returns the complete
//     Attachment, whose Networks and Ports
//     go to ContainerStatus.networks and .ports. If Wait fails, the
//     network is gone already: stop the shim. If the shim fails, Cancel.
//     Attach is Begin and Wait in one.
//  3. Detach when the container is deleted (not when its task merely
//     exits: a restart reuses the attachment, so the IP and ports stay;
//     Get returns it again after a berthd restart). Detach is idempotent.
//
// # Crash safety
//
// Begin writes a record <StateDir>/attachments/<ns>/<id>.json (the CNI
// config list it will use, the ports, the interface) before it creates
// anything, and Detach removes it only after CNI DEL, unpinning and
// removing the files succeeded. So whatever berthd or a shim died in the
// middle of, the records name every namespace, allocation, veth and
// iptables rule that may exist, and Recover releases those of containers
// that are gone, and of attaches that never finished (no init joined
// them: the runtime creates the init only after Wait), with the exact
// configuration ADD used. Recover also sweeps
// pinned namespaces, files and host-local allocations no record names.
//
// # On disk
//
//	<ConfDir>/<network>.conflist            one CNI config list per network
//	<StateDir>/attachments/<ns>/<id>.json   attachment records
//	<StateDir>/netns/<ns>/<id>              pinned network namespaces (nsfs bind mounts)
//	<StateDir>/files/<ns>/<id>/{hosts,hostname,resolv.conf}
//	<StateDir>/ipam/<network>/              host-local's allocations (dataDir)
//	<StateDir>/cache/                       libcni's result cache
//
// StateDir is on the state tmpfs: at reboot the namespaces, veths and
// rules are gone, and so, correctly, are their allocations.
package network
