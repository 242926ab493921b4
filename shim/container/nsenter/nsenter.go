// Package nsenter joins a running container's namespaces before the Go
// runtime starts, which is the only time a Go program can: setns into a
// mount namespace fails with EINVAL in a process whose threads share a
// filesystem context, and a Go process has threads from its first
// instruction of Go code. A C constructor (nsenter.c) runs first.
//
// Importing this package (container does) links the constructor into the
// binary; it does nothing unless the process was started with
// EnvFlags set. The protocol, with fds set up by the parent:
//
//	fd 3  SOCK_SEQPACKET socket to the parent (see container/sync.go)
//	fd 4  a pidfd of the container's init
//	_BERTH_NSENTER=<clone flags, decimal>  the namespaces to join
//
//	 1. read one datagram from fd 3 (the parent has put this process in the
//	    container's cgroup by then; what we fork inherits it);
//	 2. setns(fd 4, flags): one call joins them all, and a pidfd cannot
//	    name a recycled pid;
//	 3. fork, since joining a pid namespace only places children in it;
//	 4. parent half: pidfd_open the child (safe: we are its parent and do
//	    not reap it), send {"type":"pid","pid":N} with that pidfd as
//	    SCM_RIGHTS on fd 3, exit 0. The child is reparented to the nearest
//	    subreaper (the shim);
//	 5. child half: return, and the Go runtime starts inside the
//	    container's namespaces; container.Init takes it from there.
//
// On failure the constructor sends {"type":"error",...} and exits 1.
package nsenter

// EnvFlags is the environment variable that triggers the constructor.
const EnvFlags = "_BERTH_NSENTER"
