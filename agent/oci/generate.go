package oci

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path"
	"regexp"
	"sync"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// InitPathInContainer is where the init binary for --init is bound.
const InitPathInContainer = "/sbin/berth-init"

// Input is everything Generate needs. ID, Spec and Rootfs are required;
// the host facts (rlimits, oom_score_adj, capabilities) are read from the
// running agent when left zero, and are fields so that tests and callers
// that already know them need not touch /proc.
type Input struct {
	// ID is the container's full ID; its first 12 characters are the
	// default hostname, and it names the cgroup.
	ID string
	// Spec is what the user asked for.
	Spec *berthv1.ContainerSpec
	// Image is the image's runtime config; nil for none.
	Image *berthv1.ImageConfig
	// Rootfs is the absolute path of the container's mounted root
	// filesystem. It becomes root.path, and /etc/passwd and /etc/group
	// are read inside it for user names.
	Rootfs string
	// CgroupParent is the cgroup the container's goes under;
	// DefaultCgroupParent when empty.
	CgroupParent string
	// NamespacePaths are namespaces to join instead of creating, such as
	// the pinned network namespace berthd set up. Ignored for network
	// when the network mode is "host", which uses the host's.
	NamespacePaths map[specs.LinuxNamespaceType]string
	// HostHardLimit returns the host's hard limit for an RLIMIT_* type;
	// nil means the agent's own (HostHardLimit).
	HostHardLimit func(rlimitType string) (uint64, error)
	// AgentOOMScoreAdj is the agent's oom_score_adj, the floor for the
	// container's; nil means read /proc/self/oom_score_adj.
	AgentOOMScoreAdj *int
	// AvailableCaps are the capabilities a container may be given; nil
	// means AgentCapabilities().
	AvailableCaps []string
	// HostDevDir is where a privileged container's devices are found;
	// "/dev" when empty.
	HostDevDir string
	// ResolveVolume maps volume mounts to host directories; nil refuses
	// volume mounts.
	ResolveVolume VolumeResolver
	// InitBinary is the host path of the init bound into containers run
	// with --init; empty refuses --init.
	InitBinary string
	// Logger gets a line for each limit Generate had to lower; nil means
	// slog.Default().
	Logger *slog.Logger
}

var idRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

// cgroupNamespaceSupported tells whether the kernel has cgroup
// namespaces (4.6+). Docker uses one on cgroup v2 hosts only; Berth uses
// one wherever the kernel can, so a container never sees the host's
// cgroup paths.
var cgroupNamespaceSupported = sync.OnceValue(func() bool {
	_, err := os.Stat("/proc/self/ns/cgroup")
	return err == nil
})

// Generate builds the OCI runtime spec for a container. Errors from bad
// user input wrap errdefs.ErrInvalidArgument and name the field at fault.
func Generate(ctx context.Context, in Input) (*specs.Spec, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !idRE.MatchString(in.ID) {
		return nil, fmt.Errorf("container id %q: must be 1-128 of [a-zA-Z0-9_.-], starting with a letter or digit: %w", in.ID, errdefs.ErrInvalidArgument)
	}
	if in.Spec == nil {
		return nil, fmt.Errorf("container %s: no container spec: %w", in.ID, errdefs.ErrInvalidArgument)
	}
	if !path.IsAbs(in.Rootfs) {
		return nil, fmt.Errorf("container %s: rootfs %q is not an absolute path: %w", in.ID, in.Rootfs, errdefs.ErrInvalidArgument)
	}
	cs := in.Spec
	img := in.Image
	if img == nil {
		img = &berthv1.ImageConfig{}
	}
	log := in.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("container", in.ID)
	sec, err := parseSecurityOpts(cs.GetSecurityOpt())
	if err != nil {
		return nil, err
	}
	hostNetwork := cs.GetNetwork().GetMode() == "host"
	// The stop signal is not part of the spec, but a bad one is refused
	// here, at create, rather than when the user first stops the container.
	if _, err := StopSignal(cs, img); err != nil {
		return nil, err
	}

	s := &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: path.Clean(in.Rootfs), Readonly: cs.GetReadOnlyRootfs()},
		Process: &specs.Process{Terminal: cs.GetTty()},
		Linux: &specs.Linux{
			MaskedPaths:   DefaultMaskedPaths(),
			ReadonlyPaths: DefaultReadonlyPaths(),
			Devices:       defaultDevices(),
			Sysctl:        map[string]string{},
		},
	}

	// Hostname: the user's, else the host's with the host network (as
	// Docker, so that the name matches the addresses the container
	// sees), else the short ID.
	s.Hostname = cs.GetHostname()
	switch {
	case s.Hostname != "":
		if err := validHostname("hostname", s.Hostname); err != nil {
			return nil, err
		}
	case hostNetwork:
		if s.Hostname, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("container %s: host network: read host name: %w", in.ID, err)
		}
	default:
		s.Hostname = in.ID
		if len(s.Hostname) > 12 {
			s.Hostname = s.Hostname[:12]
		}
	}
	if d := cs.GetDomainname(); d != "" {
		if err := validHostname("domainname", d); err != nil {
			return nil, err
		}
		s.Domainname = d
	}

	// Process: args, env, cwd, user.
	if s.Process.Args, err = mergeArgs(cs.GetEntrypoint(), cs.GetCmd(), img.GetEntrypoint(), img.GetCmd()); err != nil {
		return nil, err
	}
	if cs.GetInit() {
		if in.InitBinary == "" {
			return nil, fmt.Errorf("init: this agent has no init binary configured (start berthd with one, or drop --init): %w", errdefs.ErrFailedPrecondition)
		}
		s.Process.Args = append([]string{InitPathInContainer, "--"}, s.Process.Args...)
	}
	if s.Process.Env, err = mergeEnv(cs.GetEnv(), img.GetEnv(), s.Hostname, cs.GetTty()); err != nil {
		return nil, err
	}
	if s.Process.Cwd, err = workingDir(cs.GetWorkingDir(), img.GetWorkingDir()); err != nil {
		return nil, err
	}
	userSpec := cs.GetUser()
	if userSpec == "" {
		userSpec = img.GetUser()
	}
	u, err := resolveUser(in.Rootfs, userSpec, cs.GetGroupAdd())
	if err != nil {
		return nil, err
	}
	// Umask 0022 is what runc applies when none is given; berth-shim
	// applies what the spec says, so it is written out.
	umask := uint32(0o022)
	s.Process.User = specs.User{UID: u.uid, GID: u.gid, AdditionalGids: u.additional, Umask: &umask}
	s.Process.NoNewPrivileges = sec.noNewPrivileges
	if sec.apparmor != "" && sec.apparmor != "unconfined" {
		s.Process.ApparmorProfile = sec.apparmor
	}

	// Capabilities, as Docker today: the set goes in bounding; root also
	// gets it effective and permitted; a non-root user gets none there,
	// as execve would leave it. Inheritable and ambient stay empty (Docker
	// dropped inheritable in 20.10.14, CVE-2022-24769).
	available := in.AvailableCaps
	if available == nil {
		available = AgentCapabilities()
	}
	caps, err := capabilitySet(cs.GetCapAdd(), cs.GetCapDrop(), cs.GetPrivileged(), available)
	if err != nil {
		return nil, err
	}
	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps}
	if u.uid == 0 {
		s.Process.Capabilities.Effective = caps
		s.Process.Capabilities.Permitted = caps
	}

	// Rlimits and OOM score.
	hard := in.HostHardLimit
	if hard == nil {
		hard = HostHardLimit
	}
	if s.Process.Rlimits, err = rlimits(cs.GetUlimits(), hard, func(typ string, asked, got uint64) {
		log.Debug("rlimit lowered to the host's hard limit", "rlimit", typ, "asked", asked, "set", got)
	}); err != nil {
		return nil, err
	}
	oom := int(cs.GetResources().GetOomScoreAdj())
	if oom < -1000 || oom > 1000 {
		return nil, fmt.Errorf("resources.oom_score_adj: %d is outside -1000..1000: %w", oom, errdefs.ErrInvalidArgument)
	}
	floor := 0
	if in.AgentOOMScoreAdj != nil {
		floor = *in.AgentOOMScoreAdj
	} else if floor, err = AgentOOMScoreAdj(); err != nil {
		return nil, fmt.Errorf("container %s: %w", in.ID, err)
	}
	if oom < floor {
		// Lowering below the agent's own needs CAP_SYS_RESOURCE; the
		// write would fail at start, so the container gets the floor.
		log.Debug("oom_score_adj raised to the agent's own", "asked", oom, "set", floor)
		oom = floor
	}
	s.Process.OOMScoreAdj = &oom

	// Namespaces: Docker's set and order, cgroup added where the kernel
	// has it, joined where a path is given.
	nsTypes := []specs.LinuxNamespaceType{specs.MountNamespace, specs.NetworkNamespace, specs.UTSNamespace, specs.PIDNamespace, specs.IPCNamespace}
	if cgroupNamespaceSupported() {
		nsTypes = append(nsTypes, specs.CgroupNamespace)
	}
	for t, p := range in.NamespacePaths {
		if !path.IsAbs(p) {
			return nil, fmt.Errorf("container %s: %s namespace path %q is not absolute: %w", in.ID, t, p, errdefs.ErrInvalidArgument)
		}
		known := false
		for _, have := range nsTypes {
			known = known || have == t
		}
		if !known {
			switch t {
			case specs.UserNamespace, specs.TimeNamespace, specs.CgroupNamespace:
				nsTypes = append(nsTypes, t)
			default:
				return nil, fmt.Errorf("container %s: unknown namespace type %q: %w", in.ID, t, errdefs.ErrInvalidArgument)
			}
		}
	}
	for _, t := range nsTypes {
		if t == specs.NetworkNamespace && hostNetwork {
			continue
		}
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: t, Path: in.NamespacePaths[t]})
	}

	// Cgroup and resources.
	parent := in.CgroupParent
	if parent == "" {
		parent = DefaultCgroupParent
	}
	if !path.IsAbs(parent) {
		return nil, fmt.Errorf("cgroup parent %q: must be an absolute cgroup path like /berth: %w", parent, errdefs.ErrInvalidArgument)
	}
	s.Linux.CgroupsPath = path.Join(path.Clean(parent), in.ID)
	if s.Linux.Resources, err = resources(cs.GetResources(), numCPU()); err != nil {
		return nil, err
	}
	if cs.GetPrivileged() {
		if s.Linux.Devices, err = hostDevices(in.HostDevDir); err != nil {
			return nil, fmt.Errorf("container %s: privileged: list host devices: %w", in.ID, err)
		}
		s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	} else {
		s.Linux.Resources.Devices = defaultDeviceRules()
	}

	// Sysctls: Docker's two network defaults in a private network
	// namespace (ping without CAP_NET_RAW, ports below 1024 without
	// CAP_NET_BIND_SERVICE), then the user's, which win.
	if !hostNetwork {
		if sysctlExists("net.ipv4.ping_group_range") {
			s.Linux.Sysctl["net.ipv4.ping_group_range"] = "0 2147483647"
		}
		if sysctlExists("net.ipv4.ip_unprivileged_port_start") {
			s.Linux.Sysctl["net.ipv4.ip_unprivileged_port_start"] = "0"
		}
	}
	for k, v := range cs.GetSysctls() {
		if err := checkSysctl(k, hostNetwork); err != nil {
			return nil, err
		}
		s.Linux.Sysctl[k] = v
	}
	if len(s.Linux.Sysctl) == 0 {
		s.Linux.Sysctl = nil
	}

	// Mounts.
	if s.Mounts, err = mounts(ctx, in, cs, sec); err != nil {
		return nil, err
	}
	if prop := rootPropagationFor(s.Mounts); prop != "" {
		s.Linux.RootfsPropagation = prop
	}

	if cs.GetPrivileged() || sec.unmaskPaths {
		s.Linux.MaskedPaths = nil
		s.Linux.ReadonlyPaths = nil
	}

	// Seccomp last: the default profile allows some syscalls only when
	// the matching capability is in the bounding set.
	if !cs.GetPrivileged() && sec.seccomp != "unconfined" {
		if sec.seccomp != "" {
			s.Linux.Seccomp, err = seccomp.LoadProfile(sec.seccomp, s)
			if err != nil {
				return nil, fmt.Errorf("security_opt: seccomp profile: %v: %w", err, errdefs.ErrInvalidArgument)
			}
		} else if s.Linux.Seccomp, err = seccomp.GetDefaultProfile(s); err != nil {
			return nil, fmt.Errorf("container %s: default seccomp profile: %w", in.ID, err)
		}
	}
	return s, nil
}

// mounts returns Docker's default mounts, less those a user mount
// replaces, adjusted for shm_size, read-only rootfs and privilege, then
// the user's mounts and the init binary.
func mounts(ctx context.Context, in Input, cs *berthv1.ContainerSpec, sec securityOpts) ([]specs.Mount, error) {
	user, err := userMounts(ctx, cs.GetMounts(), in.ResolveVolume)
	if err != nil {
		return nil, err
	}
	shm := DefaultShmSize
	if v := cs.GetShmSize(); v != "" {
		if shm, err = parseSize("shm_size", v); err != nil {
			return nil, err
		}
		if shm <= 0 {
			return nil, fmt.Errorf("shm_size: %q must be above 0: %w", v, errdefs.ErrInvalidArgument)
		}
	}
	replaced := make(map[string]bool, len(user))
	for _, m := range user {
		replaced[m.Destination] = true
	}
	out := make([]specs.Mount, 0, 8+len(user))
	for _, m := range defaultMounts() {
		if replaced[m.Destination] || (replaced["/dev"] && len(m.Destination) > 5 && m.Destination[:5] == "/dev/") {
			continue
		}
		switch m.Destination {
		case "/dev/shm":
			m.Options = append(m.Options, fmt.Sprintf("size=%d", shm))
		case "/sys":
			if cs.GetPrivileged() {
				m.Options = removeOption(m.Options, func(o string) bool { return o == "ro" })
			}
		case "/sys/fs/cgroup":
			if cs.GetPrivileged() || sec.writableCgroups {
				m.Options = removeOption(m.Options, func(o string) bool { return o == "ro" })
			}
		}
		if cs.GetReadOnlyRootfs() {
			// Docker's rule: with a read-only root the default mounts are
			// read-only too, except those that must be written to.
			switch m.Destination {
			case "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue":
			default:
				if !contains(m.Options, "ro") {
					m.Options = append(m.Options, "ro")
				}
			}
		}
		out = append(out, m)
	}
	out = append(out, user...)
	if cs.GetInit() {
		out = append(out, specs.Mount{Destination: InitPathInContainer, Type: "bind", Source: in.InitBinary, Options: []string{"bind", "ro"}})
	}
	return out, nil
}

// rootPropagationFor returns rshared or rslave when a bind mount needs
// the rootfs to propagate that way, or mount events never reach the
// container (moby WithMounts does the same), else "".
func rootPropagationFor(ms []specs.Mount) string {
	prop := ""
	for _, m := range ms {
		if m.Type != "bind" {
			continue
		}
		for _, o := range m.Options {
			switch o {
			case "shared", "rshared":
				return "rshared"
			case "slave", "rslave":
				prop = "rslave"
			}
		}
	}
	return prop
}
