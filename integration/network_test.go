package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
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
