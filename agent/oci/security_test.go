package oci

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func TestSecurityOpts(t *testing.T) {
	s := generate(t, testInput(t, &berthv1.ContainerSpec{SecurityOpt: []string{"no-new-privileges"}}))
	if !s.Process.NoNewPrivileges || s.Linux.Seccomp == nil {
		t.Errorf("no-new-privileges: nnp %v seccomp %v", s.Process.NoNewPrivileges, s.Linux.Seccomp != nil)
	}
	s = generate(t, testInput(t, &berthv1.ContainerSpec{SecurityOpt: []string{"no-new-privileges:true", "no-new-privileges=false"}}))
	if s.Process.NoNewPrivileges {
		t.Error("no-new-privileges=false after true: the last one wins")
	}
	for _, opt := range []string{"seccomp=unconfined", "seccomp:unconfined"} {
		if s := generate(t, testInput(t, &berthv1.ContainerSpec{SecurityOpt: []string{opt}})); s.Linux.Seccomp != nil {
			t.Errorf("%s: seccomp still set", opt)
		}
	}
	s = generate(t, testInput(t, &berthv1.ContainerSpec{SecurityOpt: []string{"systempaths=unconfined", "writable-cgroups=true"}}))
	if s.Linux.MaskedPaths != nil || s.Linux.ReadonlyPaths != nil {
		t.Error("systempaths=unconfined kept masked paths")
	}
	if contains(mustMount(t, s, "/sys/fs/cgroup").Options, "ro") {
		t.Error("writable-cgroups=true left cgroup read-only")
	}

	// A custom profile, sent as JSON like Docker's CLI does.
	s = generate(t, testInput(t, &berthv1.ContainerSpec{SecurityOpt: []string{
		`seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO"}]}`,
	}}))
	if sc := s.Linux.Seccomp; sc == nil || sc.DefaultAction != specs.ActAllow || len(sc.Syscalls) != 1 {
		t.Errorf("custom profile: %+v", s.Linux.Seccomp)
	}

	for _, tc := range []struct {
		opt   string
		kind  error
		words []string
	}{
		{"bogus", errdefs.ErrInvalidArgument, []string{"security_opt[0]", "bogus"}},
		{"selinux=on", errdefs.ErrInvalidArgument, []string{"security_opt[0]", "selinux"}},
		{"no-new-privileges=maybe", errdefs.ErrInvalidArgument, []string{"security_opt[0]", "maybe"}},
		{"seccomp=/etc/profile.json", errdefs.ErrInvalidArgument, []string{"security_opt[0]", "seccomp"}},
		{"seccomp={not json", errdefs.ErrInvalidArgument, []string{"security_opt", "seccomp"}},
		{"label=type:svirt_t", errdefs.ErrNotImplemented, []string{"security_opt[0]", "SELinux"}},
	} {
		_, err := Generate(t.Context(), testInput(t, &berthv1.ContainerSpec{SecurityOpt: []string{tc.opt}}))
		wantKind(t, err, tc.kind, tc.words...)
	}
}

// The default profile allows some syscalls only with the matching
// capability: with CAP_SYS_ADMIN added, mount is allowed.
func TestSeccompFollowsCaps(t *testing.T) {
	allows := func(s *specs.Spec, name string) bool {
		for _, sc := range s.Linux.Seccomp.Syscalls {
			if sc.Action == specs.ActAllow && contains(sc.Names, name) {
				return true
			}
		}
		return false
	}
	if allows(generate(t, testInput(t, &berthv1.ContainerSpec{})), "mount") {
		t.Error("default profile allows mount without CAP_SYS_ADMIN")
	}
	if !allows(generate(t, testInput(t, &berthv1.ContainerSpec{CapAdd: []string{"SYS_ADMIN"}})), "mount") {
		t.Error("profile does not allow mount with CAP_SYS_ADMIN")
	}
}

func TestNamespaces(t *testing.T) {
	in := testInput(t, &berthv1.ContainerSpec{})
	in.NamespacePaths = map[specs.LinuxNamespaceType]string{specs.NetworkNamespace: "/run/berth/netns/abc"}
	s := generate(t, in)
	found := false
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			found = ns.Path == "/run/berth/netns/abc"
		}
	}
	if !found {
		t.Errorf("network namespace not joined: %+v", s.Linux.Namespaces)
	}

	in.Spec.Network = &berthv1.NetworkConfig{Mode: "host"}
	s = generate(t, in)
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			t.Errorf("host network has a network namespace %+v", ns)
		}
	}
	if _, ok := s.Linux.Sysctl["net.ipv4.ip_unprivileged_port_start"]; ok {
		t.Error("network sysctls set on the host's network namespace")
	}

	in = testInput(t, &berthv1.ContainerSpec{})
	in.NamespacePaths = map[specs.LinuxNamespaceType]string{specs.NetworkNamespace: "netns/abc"}
	_, err := Generate(t.Context(), in)
	wantInvalid(t, err, "network", "netns/abc")
}

func TestSysctls(t *testing.T) {
	old := sysctlExists
	sysctlExists = func(string) bool { return true }
	defer func() { sysctlExists = old }()

	s := generate(t, testInput(t, &berthv1.ContainerSpec{Sysctls: map[string]string{
		"net.ipv4.ip_unprivileged_port_start": "1024",
		"net.core.somaxconn":                  "1024",
		"kernel.shmmax":                       "68719476736",
		"fs.mqueue.msg_max":                   "64",
	}}))
	for k, v := range map[string]string{
		"net.ipv4.ip_unprivileged_port_start": "1024", // the user's wins over Docker's default
		"net.ipv4.ping_group_range":           "0 2147483647",
		"net.core.somaxconn":                  "1024",
		"kernel.shmmax":                       "68719476736",
		"fs.mqueue.msg_max":                   "64",
	} {
		if s.Linux.Sysctl[k] != v {
			t.Errorf("sysctl %s = %q, want %q", k, s.Linux.Sysctl[k], v)
		}
	}
	_, err := Generate(t.Context(), testInput(t, &berthv1.ContainerSpec{Sysctls: map[string]string{"kernel.panic": "1"}}))
	wantInvalid(t, err, "sysctls", "kernel.panic")
	_, err = Generate(t.Context(), testInput(t, &berthv1.ContainerSpec{
		Network: &berthv1.NetworkConfig{Mode: "host"},
		Sysctls: map[string]string{"net.core.somaxconn": "1"},
	}))
	wantInvalid(t, err, "sysctls", "net.core.somaxconn", "host network")
}
