// Package oci turns what a user asked for (a berthv1.ContainerSpec) and what
// the image says (a berthv1.ImageConfig) into the OCI runtime spec that
// berthd writes into each container's bundle as config.json, which the
// shim's container init then carries out.
//
// The defaults are Docker's, taken from moby's oci/defaults.go,
// oci/caps and daemon/oci_linux.go, so that `berthctl run` behaves like
// `docker run`: the same capability set, masked and read-only paths, /dev
// mounts, device rules, namespaces, seccomp profile, environment and
// argument merge rules, and user resolution.
//
// Where Berth differs from Docker it does so on purpose, and the code says
// why at the spot. The main ones: rlimits and oom_score_adj are clamped to
// what the host allows instead of failing at start; the device cgroup
// rules and /dev nodes are written out in full, because berth-shim is its
// own runtime and adds no implicit rules as runc does.
//
// Generate reads nothing from the host but a few cheap facts (capabilities
// of the agent, rlimits, oom_score_adj, /dev for privileged containers),
// each of which Input can supply instead, and the container's own
// /etc/passwd and /etc/group, opened inside the rootfs so that a symlink
// cannot lead out of it.
package oci
