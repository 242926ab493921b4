package ctl

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/docker/go-units"
	"github.com/spf13/pflag"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// createFlags are the flags of `run` and `create`, Docker's names and meanings.
type createFlags struct {
	name, workdir, user, entrypoint, hostname, restart, pull, platform string
	network, memory, memorySwap, shmSize, stopSignal, cpusetCpus       string
	env, envFile, volumes, tmpfs, capAdd, capDrop, labels, publish     []string
	dns, dnsSearch, addHost, securityOpt, groupAdd, ulimits, sysctls   []string
	dnsOption, networkAlias                                            []string
	tty, interactive, readOnly, privileged, rm, init                   bool
	cpus                                                               float64
	pidsLimit, cpuShares                                               int64
	stopTimeout                                                        int
}

func (f *createFlags) register(fs *pflag.FlagSet) {
	fs.SetInterspersed(false) // everything after the image belongs to the container
	// -h is --hostname here, as in Docker; cobra would otherwise claim it
	// for --help.
	fs.Bool("help", false, "print usage")
	fs.StringVar(&f.name, "name", "", "assign a name to the container")
	fs.BoolVarP(&f.tty, "tty", "t", false, "allocate a pseudo-TTY")
	fs.BoolVarP(&f.interactive, "interactive", "i", false, "keep STDIN open even if not attached")
	fs.BoolVar(&f.rm, "rm", false, "automatically remove the container when it exits")
	fs.StringArrayVarP(&f.env, "env", "e", nil, "set environment variables (K=V, or K to take it from this shell)")
	fs.StringArrayVar(&f.envFile, "env-file", nil, "read environment variables from a file")
	fs.StringArrayVarP(&f.volumes, "volume", "v", nil, "bind mount a volume (HOST:CONTAINER[:ro])")
	fs.StringArrayVar(&f.tmpfs, "tmpfs", nil, "mount a tmpfs directory (/path[:options])")
	fs.StringVarP(&f.workdir, "workdir", "w", "", "working directory inside the container")
	fs.StringVarP(&f.user, "user", "u", "", "username or UID (format: <name|uid>[:<group|gid>])")
	fs.StringVar(&f.entrypoint, "entrypoint", "", "overwrite the default ENTRYPOINT of the image")
	fs.StringVarP(&f.hostname, "hostname", "h", "", "container host name")
	fs.BoolVar(&f.readOnly, "read-only", false, "mount the container's root filesystem as read only")
	fs.StringVarP(&f.memory, "memory", "m", "", "memory limit (e.g. 32m, 1g)")
	fs.StringVar(&f.memorySwap, "memory-swap", "", "memory plus swap limit; -1 for unlimited swap")
	fs.Float64Var(&f.cpus, "cpus", 0, "number of CPUs (e.g. 0.5)")
	fs.Int64Var(&f.cpuShares, "cpu-shares", 0, "CPU shares (relative weight)")
	fs.StringVar(&f.cpusetCpus, "cpuset-cpus", "", "CPUs in which to allow execution (0-3, 0,1)")
	fs.Int64Var(&f.pidsLimit, "pids-limit", 0, "tune container pids limit (-1 for unlimited)")
	fs.StringArrayVar(&f.capAdd, "cap-add", nil, "add Linux capabilities")
	fs.StringArrayVar(&f.capDrop, "cap-drop", nil, "drop Linux capabilities")
	fs.BoolVar(&f.privileged, "privileged", false, "give extended privileges to this container")
	fs.StringArrayVarP(&f.labels, "label", "l", nil, "set metadata on a container (key=value)")
	fs.StringVar(&f.restart, "restart", "no", "restart policy: no, on-failure[:max-retries], always, unless-stopped")
	fs.StringVar(&f.pull, "pull", "missing", `pull image before running ("always", "missing", "never")`)
	fs.StringVar(&f.platform, "platform", "", "set platform if server is multi-platform capable (os/arch[/variant])")
	fs.StringArrayVarP(&f.publish, "publish", "p", nil, "publish a container's port(s) to the host ([ip:][hostPort:]containerPort[/proto])")
	fs.StringVar(&f.network, "network", "", "connect a container to a network (none, host, bridge, or a network name)")
	fs.StringArrayVar(&f.dns, "dns", nil, "set custom DNS servers")
	fs.StringArrayVar(&f.dnsSearch, "dns-search", nil, "set custom DNS search domains")
	fs.StringArrayVar(&f.dnsOption, "dns-option", nil, "set DNS options (resolv.conf 'options' entries)")
	fs.StringArrayVar(&f.networkAlias, "network-alias", nil, "add a network-scoped alias for the container")
	fs.StringArrayVar(&f.addHost, "add-host", nil, "add a custom host-to-IP mapping (host:ip)")
	fs.StringArrayVar(&f.securityOpt, "security-opt", nil, "security options")
	fs.StringArrayVar(&f.groupAdd, "group-add", nil, "add additional groups to join")
	fs.StringArrayVar(&f.ulimits, "ulimit", nil, "ulimit options (name=soft[:hard])")
	fs.StringArrayVar(&f.sysctls, "sysctl", nil, "sysctl options (key=value)")
	fs.StringVar(&f.shmSize, "shm-size", "", "size of /dev/shm (e.g. 64m)")
	fs.StringVar(&f.stopSignal, "stop-signal", "", "signal to stop the container")
	fs.IntVar(&f.stopTimeout, "stop-timeout", 0, "timeout (in seconds) to stop a container")
	fs.BoolVar(&f.init, "init", false, "run an init inside the container that forwards signals and reaps processes")
}

// spec turns the flags, the image and the command into a ContainerSpec.
// Every malformed value is a usage error naming the flag.
func (f *createFlags) spec(fs *pflag.FlagSet, image string, cmd []string) (*berthv1.ContainerSpec, map[string]string, error) {
	s := &berthv1.ContainerSpec{
		Image:          image,
		Cmd:            cmd,
		WorkingDir:     f.workdir,
		User:           f.user,
		GroupAdd:       f.groupAdd,
		Tty:            f.tty,
		OpenStdin:      f.interactive,
		StdinOnce:      f.interactive,
		Hostname:       f.hostname,
		CapAdd:         f.capAdd,
		CapDrop:        f.capDrop,
		Privileged:     f.privileged,
		ReadOnlyRootfs: f.readOnly,
		AutoRemove:     f.rm,
		SecurityOpt:    f.securityOpt,
		StopSignal:     f.stopSignal,
		Init:           f.init,
		ShmSize:        f.shmSize,
	}
	if fs.Changed("entrypoint") {
		// --entrypoint "" clears the image's entrypoint, as in Docker.
		s.Entrypoint = []string{f.entrypoint}
	}
	if fs.Changed("stop-timeout") {
		s.StopTimeoutSeconds = int32(f.stopTimeout)
	}
	env, err := f.environment()
	if err != nil {
		return nil, nil, err
	}
	s.Env = env
	labels, err := parseLabels(f.labels)
	if err != nil {
		return nil, nil, err
	}
	for _, v := range f.volumes {
		m, err := parseVolume(v)
		if err != nil {
			return nil, nil, err
		}
		s.Mounts = append(s.Mounts, m)
	}
	for _, t := range f.tmpfs {
		dst, opts, _ := strings.Cut(t, ":")
		if !strings.HasPrefix(dst, "/") {
			return nil, nil, usageError{fmt.Errorf("invalid --tmpfs %q: the container path must be absolute", t)}
		}
		m := &berthv1.Mount{Type: "tmpfs", Source: "tmpfs", Destination: dst}
		if opts != "" {
			m.Options = strings.Split(opts, ",")
		}
		s.Mounts = append(s.Mounts, m)
	}
	if s.Resources, err = f.resources(fs); err != nil {
		return nil, nil, err
	}
	if s.RestartPolicy, err = parseRestart(f.restart); err != nil {
		return nil, nil, err
	}
	if f.rm && s.RestartPolicy.Name != "no" {
		return nil, nil, usageError{fmt.Errorf("conflicting options: --restart and --rm")}
	}
	if f.platform != "" {
		p, err := parsePlatform(f.platform)
		if err != nil {
			return nil, nil, err
		}
		s.Platform = p
	}
	net := &berthv1.NetworkConfig{Mode: f.network, Dns: f.dns, DnsSearch: f.dnsSearch, DnsOptions: f.dnsOption,
		ExtraHosts: f.addHost, Aliases: f.networkAlias}
	for _, p := range f.publish {
		pm, err := parsePublish(p)
		if err != nil {
			return nil, nil, err
		}
		net.Ports = append(net.Ports, pm)
	}
	for _, h := range f.addHost {
		if host, ip, ok := strings.Cut(h, ":"); !ok || host == "" || ip == "" {
			return nil, nil, usageError{fmt.Errorf("invalid --add-host %q: want host:ip", h)}
		}
	}
	s.Network = net
	for _, u := range f.ulimits {
		ul, err := parseUlimit(u)
		if err != nil {
			return nil, nil, err
		}
		s.Ulimits = append(s.Ulimits, ul)
	}
	if len(f.sysctls) > 0 {
		s.Sysctls = map[string]string{}
		for _, kv := range f.sysctls {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, nil, usageError{fmt.Errorf("invalid --sysctl %q: want key=value", kv)}
			}
			s.Sysctls[k] = v
		}
	}
	return s, labels, nil
}

func (f *createFlags) environment() ([]string, error) {
	var env []string
	for _, file := range f.envFile {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, usageError{fmt.Errorf("--env-file: %v", err)}
		}
		sc := bufio.NewScanner(strings.NewReader(string(data)))
		for line := 1; sc.Scan(); line++ {
			l := strings.TrimSpace(sc.Text())
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			e, err := envEntry(l)
			if err != nil {
				return nil, usageError{fmt.Errorf("--env-file %s line %d: %v", file, line, err)}
			}
			if e != "" {
				env = append(env, e)
			}
		}
	}
	for _, e := range f.env {
		v, err := envEntry(e)
		if err != nil {
			return nil, usageError{fmt.Errorf("-e %q: %v", e, err)}
		}
		if v != "" {
			env = append(env, v)
		}
	}
	return env, nil
}

// envEntry is K=V as given, or K alone taken from this shell (dropped when
// unset there), as Docker does.
func envEntry(e string) (string, error) {
	k, _, hasValue := strings.Cut(e, "=")
	if k == "" || strings.ContainsAny(k, " \t") {
		return "", fmt.Errorf("invalid environment variable name %q", k)
	}
	if hasValue {
		return e, nil
	}
	if v, ok := os.LookupEnv(k); ok {
		return k + "=" + v, nil
	}
	return "", nil
}

func (f *createFlags) resources(fs *pflag.FlagSet) (*berthv1.Resources, error) {
	r := &berthv1.Resources{CpuShares: uint64(max(f.cpuShares, 0)), CpusetCpus: f.cpusetCpus}
	if f.memory != "" {
		n, err := units.RAMInBytes(f.memory)
		if err != nil || n <= 0 {
			return nil, usageError{fmt.Errorf("invalid --memory %q: want a size such as 32m or 1g", f.memory)}
		}
		if n < 6*1024*1024 {
			return nil, usageError{fmt.Errorf("invalid --memory %q: the minimum memory limit is 6MB", f.memory)}
		}
		r.MemoryBytes = n
	}
	if f.memorySwap != "" {
		if f.memorySwap == "-1" {
			r.MemorySwapBytes = -1
		} else {
			n, err := units.RAMInBytes(f.memorySwap)
			if err != nil || n <= 0 {
				return nil, usageError{fmt.Errorf("invalid --memory-swap %q", f.memorySwap)}
			}
			r.MemorySwapBytes = n
		}
	}
	if fs.Changed("cpus") {
		if f.cpus <= 0 || math.IsNaN(f.cpus) || math.IsInf(f.cpus, 0) {
			return nil, usageError{fmt.Errorf("invalid --cpus %v: want a positive number such as 0.5", f.cpus)}
		}
		r.NanoCpus = int64(f.cpus * 1e9)
	}
	if fs.Changed("pids-limit") {
		r.PidsLimit = f.pidsLimit
	}
	return r, nil
}

func parseVolume(v string) (*berthv1.Mount, error) {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return nil, usageError{fmt.Errorf("invalid -v %q: want HOST:CONTAINER[:ro]", v)}
	}
	m := &berthv1.Mount{Type: "bind", Source: parts[0], Destination: parts[1]}
	if !filepath.IsAbs(parts[0]) {
		if strings.HasPrefix(parts[0], ".") {
			abs, err := filepath.Abs(parts[0])
			if err != nil {
				return nil, err
			}
			m.Source = abs
		} else {
			m.Type = "volume"
		}
	}
	if !strings.HasPrefix(parts[1], "/") {
		return nil, usageError{fmt.Errorf("invalid -v %q: the container path must be absolute", v)}
	}
	if len(parts) == 3 {
		for _, o := range strings.Split(parts[2], ",") {
			switch o {
			case "ro":
				m.ReadOnly = true
			case "rw":
			case "z", "Z", "shared", "rshared", "slave", "rslave", "private", "rprivate":
				m.Options = append(m.Options, o)
			default:
				return nil, usageError{fmt.Errorf("invalid -v %q: unknown option %q", v, o)}
			}
		}
	}
	return m, nil
}

func parseRestart(s string) (*berthv1.RestartPolicy, error) {
	name, n, hasN := strings.Cut(s, ":")
	p := &berthv1.RestartPolicy{Name: name}
	switch name {
	case "", "no":
		p.Name = "no"
	case "always", "unless-stopped":
	case "on-failure":
		if hasN {
			v, err := strconv.Atoi(n)
			if err != nil || v < 0 {
				return nil, usageError{fmt.Errorf("invalid --restart %q: max-retries must be a non-negative number", s)}
			}
			p.MaxRetries = int32(v)
		}
		return p, nil
	default:
		return nil, usageError{fmt.Errorf("invalid --restart %q: use no, on-failure[:max-retries], always or unless-stopped", s)}
	}
	if hasN {
		return nil, usageError{fmt.Errorf("invalid --restart %q: max-retries applies only to on-failure", s)}
	}
	return p, nil
}

// parsePublish reads [ip:][hostPort:]containerPort[/proto].
func parsePublish(s string) (*berthv1.PortMapping, error) {
	bad := func(why string) error {
		return usageError{fmt.Errorf("invalid -p %q: %s; want [ip:][hostPort:]containerPort[/tcp|udp]", s, why)}
	}
	spec, proto, _ := strings.Cut(s, "/")
	if proto == "" {
		proto = "tcp"
	}
	if proto != "tcp" && proto != "udp" {
		return nil, bad("unknown protocol " + proto)
	}
	pm := &berthv1.PortMapping{Protocol: proto}
	var ip, host, ctr string
	if i := strings.LastIndex(spec, ":"); i >= 0 {
		ctr = spec[i+1:]
		rest := spec[:i]
		if j := strings.LastIndex(rest, ":"); j >= 0 {
			ip, host = strings.Trim(rest[:j], "[]"), rest[j+1:]
		} else {
			host = rest
		}
	} else {
		ctr = spec
	}
	port := func(v string) (uint32, error) {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return 0, bad("port " + strconv.Quote(v) + " is not 1-65535")
		}
		return uint32(n), nil
	}
	var err error
	if pm.ContainerPort, err = port(ctr); err != nil {
		return nil, err
	}
	if host != "" {
		if pm.HostPort, err = port(host); err != nil {
			return nil, err
		}
	}
	pm.HostIp = ip
	return pm, nil
}

func parseUlimit(s string) (*berthv1.Ulimit, error) {
	name, vals, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return nil, usageError{fmt.Errorf("invalid --ulimit %q: want name=soft[:hard]", s)}
	}
	softS, hardS, hasHard := strings.Cut(vals, ":")
	soft, err := strconv.ParseUint(softS, 10, 64)
	if err != nil {
		return nil, usageError{fmt.Errorf("invalid --ulimit %q: %v", s, err)}
	}
	hard := soft
	if hasHard {
		if hard, err = strconv.ParseUint(hardS, 10, 64); err != nil {
			return nil, usageError{fmt.Errorf("invalid --ulimit %q: %v", s, err)}
		}
	}
	return &berthv1.Ulimit{Name: name, Soft: soft, Hard: hard}, nil
}
