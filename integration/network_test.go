package integration

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/berth-dev/berth/agent/network"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// networkConfig keeps a test berthd off the real berth0 and 10.88.0.0/16.
// No attachment is made here (that needs the runtime), so no bridge or
// iptables rule exists to clean up: networks are files under the root.
const networkConfig = `[network]
bridge = "bit0"
default_subnet = "10.202.0.0/24"
subnet_pool = "10.202.128.0/17"
`

func TestCtlNetworkCreateLsInspectRm(t *testing.T) {
	d := startDaemon(t, withConfig(networkConfig))

	// The default network exists from the first start, on the configured bridge.
	ls := d.mustCtl("network", "ls")
	lines := strings.Split(strings.TrimSpace(ls), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "NETWORK ID") || !regexp.MustCompile(`^[0-9a-f]{12}\s+bridge\s+bridge\s+10\.202\.0\.0/24\s+bit0\s+external\s+0$`).MatchString(lines[1]) {
		t.Fatalf("network ls on a fresh root:\n%s", ls)
	}
	if _, err := os.Stat(filepath.Join(d.root, "net", "conf", "bridge.conflist")); err != nil {
		t.Fatalf("default network config not under <root>/net/conf: %v", err)
	}

	id := strings.TrimSpace(d.mustCtl("network", "create", "--subnet", "10.202.7.0/24", "--gateway", "10.202.7.254", "--label", "team=a", "--internal", "backend"))
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(id) {
		t.Fatalf("network create printed %q; want the network ID", id)
	}
	auto := strings.TrimSpace(d.mustCtl("network", "create", "frontend"))

	var nets []map[string]any
	if err := json.Unmarshal([]byte(d.mustCtl("network", "inspect", "backend", "frontend")), &nets); err != nil || len(nets) != 2 {
		t.Fatalf("inspect: %v %v", nets, err)
	}
	b, f := nets[0], nets[1]
	if b["id"] != id || b["subnet"] != "10.202.7.0/24" || b["gateway"] != "10.202.7.254" || b["internal"] != true ||
		b["driver"] != "bridge" || b["labels"].(map[string]any)["team"] != "a" || b["bridge"] != "br-"+id[:12] {
		t.Fatalf("inspect backend: %v", b)
	}
	// Without --subnet, the first free /24 of the pool.
	if f["id"] != auto || f["subnet"] != "10.202.128.0/24" || f["gateway"] != "10.202.128.1" {
		t.Fatalf("inspect frontend: %v", f)
	}

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"network", "create", "backend"}, `network "backend": already exists`},
		{[]string{"network", "create", "--subnet", "10.202.7.128/25", "other"}, `overlaps network "backend"`},
		{[]string{"network", "create", "--subnet", "nonsense", "other"}, `subnet "nonsense"`},
		{[]string{"network", "create", "--gateway", "10.9.9.9", "--subnet", "10.202.9.0/24", "other"}, `gateway "10.9.9.9"`},
		{[]string{"network", "create", "host"}, `reserved`},
		{[]string{"network", "create", "../x"}, `network name "../x" is invalid`},
		{[]string{"network", "create", "-d", "macvlan", "other"}, `only "bridge"`},
		{[]string{"network", "rm", "bridge"}, `default network`},
	} {
		r := d.ctl(bad.args...)
		if r.Code != 1 || !strings.Contains(r.Stderr, bad.want) {
			t.Errorf("berthctl %s: exit %d, stderr %q; want exit 1 and %q", strings.Join(bad.args, " "), r.Code, r.Stderr, bad.want)
		}
	}
	if r := d.ctl("network", "create"); r.Code != 125 {
		t.Errorf("create without a name: exit %d; want the usage exit code 125", r.Code)
	}

	if q := d.mustCtl("network", "ls", "-q", "--no-trunc"); q != id+"\n"+strings.TrimSpace(d.mustCtl("network", "inspect", "-f", "{{.id}}", "bridge"))+"\n"+auto+"\n" {
		t.Fatalf("ls -q: %q", q)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(d.mustCtl("network", "ls", "--format", "json")), &list); err != nil || len(list) != 3 {
		t.Fatalf("ls json: %v %v", list, err)
	}

	// Networks survive a restart.
	d.restart()
	if out := d.mustCtl("network", "inspect", "-f", "{{.subnet}}", "backend"); out != "10.202.7.0/24\n" {
		t.Fatalf("after restart: %q", out)
	}

	r := d.ctl("network", "rm", "backend", "nosuch", "frontend")
	if r.Code != 1 || r.Stdout != "backend\nfrontend\n" || !strings.Contains(r.Stderr, `network "nosuch": not found`) {
		t.Fatalf("rm with one unknown: %+v", r)
	}
	if r := d.ctl("network", "inspect", "backend"); r.Code != 1 || r.Stdout != "[]\n" {
		t.Fatalf("inspect removed network: %+v", r)
	}
	if q := d.mustCtl("network", "ls", "--format", "{{.Name}}"); q != "bridge\n" {
		t.Fatalf("ls after rm: %q", q)
	}
}

// TestBerthdStartReleasesNetworksOfGoneContainers is a berthd killed after a
// container's record was deleted but before its network was detached: the
// next berthd start must release the namespace, the IP, the veth, the
// iptables rules and the port.
func TestBerthdStartReleasesNetworksOfGoneContainers(t *testing.T) {
	const bridge, subnet = "bit1", "10.202.2.0/24"
	d := startDaemon(t, withConfig("[network]\nbridge = \""+bridge+"\"\ndefault_subnet = \""+subnet+"\"\n"))
	t.Cleanup(func() { removeBridgeAndRules(t, bridge) })
	d.kill()

	// Attach a container the way berthd would, on the daemon's own dirs.
	cfg := network.Config{
		ConfDir: filepath.Join(d.root, "net", "conf"), StateDir: filepath.Join(d.state, "net"),
		BinDirs: []string{"/usr/lib/cni", "/opt/cni/bin"}, DefaultBridge: bridge, DefaultSubnet: subnet,
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := network.New(cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	// Should the test fail before berthd recovers, release it here (this
	// runs before the harness stops berthd and removes its dirs).
	t.Cleanup(func() {
		if m, err := network.New(cfg, quiet); err == nil {
			if err := m.Recover(context.Background(), func(string, string) bool { return false }); err != nil {
				t.Errorf("cleanup: %v", err)
			}
			m.Close()
		}
	})
	a, err := m.Attach(context.Background(), network.AttachRequest{Namespace: "default", ContainerID: "ghost",
		Config: &berthv1.NetworkConfig{Ports: []*berthv1.PortMapping{{HostPort: 18300, ContainerPort: 80}}}})
	if err != nil {
		t.Fatal(err)
	}
	ip := strings.Split(a.Networks[0].Addresses[0], "/")[0]
	m.Close() // the crash: no Detach

	if !strings.Contains(iptablesSave(t), ip) || len(bridgePorts(t, bridge)) != 1 {
		t.Fatalf("the attachment did not create rules for %s and a veth on %s", ip, bridge)
	}
	d.start()
	if rules := iptablesSave(t); strings.Contains(rules, ip) {
		t.Errorf("iptables rules for %s survive berthd's start:\n%s", ip, rules)
	}
	// What is left is the warm attachment berthd makes at start, at most.
	w := warmNetOf(t, d.state)
	for _, p := range bridgePorts(t, bridge) {
		if name, _, _ := strings.Cut(p, "@"); !w.veths[name] {
			t.Errorf("veth left on %s: %s", bridge, p)
		}
	}
	for _, m := range mountsUnder(d.state) {
		if !warmMount(m) {
			t.Errorf("a pinned namespace under %s survives berthd's start: %s", d.state, m)
		}
	}
	if len(w.netns) > 1 {
		t.Errorf("%d warm attachments, want at most 1", len(w.netns))
	}
	if entries, _ := os.ReadDir(filepath.Join(d.state, "net", "ipam", "bridge")); len(entries) > 0 {
		for _, e := range entries {
			if e.Name() == ip {
				t.Errorf("IP %s still allocated", ip)
			}
		}
	}
	l, err := net.Listen("tcp", ":18300")
	if err != nil {
		t.Errorf("port 18300 still reserved: %v", err)
	} else {
		l.Close()
	}
}

func iptablesSave(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func bridgePorts(t *testing.T, bridge string) []string {
	out, _ := exec.Command("ip", "-o", "link", "show", "master", bridge).Output()
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, strings.TrimSuffix(f[1], ":"))
		}
	}
	return names
}

// removeBridgeAndRules deletes a test's bridge and every iptables rule
// naming it (the default network's rules stay in a real berthd).
func removeBridgeAndRules(t *testing.T, bridge string) {
	table := ""
	for _, l := range strings.Split(iptablesSave(t), "\n") {
		if strings.HasPrefix(l, "*") {
			table = l[1:]
		}
		if strings.HasPrefix(l, "-A ") && strings.Contains(l, " "+bridge+" ") {
			args := append([]string{"-w", "5", "-t", table, "-D"}, splitRule(l[3:])...)
			if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
				t.Errorf("cleanup: iptables %v: %v %s", args, err, out)
			}
		}
	}
	exec.Command("ip", "link", "del", bridge).Run()
}

// splitRule splits an iptables-save rule into arguments, keeping quoted
// comments whole.
func splitRule(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
		case r == ' ' && !quoted:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}
