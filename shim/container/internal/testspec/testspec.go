// Package testspec builds OCI specs with Docker's defaults and busybox
// root filesystems, for the container runtime's tests. It is not the
// agent's spec generator.
package testspec

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	mobyseccomp "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// DefaultCaps is Docker's default capability set.
var DefaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// MaskedPaths and ReadonlyPaths are Docker's.
var (
	MaskedPaths = []string{
		"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
		"/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
	}
	ReadonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

func ptr[T any](v T) *T { return &v }

// Spec returns a spec with Docker's defaults running args as root in
// rootfs ("rootfs" relative to a bundle when empty).
func Spec(rootfs string, args ...string) *specs.Spec {
	if rootfs == "" {
		rootfs = "rootfs"
	}
	caps := append([]string{}, DefaultCaps...)
	allow := func(typ string, major, minor int64) specs.LinuxDeviceCgroup {
		d := specs.LinuxDeviceCgroup{Allow: true, Type: typ, Access: "rwm"}
		if major >= 0 {
			d.Major = ptr(major)
		}
		if minor >= 0 {
			d.Minor = ptr(minor)
		}
		if major < 0 {
			d.Access = "m"
		}
		return d
	}
	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: rootfs},
		Process: &specs.Process{
			Args: args,
			Env:  []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"},
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1048576, Soft: 1048576}},
		},
		Hostname: "berth-test",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"ro", "nosuid", "noexec", "nodev"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace},
			},
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{
					{Allow: false, Access: "rwm"},
					allow("c", -1, -1), allow("b", -1, -1),
					allow("c", 1, 3), allow("c", 1, 5), allow("c", 1, 7), allow("c", 1, 8), allow("c", 1, 9),
					allow("c", 5, 0), allow("c", 5, 1), allow("c", 5, 2), allow("c", 136, -1),
				},
			},
			MaskedPaths:   append([]string{}, MaskedPaths...),
			ReadonlyPaths: append([]string{}, ReadonlyPaths...),
		},
	}
}

// Busybox is the static busybox the root filesystems are made from
// (Debian's busybox-static).
const Busybox = "/bin/busybox"

// Rootfs builds a busybox root filesystem in dir: /bin/busybox with a
// link per applet, /etc/passwd and /etc/group with a user "berth"
// (1000:1000), and a marker file /berth-rootfs so tests can tell it from
// the host's root.
func Rootfs(dir string) error {
	out, err := exec.Command(Busybox, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w (apt-get install busybox-static)", err)
	}
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "root", "home/berth", "mnt"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	bb, err := os.ReadFile(Busybox)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), bb, 0o755); err != nil {
		return err
	}
	for _, name := range strings.Fields(string(out)) {
		if name == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", name)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	files := map[string]string{
		"etc/passwd":   "root:x:0:0:root:/root:/bin/sh\nberth:x:1000:1000:berth:/home/berth:/bin/sh\n",
		"etc/group":    "root:x:0:\nwheel:x:10:berth\nberth:x:1000:\n",
		"berth-rootfs": "yes\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// DockerSeccomp returns Docker's default seccomp profile as generated for
// spec (whose capabilities unlock some of its rules).
func DockerSeccomp(spec *specs.Spec) (*specs.LinuxSeccomp, error) {
	return mobyseccomp.GetDefaultProfile(spec)
}
