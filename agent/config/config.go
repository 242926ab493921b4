// Package config is berthd's configuration: a TOML file, whose every key is
// documented in DefaultTOML, overridden by command-line flags.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/berth-dev/berth/errdefs"
)

// DefaultPath is where berthd looks for its config file when --config is
// not given. A missing file at the default path means all defaults.
const DefaultPath = "/etc/berth/config.toml"

// Config is berthd's configuration.
type Config struct {
	Root     string `toml:"root"`
	State    string `toml:"state"`
	Address  string `toml:"address"`
	LogLevel string `toml:"log_level"`
	// LogFormat is "text" or "json".
	LogFormat       string   `toml:"log_format"`
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	CgroupParent    string   `toml:"cgroup_parent"`
	Snapshotter     string   `toml:"snapshotter"`
	TCP             TCP      `toml:"tcp"`
	Events          Events   `toml:"events"`
	Logs            Logs     `toml:"logs"`
	Images          Images   `toml:"images"`
	Network         Network  `toml:"network"`
	Runtime         Runtime  `toml:"runtime"`
	// Registry configures registry hosts by the domain references name
	// ("docker.io", "127.0.0.1:5000").
	Registry map[string]RegistryHost `toml:"registry"`
}

// Images configures pulls and garbage collection.
type Runtime struct {
	WarmShims int `toml:"warm_shims"`
}

type Images struct {
	MaxConcurrentDownloads int      `toml:"max_concurrent_downloads"`
	MaxConcurrentUnpacks   int      `toml:"max_concurrent_unpacks"`
	IngestExpiry           Duration `toml:"ingest_expiry"`
}

// RegistryHost configures how one registry is reached.
type RegistryHost struct {
	Mirrors    []string `toml:"mirrors"`
	PlainHTTP  bool     `toml:"plain_http"`
	SkipVerify bool     `toml:"skip_verify"`
}

// Network configures container networking (CNI).
type Network struct {
	// ConfDir holds the networks' CNI config lists; "" is <root>/net/conf.
	ConfDir       string   `toml:"conf_dir"`
	BinDirs       []string `toml:"bin_dirs"`
	Bridge        string   `toml:"bridge"`
	DefaultSubnet string   `toml:"default_subnet"`
	SubnetPool    string   `toml:"subnet_pool"`
	FallbackDNS   []string `toml:"fallback_dns"`
	MTU           int      `toml:"mtu"`
	// WarmAttachments is how many attachments to the default network
	// berthd keeps made ahead (0 or 1).
	WarmAttachments int `toml:"warm_attachments"`
}

// TCP configures the remote listener.
type TCP struct {
	Address  string `toml:"address"`
	TLSCert  string `toml:"tls_cert"`
	TLSKey   string `toml:"tls_key"`
	TLSCA    string `toml:"tls_ca"`
	Insecure bool   `toml:"insecure"`
}

// Events configures the event exchange.
type Events struct {
	SubscriberBuffer int `toml:"subscriber_buffer"`
}

// Logs configures container log files.
type Logs struct {
	MaxSize  int64 `toml:"max_size"`
	MaxFiles int   `toml:"max_files"`
}

// Duration is a time.Duration written as "10s" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText writes a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// DefaultTOML is the default configuration with every key documented. It is
// what `berthd config default` prints, and Default parses it, so the
// documentation and the defaults cannot drift apart.
const DefaultTOML = `# berthd configuration. Every key is shown with its default value.
# Command-line flags override the file.

# root holds persistent data: meta.db, the content store, snapshots, logs.
root = "/var/lib/berth"

# state holds runtime state, gone at reboot: the socket, task bundles,
# shim sockets.
state = "/run/berth"

# address is the Unix socket of the gRPC API (created 0660).
address = "/run/berth/berth.sock"

# log_level is one of "debug", "info", "warn", "error".
log_level = "info"

# log_format is "text" or "json".
log_format = "text"

# shutdown_timeout bounds how long SIGTERM waits for in-flight calls.
shutdown_timeout = "10s"

# cgroup_parent is the cgroup under which every container gets its own.
cgroup_parent = "/berth"

# snapshotter is "overlay", or "native" where overlay cannot mount.
snapshotter = "overlay"

[tcp]
# address, when set ("0.0.0.0:2376"), also serves the API on TCP with
# mutual TLS; tls_cert, tls_key and tls_ca are then required.
address = ""
tls_cert = ""
tls_key = ""
tls_ca = ""
# insecure serves plain TCP without TLS. Anyone who can reach the port
# then controls the host: never on a shared network.
insecure = false

[events]
# subscriber_buffer is how many events a slow subscriber may fall behind
# before it loses events (and is told how many).
subscriber_buffer = 1024

[logs]
# max_size rotates a container's log file at this many bytes (10 MiB);
# -1 disables rotation.
max_size = 10485760
# max_files is how many log files are kept per container, the live one
# included.
max_files = 3

[runtime]
# warm_shims is how many shims berthd keeps started ahead, each with a
# container init already forked, so that a container start adopts one
# instead of waiting for a shim to start (about 2/3 of a start's time
# here). Each costs an idle shim and init, a few MiB. 0 turns it off.
# With two, the second covers a container started right after another
# while the first one's replacement waits for the host to be quiet.
warm_shims = 2

[images]
# max_concurrent_downloads bounds the layers one pull downloads at once.
max_concurrent_downloads = 3
# max_concurrent_unpacks bounds the layers one pull decompresses and writes
# at once; layers unpack side by side as they arrive. 0 is one more than
# the number of CPUs, at most 4.
max_concurrent_unpacks = 0
# ingest_expiry is how long an interrupted download (a killed pull, a
# dropped connection) is kept so the next pull resumes it with a Range
# request; garbage collection removes older ones. 'berthctl system prune'
# removes them all.
ingest_expiry = "1h"

# [registry."<domain>"] configures one registry, named as in references
# ("docker.io", "ghcr.io", "127.0.0.1:5000"). No table means HTTPS with
# certificate checks, except localhost and 127.0.0.0/8, which use plain
# HTTP as Docker does. Credentials never go here: berthctl sends them
# with each request (see 'berthctl login').
#
# [registry."docker.io"]
# # mirrors are tried in order before the registry itself.
# mirrors = ["http://127.0.0.1:5000"]
# # plain_http talks HTTP instead of HTTPS to the registry itself.
# plain_http = false
# # skip_verify accepts any TLS certificate from the registry and mirrors.
# skip_verify = false
[network]
# conf_dir holds one CNI config list (<name>.conflist) per network; ""
# means <root>/net/conf. berthd writes the default network "bridge" there
# on first start. Pinned namespaces, IP allocations and attachment records
# live under <state>/net, so a reboot frees them with the namespaces.
conf_dir = ""
# bin_dirs are searched in order for the CNI plugins (bridge, host-local,
# portmap).
bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
# bridge is the Linux bridge of the default network (at most 15 characters).
bridge = "berth0"
# default_subnet is the default network's IPv4 subnet, used when berthd
# writes that network; "" picks the first of 10.88.0.0/16, 10.87.0.0/16,
# 172.30.0.0/16, 172.31.0.0/16, 192.168.250.0/24 that no host route and no
# other network uses.
default_subnet = ""
# subnet_pool gives each user-defined network created without --subnet a
# free /24 from this range.
subnet_pool = "10.89.0.0/16"
# fallback_dns replaces the host's nameservers in a container's
# resolv.conf when all of them are loopback addresses (such as
# systemd-resolved's 127.0.0.53), which a container cannot reach. With an
# empty list such containers get no nameserver (and a comment saying why).
fallback_dns = ["8.8.8.8", "8.8.4.4"]
# mtu of bridges and container interfaces; 0 keeps the kernel's 1500.
mtu = 0
# warm_attachments is how many attachments to the default network berthd
# keeps made ahead: a namespace with its interface and address, which the
# next container started there without published ports adopts instead of
# waiting for CNI ADD (two plugin execs). It holds one address of the
# network. 0 turns it off; at most 1.
warm_attachments = 1
`

// Default returns the default configuration.
func Default() *Config {
	c := &Config{}
	if _, err := toml.Decode(DefaultTOML, c); err != nil {
		panic("config: DefaultTOML does not parse: " + err.Error()) // a build defect, caught by tests
	}
	return c
}

// Load reads the file at path over the defaults. When explicit is false
// and the file does not exist, the defaults are returned: a fresh host
// needs no config file. Unknown keys are an error, so typos do not pass
// silently.
func Load(path string, explicit bool) (*Config, error) {
	c := Default()
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !explicit {
			return c, nil
		}
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(c)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return nil, fmt.Errorf("config file %s: unknown keys %s (see 'berthd config default'): %w",
			path, strings.Join(keys, ", "), errdefs.ErrInvalidArgument)
	}
	return c, nil
}

// Validate checks the configuration after flags were applied.
func (c *Config) Validate() error {
	for name, p := range map[string]string{"root": c.Root, "state": c.State, "address": c.Address} {
		if p == "" || !filepath.IsAbs(p) {
			return fmt.Errorf("%s %q must be an absolute path: %w", name, p, errdefs.ErrInvalidArgument)
		}
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("log_format %q: use \"text\" or \"json\": %w", c.LogFormat, errdefs.ErrInvalidArgument)
	}
	if c.Snapshotter != "overlay" && c.Snapshotter != "native" {
		return fmt.Errorf("snapshotter %q: use \"overlay\" or \"native\": %w", c.Snapshotter, errdefs.ErrInvalidArgument)
	}
	if c.TCP.Address != "" && !c.TCP.Insecure && (c.TCP.TLSCert == "" || c.TCP.TLSKey == "" || c.TCP.TLSCA == "") {
		return fmt.Errorf("tcp address %s needs mutual TLS (--tls-cert, --tls-key, --tls-ca or [tcp] tls_cert, tls_key, tls_ca), or plain TCP with --insecure-tcp: %w",
			c.TCP.Address, errdefs.ErrInvalidArgument)
	}
	if n := c.Network.WarmAttachments; n < 0 || n > 1 {
		return fmt.Errorf("network.warm_attachments %d: use 0 or 1: %w", n, errdefs.ErrInvalidArgument)
	}
	if n := c.Runtime.WarmShims; n < 0 || n > 16 {
		return fmt.Errorf("runtime.warm_shims %d: use 0 to 16: %w", n, errdefs.ErrInvalidArgument)
	}
	if n := c.Images.MaxConcurrentUnpacks; n < 0 || n > 64 {
		return fmt.Errorf("images.max_concurrent_unpacks %d: use 0 (the default) to 64: %w", n, errdefs.ErrInvalidArgument)
	}
	if n := c.Images.MaxConcurrentDownloads; n < 1 || n > 64 {
		return fmt.Errorf("images.max_concurrent_downloads %d: use 1 to 64: %w", n, errdefs.ErrInvalidArgument)
	}
	if c.Images.IngestExpiry.Duration <= 0 {
		return fmt.Errorf("images.ingest_expiry %s must be positive: %w", c.Images.IngestExpiry, errdefs.ErrInvalidArgument)
	}
	for domain, h := range c.Registry {
		if domain == "" || strings.ContainsAny(domain, "/ ") {
			return fmt.Errorf("registry %q: want a registry domain such as \"docker.io\" or \"127.0.0.1:5000\": %w", domain, errdefs.ErrInvalidArgument)
		}
		for _, m := range h.Mirrors {
			if !strings.HasPrefix(m, "http://") && !strings.HasPrefix(m, "https://") {
				return fmt.Errorf("registry %q: mirror %q must start with http:// or https://: %w", domain, m, errdefs.ErrInvalidArgument)
			}
		}
	}
	if err := c.Network.validate(); err != nil {
		return err
	}
	if c.ShutdownTimeout.Duration < 0 {
		return fmt.Errorf("shutdown_timeout %s is negative: %w", c.ShutdownTimeout, errdefs.ErrInvalidArgument)
	}
	return nil
}

// ParseLevel turns a log level name into a slog.Level.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: use debug, info, warn or error: %w", s, errdefs.ErrInvalidArgument)
	}
	return l, nil
}

func (n *Network) validate() error {
	bad := func(key, v, want string) error {
		return fmt.Errorf("[network] %s %q: %s: %w", key, v, want, errdefs.ErrInvalidArgument)
	}
	if n.ConfDir != "" && !filepath.IsAbs(n.ConfDir) {
		return bad("conf_dir", n.ConfDir, "must be an absolute path or empty")
	}
	for _, d := range n.BinDirs {
		if !filepath.IsAbs(d) {
			return bad("bin_dirs", d, "must be absolute paths")
		}
	}
	if n.Bridge == "" || len(n.Bridge) > 15 || strings.ContainsAny(n.Bridge, "/ \t\n:") {
		return bad("bridge", n.Bridge, "want a Linux interface name of 1 to 15 characters")
	}
	for key, v := range map[string]string{"default_subnet": n.DefaultSubnet, "subnet_pool": n.SubnetPool} {
		if v == "" && key == "default_subnet" {
			continue
		}
		p, err := netip.ParsePrefix(v)
		if err != nil || !p.Addr().Is4() {
			return bad(key, v, "want an IPv4 CIDR such as 10.89.0.0/16")
		}
		if key == "subnet_pool" && p.Bits() > 24 {
			return bad(key, v, "want /24 or larger")
		}
	}
	for _, d := range n.FallbackDNS {
		if _, err := netip.ParseAddr(d); err != nil {
			return bad("fallback_dns", d, "want IP addresses")
		}
	}
	if n.MTU != 0 && (n.MTU < 576 || n.MTU > 65535) {
		return bad("mtu", fmt.Sprint(n.MTU), "want 576 to 65535, or 0")
	}
	return nil
}
