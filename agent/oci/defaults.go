package oci

import (
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// DefaultPath is the PATH a container gets when neither the image nor the
// user sets one (moby's defaultUnixPathEnv).
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// DefaultCgroupParent is where containers' cgroups go unless Input says
// otherwise; Docker's is "/docker".
const DefaultCgroupParent = "/berth"

// DefaultShmSize is the size of /dev/shm when shm_size is empty: 64 MiB,
// as Docker's daemon default.
const DefaultShmSize int64 = 64 << 20

// DefaultNofile is the RLIMIT_NOFILE a container gets unless the user sets
// a nofile ulimit. It is Docker's effective default (containerd's unit
// runs with LimitNOFILE=1048576 and containers inherit it); Generate lowers
// it to the host's hard limit.
const DefaultNofile uint64 = 1048576

// DefaultCapabilities returns Docker's default capability set, in Docker's
// order. The slice is new on each call, so callers may change it.
func DefaultCapabilities() []string {
	return []string{
		"CAP_CHOWN",
		"CAP_DAC_OVERRIDE",
		"CAP_FSETID",
		"CAP_FOWNER",
		"CAP_MKNOD",
		"CAP_NET_RAW",
		"CAP_SETGID",
		"CAP_SETUID",
		"CAP_SETFCAP",
		"CAP_SETPCAP",
		"CAP_NET_BIND_SERVICE",
		"CAP_SYS_CHROOT",
		"CAP_KILL",
		"CAP_AUDIT_WRITE",
	}
}

// DefaultMaskedPaths returns the paths hidden from unprivileged containers:
// files get /dev/null bound over them, directories an empty read-only
// tmpfs. The list is Docker's current one, /sys/devices/virtual/powercap
// included (RAPL energy counters leak enough to mount side-channel
// attacks, CVE-2020-8694).
func DefaultMaskedPaths() []string {
	return []string{
		"/proc/asound",
		"/proc/acpi",
		"/proc/kcore",
		"/proc/keys",
		"/proc/latency_stats",
		"/proc/timer_list",
		"/proc/timer_stats",
		"/proc/sched_debug",
		"/proc/scsi",
		"/sys/firmware",
		"/sys/devices/virtual/powercap",
	}
}

// DefaultReadonlyPaths returns the paths remounted read-only in
// unprivileged containers.
func DefaultReadonlyPaths() []string {
	return []string{
		"/proc/bus",
		"/proc/fs",
		"/proc/irq",
		"/proc/sys",
		"/proc/sysrq-trigger",
	}
}

// defaultMounts are Docker's mounts, in the order the init must mount
// them (/dev before what lives under it). /dev/shm gets its size= option
// in Generate.
func defaultMounts() []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"ro", "nosuid", "noexec", "nodev"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777"}},
	}
}

func i64(v int64) *int64 { return &v }

// DefaultResources are the cgroup resources of a container created with
// no resource options (Generate's Linux.Resources then): no limits, the
// default device allow-list. Warm shims make their groups ahead with
// them, so the usual container's group needs no write at its start.
func DefaultResources() *specs.LinuxResources {
	return &specs.LinuxResources{Devices: defaultDeviceRules()}
}

// defaultDeviceRules is the device cgroup allow-list of an unprivileged
// container. Docker's spec lists fewer rules because runc appends its own
// (mknod of anything, /dev/full, /dev/ptmx, /dev/pts/*) after them;
// berth-shim appends nothing, so the effective list is written out here:
// deny everything, then allow mknod of any node (CAP_MKNOD is in the
// default set and Docker containers can mknod) and rwm on the standard
// nodes. A nil Major or Minor is the wildcard.
func defaultDeviceRules() []specs.LinuxDeviceCgroup {
	return []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		{Allow: true, Type: "c", Access: "m"},
		{Allow: true, Type: "b", Access: "m"},
		{Allow: true, Type: "c", Major: i64(1), Minor: i64(3), Access: "rwm"}, // null
		{Allow: true, Type: "c", Major: i64(1), Minor: i64(5), Access: "rwm"}, // zero
		{Allow: true, Type: "c", Major: i64(1), Minor: i64(7), Access: "rwm"}, // full
		{Allow: true, Type: "c", Major: i64(1), Minor: i64(8), Access: "rwm"}, // random
		{Allow: true, Type: "c", Major: i64(1), Minor: i64(9), Access: "rwm"}, // urandom
		{Allow: true, Type: "c", Major: i64(5), Minor: i64(0), Access: "rwm"}, // tty
		{Allow: true, Type: "c", Major: i64(5), Minor: i64(1), Access: "rwm"}, // console
		{Allow: true, Type: "c", Major: i64(5), Minor: i64(2), Access: "rwm"}, // ptmx
		{Allow: true, Type: "c", Major: i64(136), Minor: nil, Access: "rwm"},  // pts/*
	}
}

// defaultDevices are the nodes the init creates in the container's /dev
// tmpfs. The runtime spec says a runtime provides them anyway; listing
// them keeps berth-shim free of a second, hidden list. /dev/console and
// /dev/ptmx are not nodes to create: the init binds the console pty and
// links ptmx to pts/ptmx.
func defaultDevices() []specs.LinuxDevice {
	mode := func() *os.FileMode { m := os.FileMode(0o666); return &m }
	u0 := func() *uint32 { v := uint32(0); return &v }
	dev := func(path string, major, minor int64) specs.LinuxDevice {
		return specs.LinuxDevice{Path: path, Type: "c", Major: major, Minor: minor, FileMode: mode(), UID: u0(), GID: u0()}
	}
	return []specs.LinuxDevice{
		dev("/dev/null", 1, 3),
		dev("/dev/zero", 1, 5),
		dev("/dev/full", 1, 7),
		dev("/dev/random", 1, 8),
		dev("/dev/urandom", 1, 9),
		dev("/dev/tty", 5, 0),
	}
}
