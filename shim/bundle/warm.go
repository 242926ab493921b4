package bundle

// Warm shims. A container start used to wait for two runs of the shim
// binary (start, then serve) and then for the container init, a third:
// most of a start on a machine where starting a Go binary costs tens of
// milliseconds. berthd therefore keeps a few shims started ahead, not yet
// bound to any container ("warm"), each with a container init preforked
// and waiting for its bootstrap (shim/container.Prefork). Creating a task
// adopts one instead of starting a shim.
//
// berthd runs `berth-shim start --warm --state STATE` (on cgroup v1 with
// `--cgroup-parent P --cgroup-resources JSON` too: the shim then makes
// its container's likely cgroup ahead, P/.warm-<random>, and its adoption
// renames it; see shim/container.WarmCgroup) with one end of a
// SOCK_SEQPACKET socketpair (the control socket) as fd 3. start makes
// WarmDir(STATE)/<random>/, binds shim.sock there, re-executes itself as
// `serve --warm` (listener fd 3, control fd 4, stderr to shim.log there)
// and prints its Bootstrap like any start. Over the control socket, one
// JSON message per datagram:
//
//	berthd                                  warm shim
//	AdoptRequest{id, namespace, bundle} ──▶ moves its socket to
//	                                        SocketPath(state, ns, id), its
//	                                        log to the bundle's shim.log and
//	                                        its cwd to the bundle; serves
//	                                    ◀── AdoptReply{error}
//	writes bootstrap.json
//	AdoptRequest{commit: true}          ──▶ closes the control socket: from
//	                                        here it lives like any shim
//
// A warm shim whose control socket reaches EOF before the commit (berthd
// went away, or gave up on it) removes its socket and directory and
// exits, so an agent killed with -9 leaves no idle shim behind; a shim
// adopted but not committed is then a bundle without bootstrap.json,
// which berthd's recovery already cleans up.

import "path/filepath"

// WarmDir holds the directories of warm shims.
func WarmDir(state string) string { return filepath.Join(state, "warm") }

// WarmSocketName is the socket's name in a warm shim's directory.
const WarmSocketName = "shim.sock"

// AdoptRequest binds a warm shim to a container (or, with Commit, ends
// the conversation).
type AdoptRequest struct {
	ID        string `json:"id,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Bundle    string `json:"bundle,omitempty"`
	// CgroupParent is the one Create will name: the shim makes the
	// container's cgroup under it while the adoption completes.
	CgroupParent string `json:"cgroup_parent,omitempty"`
	Commit       bool   `json:"commit,omitempty"`
}

// AdoptReply answers an adoption; Error is empty on success.
type AdoptReply struct {
	Error string `json:"error,omitempty"`
}
