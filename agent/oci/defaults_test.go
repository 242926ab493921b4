package oci

import (
	"encoding/json"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// TestDefaults checks, field by field, the spec of `run IMAGE` with no
// options against Docker's.
func TestDefaults(t *testing.T) {
	old := sysctlExists
	sysctlExists = func(string) bool { return true }
	defer func() { sysctlExists = old }()

	in := testInput(t, &berthv1.ContainerSpec{})
	s := generate(t, in)

	if s.Version != specs.Version {
		t.Errorf("ociVersion %q, want %q", s.Version, specs.Version)
	}
	if s.Root.Path != in.Rootfs || s.Root.Readonly {
		t.Errorf("root %+v, want path %s read-write", s.Root, in.Rootfs)
	}
	if s.Hostname != testID[:12] {
		t.Errorf("hostname %q, want the short ID %q", s.Hostname, testID[:12])
	}

	p := s.Process
	equal(t, "args", p.Args, []string{"/bin/sh"})
	equal(t, "env", p.Env, []string{"PATH=" + DefaultPath, "HOSTNAME=" + testID[:12]})
	if p.Cwd != "/" || p.Terminal || p.NoNewPrivileges {
		t.Errorf("cwd %q terminal %v noNewPrivileges %v, want / false false", p.Cwd, p.Terminal, p.NoNewPrivileges)
	}
	if p.User.UID != 0 || p.User.GID != 0 {
		t.Errorf("user %+v, want root", p.User)
	}
	equal(t, "additional gids", p.User.AdditionalGids, []uint32{0})
	if p.User.Umask == nil || *p.User.Umask != 0o022 {
		t.Errorf("umask %v, want 0022", p.User.Umask)
	}
	if p.OOMScoreAdj == nil || *p.OOMScoreAdj != 0 {
		t.Errorf("oomScoreAdj %v, want 0", p.OOMScoreAdj)
	}

	caps := DefaultCapabilities()
	equal(t, "bounding", p.Capabilities.Bounding, caps)
	equal(t, "effective", p.Capabilities.Effective, caps)
	equal(t, "permitted", p.Capabilities.Permitted, caps)
	if len(p.Capabilities.Inheritable) != 0 || len(p.Capabilities.Ambient) != 0 {
		t.Errorf("inheritable %v ambient %v, want none (Docker >= 20.10.14)", p.Capabilities.Inheritable, p.Capabilities.Ambient)
	}
	equal(t, "rlimits", p.Rlimits, []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 1048576, Hard: 1048576}})

	equal(t, "masked paths", s.Linux.MaskedPaths, []string{
		"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	})
	equal(t, "readonly paths", s.Linux.ReadonlyPaths, []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"})

	wantMounts := []struct {
		dst, typ, src string
		opts          []string
	}{
		{"/proc", "proc", "proc", []string{"nosuid", "noexec", "nodev"}},
		{"/dev", "tmpfs", "tmpfs", []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{"/dev/pts", "devpts", "devpts", []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{"/sys", "sysfs", "sysfs", []string{"nosuid", "noexec", "nodev", "ro"}},
		{"/sys/fs/cgroup", "cgroup", "cgroup", []string{"ro", "nosuid", "noexec", "nodev"}},
		{"/dev/mqueue", "mqueue", "mqueue", []string{"nosuid", "noexec", "nodev"}},
		{"/dev/shm", "tmpfs", "shm", []string{"nosuid", "noexec", "nodev", "mode=1777", "size=67108864"}},
	}
	if len(s.Mounts) != len(wantMounts) {
		t.Fatalf("%d mounts, want %d: %+v", len(s.Mounts), len(wantMounts), s.Mounts)
	}
	for i, w := range wantMounts {
		m := s.Mounts[i]
		if m.Destination != w.dst || m.Type != w.typ || m.Source != w.src {
			t.Errorf("mount %d: %s %s %s, want %s %s %s", i, m.Destination, m.Type, m.Source, w.dst, w.typ, w.src)
		}
		equal(t, "options of "+w.dst, m.Options, w.opts)
	}

	var nsTypes []specs.LinuxNamespaceType
	for _, ns := range s.Linux.Namespaces {
		if ns.Path != "" {
			t.Errorf("namespace %s joins %s, want a new one", ns.Type, ns.Path)
		}
		nsTypes = append(nsTypes, ns.Type)
	}
	want := []specs.LinuxNamespaceType{"mount", "network", "uts", "pid", "ipc"}
	if cgroupNamespaceSupported() {
		want = append(want, "cgroup")
	}
	equal(t, "namespaces", nsTypes, want)

	if s.Linux.CgroupsPath != "/berth/"+testID {
		t.Errorf("cgroupsPath %q", s.Linux.CgroupsPath)
	}
	if s.Linux.Sysctl["net.ipv4.ip_unprivileged_port_start"] != "0" || s.Linux.Sysctl["net.ipv4.ping_group_range"] != "0 2147483647" {
		t.Errorf("sysctls %v, want Docker's two network defaults", s.Linux.Sysctl)
	}

	// Device rules: deny all first, then the standard nodes.
	rules := s.Linux.Resources.Devices
	if len(rules) == 0 || rules[0].Allow || rules[0].Access != "rwm" || rules[0].Type != "" {
		t.Fatalf("first device rule %+v, want deny all", rules)
	}
	allowed := map[[2]int64]bool{}
	for _, r := range rules[1:] {
		if !r.Allow {
			t.Errorf("unexpected deny rule %+v", r)
		}
		if r.Major != nil && r.Access == "rwm" && r.Type == "c" {
			minor := int64(-1)
			if r.Minor != nil {
				minor = *r.Minor
			}
			allowed[[2]int64{*r.Major, minor}] = true
		}
	}
	for name, mm := range map[string][2]int64{
		"null": {1, 3}, "zero": {1, 5}, "full": {1, 7}, "random": {1, 8}, "urandom": {1, 9},
		"tty": {5, 0}, "console": {5, 1}, "ptmx": {5, 2}, "pts/*": {136, -1},
	} {
		if !allowed[mm] {
			t.Errorf("device rules do not allow %s (c %d:%d rwm)", name, mm[0], mm[1])
		}
	}
	var devs []string
	for _, d := range s.Linux.Devices {
		devs = append(devs, d.Path)
	}
	equal(t, "devices", devs, []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"})

	if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != specs.ActErrno || len(s.Linux.Seccomp.Syscalls) < 10 {
		t.Fatalf("seccomp %+v, want Docker's default profile", s.Linux.Seccomp)
	}
	if r := s.Linux.Resources; r.Memory != nil || r.CPU != nil || r.Pids != nil || r.BlockIO != nil {
		t.Errorf("resources %+v, want no limits", r)
	}
}

func TestCgroupParent(t *testing.T) {
	in := testInput(t, &berthv1.ContainerSpec{})
	in.CgroupParent = "/tenants/a/"
	if s := generate(t, in); s.Linux.CgroupsPath != "/tenants/a/"+testID {
		t.Errorf("cgroupsPath %q", s.Linux.CgroupsPath)
	}
	in.CgroupParent = "tenants"
	_, err := Generate(t.Context(), in)
	wantInvalid(t, err, "cgroup parent", "tenants")
}

func TestBadID(t *testing.T) {
	for _, id := range []string{"", "../x", "a/b", "-x"} {
		in := testInput(t, &berthv1.ContainerSpec{})
		in.ID = id
		_, err := Generate(t.Context(), in)
		wantInvalid(t, err, "container id")
	}
}

// DefaultResources is what a container created without resource options
// gets: warm shims make their cgroups ahead with it, and a difference
// would cost every such container a rewrite of its group at start.
func TestDefaultResourcesAreThoseOfAPlainContainer(t *testing.T) {
	s := generate(t, testInput(t, &berthv1.ContainerSpec{}))
	got, err := json.Marshal(s.Linux.Resources)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(DefaultResources())
	if string(got) != string(want) {
		t.Errorf("a plain container's resources\n%s\nDefaultResources\n%s", got, want)
	}
}
