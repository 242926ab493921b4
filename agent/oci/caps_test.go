package oci

import (
	"slices"
	"testing"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func without(list []string, drop ...string) []string {
	var out []string
	for _, c := range list {
		if !slices.Contains(drop, c) {
			out = append(out, c)
		}
	}
	return out
}

func TestCapAddDrop(t *testing.T) {
	def := DefaultCapabilities()
	all := KnownCapabilities()
	for _, tc := range []struct {
		name      string
		add, drop []string
		want      []string
	}{
		{"none", nil, nil, def},
		{"add short name", []string{"NET_ADMIN"}, nil, append(DefaultCapabilities(), "CAP_NET_ADMIN")},
		{"add lower case with prefix", []string{"cap_sys_admin"}, nil, append(DefaultCapabilities(), "CAP_SYS_ADMIN")},
		{"add a default is not duplicated", []string{"CHOWN"}, nil, def},
		{"drop", nil, []string{"chown", "CAP_NET_RAW"}, without(def, "CAP_CHOWN", "CAP_NET_RAW")},
		{"drop and add", []string{"SYS_PTRACE"}, []string{"MKNOD"}, append(without(def, "CAP_MKNOD"), "CAP_SYS_PTRACE")},
		{"add ALL", []string{"ALL"}, nil, all},
		{"add all lower case, drop one", []string{"all"}, []string{"NET_RAW"}, without(all, "CAP_NET_RAW")},
		{"drop ALL", nil, []string{"ALL"}, []string{}},
		{"drop ALL, add one", []string{"NET_BIND_SERVICE"}, []string{"ALL"}, []string{"CAP_NET_BIND_SERVICE"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := generate(t, testInput(t, &berthv1.ContainerSpec{CapAdd: tc.add, CapDrop: tc.drop}))
			c := s.Process.Capabilities
			equal(t, "bounding", c.Bounding, tc.want)
			equal(t, "effective", c.Effective, tc.want)
			equal(t, "permitted", c.Permitted, tc.want)
			if len(c.Inheritable)+len(c.Ambient) != 0 {
				t.Errorf("inheritable %v ambient %v, want none", c.Inheritable, c.Ambient)
			}
		})
	}
}

// A non-root user keeps the bounding set only, as after execve.
func TestCapsNonRoot(t *testing.T) {
	s := generate(t, testInput(t, &berthv1.ContainerSpec{User: "1000", CapAdd: []string{"NET_ADMIN"}}))
	c := s.Process.Capabilities
	equal(t, "bounding", c.Bounding, append(DefaultCapabilities(), "CAP_NET_ADMIN"))
	if len(c.Effective)+len(c.Permitted)+len(c.Inheritable)+len(c.Ambient) != 0 {
		t.Errorf("non-root caps %+v, want bounding only", c)
	}
}

func TestCapErrors(t *testing.T) {
	_, err := Generate(t.Context(), testInput(t, &berthv1.ContainerSpec{CapAdd: []string{"NET_ADMIN", "FOO"}}))
	wantInvalid(t, err, "cap_add", "CAP_FOO")
	_, err = Generate(t.Context(), testInput(t, &berthv1.ContainerSpec{CapDrop: []string{"CAP_BOGUS"}}))
	wantInvalid(t, err, "cap_drop", "CAP_BOGUS")

	// A capability the agent lacks cannot be granted (this VM's berthd
	// has no CAP_SYS_RESOURCE): refused at create, not EPERM at start.
	in := testInput(t, &berthv1.ContainerSpec{CapAdd: []string{"SYS_RESOURCE"}})
	in.AvailableCaps = without(KnownCapabilities(), "CAP_SYS_RESOURCE")
	_, err = Generate(t.Context(), in)
	wantInvalid(t, err, "cap_add", "CAP_SYS_RESOURCE")
	if !errdefs.IsInvalidArgument(err) {
		t.Fatal(err)
	}
}

func TestPrivileged(t *testing.T) {
	in := testInput(t, &berthv1.ContainerSpec{Privileged: true, CapDrop: []string{"ALL"}})
	in.AvailableCaps = without(KnownCapabilities(), "CAP_SYS_RESOURCE")
	s := generate(t, in)
	c := s.Process.Capabilities
	equal(t, "bounding", c.Bounding, in.AvailableCaps)
	equal(t, "effective", c.Effective, in.AvailableCaps)
	if s.Linux.MaskedPaths != nil || s.Linux.ReadonlyPaths != nil {
		t.Errorf("masked %v readonly %v, want none", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	if s.Linux.Seccomp != nil {
		t.Error("privileged container has a seccomp profile")
	}
	rules := s.Linux.Resources.Devices
	if len(rules) != 1 || !rules[0].Allow || rules[0].Access != "rwm" || rules[0].Type != "" || rules[0].Major != nil {
		t.Errorf("device rules %+v, want allow all", rules)
	}
	for _, dst := range []string{"/sys", "/sys/fs/cgroup"} {
		if slices.Contains(mustMount(t, s, dst).Options, "ro") {
			t.Errorf("%s is read-only in a privileged container", dst)
		}
	}
	found := false
	for _, d := range s.Linux.Devices {
		if d.Path == "/dev/null" && d.Type == "c" && d.Major == 1 && d.Minor == 3 {
			found = true
		}
		if d.Path == "/dev/console" || len(d.Path) > 9 && d.Path[:9] == "/dev/pts/" {
			t.Errorf("host device %s must not be passed", d.Path)
		}
	}
	if !found {
		t.Errorf("host /dev/null not among the devices %+v", s.Linux.Devices)
	}
}

// AgentCapabilities reads the agent's effective set: on this VM root
// lacks CAP_SYS_RESOURCE, elsewhere it may have everything; either way
// the defaults are held by a root agent.
func TestAgentCapabilities(t *testing.T) {
	caps := AgentCapabilities()
	if len(caps) == 0 {
		t.Skip("agent has no capabilities (not root)")
	}
	for _, c := range caps {
		if !isKnownCap(c) {
			t.Errorf("unknown capability %s", c)
		}
	}
}
