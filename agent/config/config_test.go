package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/errdefs"
)

func TestDefaults(t *testing.T) {
	c := Default()
	if c.Root != "/var/lib/berth" || c.State != "/run/berth" || c.Address != "/run/berth/berth.sock" ||
		c.LogLevel != "info" || c.LogFormat != "text" || c.ShutdownTimeout.Duration != 10*time.Second ||
		c.Events.SubscriberBuffer != 1024 || c.Logs.MaxFiles != 3 || c.CgroupParent != "/berth" {
		t.Fatalf("unexpected defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	n := c.Network
	if n.ConfDir != "" || n.Bridge != "berth0" || n.SubnetPool != "10.89.0.0/16" || n.DefaultSubnet != "" ||
		strings.Join(n.BinDirs, ",") != "/usr/lib/cni,/opt/cni/bin" || strings.Join(n.FallbackDNS, ",") != "8.8.8.8,8.8.4.4" {
		t.Fatalf("network defaults: %+v", n)
	}
}

func TestNetworkKeysLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(path, []byte("[network]\nbridge = \"br-test\"\ndefault_subnet = \"10.201.0.0/24\"\nfallback_dns = []\n"), 0o644)
	c, err := Load(path, true)
	if err != nil || c.Network.Bridge != "br-test" || c.Network.DefaultSubnet != "10.201.0.0/24" || len(c.Network.FallbackDNS) != 0 ||
		c.Network.SubnetPool != "10.89.0.0/16" {
		t.Fatalf("load [network]: %+v %v", c.Network, err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	if c, err := Load(path, false); err != nil || c.Root != "/var/lib/berth" {
		t.Fatalf("missing default file: %v %v", c, err)
	}
	if _, err := Load(path, true); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("missing explicit file: %v", err)
	}
	os.WriteFile(path, []byte("root = \"/srv/berth\"\n[events]\nsubscriber_buffer = 8\n"), 0o644)
	c, err := Load(path, true)
	if err != nil || c.Root != "/srv/berth" || c.Events.SubscriberBuffer != 8 || c.State != "/run/berth" {
		t.Fatalf("load: %+v %v", c, err)
	}
	os.WriteFile(path, []byte("[images]\nmax_concurrent_downloads = 5\n[registry.\"docker.io\"]\nmirrors = [\"http://127.0.0.1:5000\"]\n[registry.\"127.0.0.1:5000\"]\nplain_http = true\n"), 0o644)
	c, err = Load(path, true)
	if err != nil || c.Images.MaxConcurrentDownloads != 5 || c.Images.IngestExpiry.Duration != time.Hour ||
		c.Registry["docker.io"].Mirrors[0] != "http://127.0.0.1:5000" || !c.Registry["127.0.0.1:5000"].PlainHTTP || c.Validate() != nil {
		t.Fatalf("images and registry keys: %+v %v", c, err)
	}
	os.WriteFile(path, []byte("[registry.\"docker.io\"]\nmirror = [\"http://x\"]\n"), 0o644)
	if _, err := Load(path, true); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "mirror") {
		t.Fatalf("unknown registry key: %v", err)
	}
	os.WriteFile(path, []byte("roots = \"/x\"\n"), 0o644)
	if _, err := Load(path, true); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "roots") {
		t.Fatalf("unknown key: %v", err)
	}
	os.WriteFile(path, []byte("root = \n"), 0o644)
	if _, err := Load(path, true); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("bad toml: %v", err)
	}
}

func TestValidate(t *testing.T) {
	for name, mut := range map[string]func(*Config){
		"relative root": func(c *Config) { c.Root = "var/lib" },
		"log level":     func(c *Config) { c.LogLevel = "loud" },
		"log format":    func(c *Config) { c.LogFormat = "xml" },
		"tcp no tls":    func(c *Config) { c.TCP.Address = "127.0.0.1:2376" },
		"snapshotter":   func(c *Config) { c.Snapshotter = "zfs" },
		"downloads":     func(c *Config) { c.Images.MaxConcurrentDownloads = 0 },
		"unpacks":       func(c *Config) { c.Images.MaxConcurrentUnpacks = -1 },
		"warm shims":    func(c *Config) { c.Runtime.WarmShims = -1 },
		"warm netns":    func(c *Config) { c.Network.WarmAttachments = 2 },
		"ingest expiry": func(c *Config) { c.Images.IngestExpiry.Duration = 0 },
		"mirror scheme": func(c *Config) {
			c.Registry = map[string]RegistryHost{"docker.io": {Mirrors: []string{"127.0.0.1:5000"}}}
		},
		"registry name": func(c *Config) { c.Registry = map[string]RegistryHost{"docker.io/library": {}} },
		"conf dir":      func(c *Config) { c.Network.ConfDir = "net/conf" },
		"bin dir":       func(c *Config) { c.Network.BinDirs = []string{"cni"} },
		"long bridge":   func(c *Config) { c.Network.Bridge = "a-very-long-bridge" },
		"subnet":        func(c *Config) { c.Network.DefaultSubnet = "10.88.0.0" },
		"v6 subnet":     func(c *Config) { c.Network.DefaultSubnet = "fd00::/64" },
		"small pool":    func(c *Config) { c.Network.SubnetPool = "10.89.0.0/28" },
		"dns":           func(c *Config) { c.Network.FallbackDNS = []string{"dns.google"} },
		"mtu":           func(c *Config) { c.Network.MTU = 100 },
	} {
		c := Default()
		mut(c)
		if err := c.Validate(); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
