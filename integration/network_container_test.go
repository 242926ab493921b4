package integration

// Containers on real networks, through berthctl as a user would: published
// ports, name resolution on a user-defined network, none and host modes,
// and nothing leaked by many run/rm cycles or by a berthd killed with
// networked containers running.
//
// Traffic goes only to 127.0.0.1 (published ports) and between the
// containers these tests create; no container's resolv.conf is used
// (names resolve through /etc/hosts).

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/integration/fixture"
)

// netDaemon starts a registry holding busybox and a berthd whose default
// network is bridge on subnet, both private to the test; busybox is
// pulled. Its cleanup removes every container (then the daemon stops),
// the bridge and its iptables rules.
func netDaemon(t *testing.T, bridge, subnet string, networkConfig ...string) *daemon {
	t.Helper()
	reg := fixture.StartRegistry(t)
	reg.Push(t, reg.Ref("library/busybox:latest"), fixture.Busybox(t))
	d := startDaemon(t, withConfig(mirrorConfig(reg.Addr)+
		fmt.Sprintf("[network]\nbridge = %q\ndefault_subnet = %q\nsubnet_pool = \"10.203.0.0/16\"\n", bridge, subnet)+
		strings.Join(networkConfig, "\n")))
	t.Cleanup(func() { removeBridgeAndRules(t, bridge) })
	t.Cleanup(func() {
		if d.cmd == nil {
			return
		}
		if ids := strings.Fields(d.ctl("ps", "-aq").Stdout); len(ids) > 0 {
			d.ctl(append([]string{"rm", "-f"}, ids...)...)
		}
	})
	d.mustCtl("pull", "-q", "busybox")
	return d
}

// netLeftovers is what a container's network may leave on the host:
// veths on the bridge, pinned namespaces and generated files, host-local
// allocations, and iptables rules naming the bridge, the subnet or the
// given host ports (other than the network's own, which stay while the
// network exists).
func netLeftovers(t *testing.T, d *daemon, bridge, subnetPrefix string, ports ...string) string {
	t.Helper()
	var b strings.Builder
	w := warmNetOf(t, d.state)
	// Between an adoption and the refill there is none: only more than
	// one is a leak.
	if len(w.netns) > 1 {
		fmt.Fprintf(&b, "warm attachments: %d, want at most 1\n", len(w.netns))
	}
	var veths, mounts, ipam []string
	for _, v := range bridgePorts(t, bridge) {
		if name, _, _ := strings.Cut(v, "@"); !w.veths[name] {
			veths = append(veths, v)
		}
	}
	fmt.Fprintf(&b, "veths on %s: %v\n", bridge, veths)
	for _, m := range mountsUnder(filepath.Join(d.state, "net")) {
		if !warmMount(m) {
			mounts = append(mounts, m)
		}
	}
	fmt.Fprintf(&b, "mounts: %v\n", mounts)
	for _, dir := range []string{"netns", "files", "attachments"} {
		var names []string
		filepath.Walk(filepath.Join(d.state, "net", dir), func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() && !strings.Contains(p, "/_warm/") {
				names = append(names, p)
			}
			return nil
		})
		fmt.Fprintf(&b, "%s: %v\n", dir, names)
	}
	all, _ := filepath.Glob(filepath.Join(d.state, "net", "ipam", "*", "[0-9]*.*.*.*"))
	for _, p := range all {
		if !w.ips[filepath.Base(p)] {
			ipam = append(ipam, p)
		}
	}
	fmt.Fprintf(&b, "ip allocations: %v\n", ipam)
	var rules []string
	for _, l := range strings.Split(iptablesSave(t), "\n") {
		if strings.HasPrefix(l, "#") || strings.HasPrefix(l, ":") || strings.Contains(l, `"berth network `) {
			continue // comments, chain counters, the network's own rules (they stay with the network)
		}
		hit := strings.Contains(l, " "+bridge+" ") || strings.Contains(l, subnetPrefix)
		for ip := range w.ips {
			if strings.Contains(l, ip+"/") || strings.Contains(l, ip+" ") {
				hit = false
			}
		}
		for _, p := range ports {
			hit = hit || strings.Contains(l, "--dport "+p+" ") || strings.Contains(l, ":"+p)
		}
		if hit {
			rules = append(rules, l)
		}
	}
	sort.Strings(rules)
	fmt.Fprintf(&b, "iptables:\n%s\n", strings.Join(rules, "\n"))
	return b.String()
}

// settledLeftovers is netLeftovers once it equals want, or after 10 s:
// a --rm container's removal finishes in berthd after run returned, its
// record first, its network last.
func settledLeftovers(t *testing.T, d *daemon, want, bridge, subnetPrefix string, ports ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := netLeftovers(t, d, bridge, subnetPrefix, ports...)
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// httpGet fetches url, retrying for up to 10 s while the server starts.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	cl := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := cl.Get(url)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil {
				return string(body)
			}
			err = rerr
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestContainerPublishedPort(t *testing.T) {
	const bridge, subnet = "bit-pp", "10.202.31.0/24"
	d := netDaemon(t, bridge, subnet)
	before := netLeftovers(t, d, bridge, "10.202.31.", "18080")

	id := strings.TrimSpace(d.mustCtl("run", "-d", "-p", "18080:80", "--name", "web", "busybox", "httpd", "-f", "-p", "80", "-h", "/var/www"))
	if got := httpGet(t, "http://127.0.0.1:18080/"); got != "hello from berth\n" {
		t.Fatalf("GET http://127.0.0.1:18080/ = %q, want the image's index.html", got)
	}
	ps := d.mustCtl("ps")
	if !strings.Contains(ps, "0.0.0.0:18080->80/tcp") {
		t.Errorf("ps does not show the published port:\n%s", ps)
	}
	// inspect shows the container's address on the default network.
	ip := strings.TrimSpace(d.mustCtl("inspect", "-f", "{{range .status.networks}}{{index .addresses 0}}{{end}}", "web"))
	if !strings.HasPrefix(ip, "10.202.31.") {
		t.Errorf("inspect: address %q, want one of %s", ip, subnet)
	}
	// The container's own /etc files: hostname = short ID, hosts lists it.
	if h := d.mustCtl("exec", "web", "cat", "/etc/hostname"); h != id[:12]+"\n" {
		t.Errorf("/etc/hostname = %q, want %q", h, id[:12])
	}
	if hosts := d.mustCtl("exec", "web", "cat", "/etc/hosts"); !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(strings.SplitN(ip, "/", 2)[0]) + `\s+` + id[:12]).MatchString(hosts) {
		t.Errorf("/etc/hosts does not map the container's address to its hostname:\n%s", hosts)
	}

	// The same host port again is refused, clearly, and leaves nothing.
	psa := d.mustCtl("ps", "-aq")
	during := netLeftovers(t, d, bridge, "10.202.31.", "18080")
	r := d.ctl("run", "-d", "--rm", "-p", "18080:80", "busybox", "sleep", "100")
	if r.Code == 0 || !strings.Contains(r.Stderr, "0.0.0.0:18080/tcp") || !strings.Contains(r.Stderr, "already in use") {
		t.Fatalf("a second container on host port 18080: exit %d, stderr %q; want a refusal naming the port", r.Code, r.Stderr)
	}
	if got := d.mustCtl("ps", "-aq"); got != psa {
		t.Errorf("the refused --rm container is listed:\nbefore:\n%s\nafter:\n%s", psa, got)
	}
	// Without --rm, Docker keeps the container, created and without a network.
	r = d.ctl("run", "-d", "--name", "web2", "-p", "18080:80", "busybox", "sleep", "100")
	if r.Code == 0 || !strings.Contains(r.Stderr, "already in use") {
		t.Fatalf("web2 on host port 18080: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if after := netLeftovers(t, d, bridge, "10.202.31.", "18080"); after != during {
		t.Errorf("the refused containers left network state:\nbefore:\n%s\nafter:\n%s", during, after)
	}
	if got := httpGet(t, "http://127.0.0.1:18080/"); got != "hello from berth\n" {
		t.Errorf("the first container's port after the refusal: %q", got)
	}

	// Stopped, the container publishes nothing; started again, its new
	// task gets a network again, on the same host port.
	d.mustCtl("stop", "-t", "1", "web")
	if ps := d.mustCtl("ps", "-a"); strings.Contains(ps, "18080->") {
		t.Errorf("ps -a shows the stopped container's port:\n%s", ps)
	}
	d.mustCtl("start", "web")
	if got := httpGet(t, "http://127.0.0.1:18080/"); got != "hello from berth\n" {
		t.Errorf("GET :18080 after stop and start = %q", got)
	}
	if ps := d.mustCtl("ps"); !strings.Contains(ps, "0.0.0.0:18080->80/tcp") {
		t.Errorf("ps after start does not show the port:\n%s", ps)
	}

	d.mustCtl("rm", "-f", "web", "web2")
	if after := settledLeftovers(t, d, before, bridge, "10.202.31.", "18080"); after != before {
		t.Errorf("rm left network state:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestContainerNetworkByName(t *testing.T) {
	const bridge, subnet = "bit-nn", "10.202.32.0/24"
	d := netDaemon(t, bridge, subnet)
	d.mustCtl("network", "create", "--subnet", "10.202.33.0/24", "testnet")
	t.Cleanup(func() {
		if d.cmd != nil {
			d.ctl("rm", "-f", "a", "b")
			d.ctl("network", "rm", "testnet")
		}
	})
	d.mustCtl("run", "-d", "--network", "testnet", "--name", "b", "busybox", "httpd", "-f", "-p", "80", "-h", "/var/www")
	d.mustCtl("run", "-d", "--network", "testnet", "--name", "a", "busybox", "sleep", "300")
	ipB := strings.SplitN(strings.TrimSpace(d.mustCtl("inspect", "-f", "{{range .status.networks}}{{index .addresses 0}}{{end}}", "b")), "/", 2)[0]
	if !strings.HasPrefix(ipB, "10.202.33.") {
		t.Fatalf("b's address %q is not on testnet (10.202.33.0/24)", ipB)
	}
	if hosts := d.mustCtl("exec", "a", "cat", "/etc/hosts"); !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(ipB) + `\s.*\bb\b`).MatchString(hosts) {
		t.Errorf("a's /etc/hosts does not list b at %s:\n%s", ipB, hosts)
	}
	get := `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 %s 80`
	for _, target := range []string{"b", ipB} {
		var out string
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := d.ctl("exec", "a", "sh", "-c", fmt.Sprintf(get, target))
			out = r.Stdout
			if strings.Contains(out, "hello from berth") || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !strings.Contains(out, "hello from berth") {
			t.Errorf("a fetching http://%s/: %q", target, out)
		}
		if r := d.ctl("exec", "a", "ping", "-c1", "-W2", target); r.Code != 0 {
			t.Errorf("a pinging %s: exit %d: %s%s", target, r.Code, r.Stdout, r.Stderr)
		}
	}
	// testnet is in use: it cannot be removed.
	if r := d.ctl("network", "rm", "testnet"); r.Code == 0 {
		t.Errorf("network rm testnet succeeded with a and b on it")
	}
	d.mustCtl("rm", "-f", "a", "b")
	d.mustCtl("network", "rm", "testnet")
}

// procNetDevNames lists the interfaces of /proc/net/dev content.
func procNetDevNames(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if name, _, ok := strings.Cut(l, ":"); ok && !strings.Contains(name, "|") {
			out = append(out, strings.TrimSpace(name))
		}
	}
	sort.Strings(out)
	return out
}

// stableNames drops the veths, which come and go with containers.
func stableNames(names []string) []string {
	var out []string
	for _, n := range names {
		if !strings.HasPrefix(n, "veth") {
			out = append(out, n)
		}
	}
	return out
}

func TestContainerNetworkNoneAndHost(t *testing.T) {
	const bridge, subnet = "bit-nh", "10.202.34.0/24"
	d := netDaemon(t, bridge, subnet)

	if got := procNetDevNames(d.mustCtl("run", "--rm", "--network", "none", "busybox", "cat", "/proc/net/dev")); strings.Join(got, ",") != "lo" {
		t.Errorf("--network none: interfaces %v, want only lo", got)
	}
	if got := procNetDevNames(d.mustCtl("run", "--rm", "busybox", "cat", "/proc/net/dev")); strings.Join(got, ",") != "eth0,lo" {
		t.Errorf("default network: interfaces %v, want eth0 and lo", got)
	}
	host, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	// Other tests, and berthd's own warm attachment and background
	// releases, add and remove veths meanwhile: compare the other names,
	// read just before and after, with the container's.
	got := stableNames(procNetDevNames(d.mustCtl("run", "--rm", "--network", "host", "busybox", "cat", "/proc/net/dev")))
	host2, _ := os.ReadFile("/proc/net/dev")
	want, want2 := stableNames(procNetDevNames(string(host))), stableNames(procNetDevNames(string(host2)))
	if g := strings.Join(got, ","); g != strings.Join(want, ",") && g != strings.Join(want2, ",") {
		t.Errorf("--network host: interfaces %v, want the host's %v", got, want)
	}
	// Host mode gets the host's resolv.conf.
	hostResolv, err := os.ReadFile("/etc/resolv.conf")
	if err == nil {
		if got := d.mustCtl("run", "--rm", "--network", "host", "busybox", "cat", "/etc/resolv.conf"); got != string(hostResolv) {
			t.Errorf("--network host: /etc/resolv.conf = %q, want the host's %q", got, hostResolv)
		}
	}
	if r := d.ctl("run", "--rm", "--network", "none", "-p", "18082:80", "busybox", "true"); r.Code == 0 || !strings.Contains(r.Stderr, "cannot be published") {
		t.Errorf("-p with --network none: exit %d, stderr %q", r.Code, r.Stderr)
	}
}

// CNI ADD runs while the shim starts. When it fails, the container's
// task, created meanwhile, goes too, and nothing of the network is left:
// no veth, namespace, allocation, rule or shim.
func TestContainerNetworkFailedAddLeavesNothing(t *testing.T) {
	const bridge, subnet, prefix = "bit-fa", "10.202.36.0/24", "10.202.36."
	// The real bridge plugin, and an IPAM plugin that refuses every ADD
	// (DEL succeeds): the bridge and the veth exist when ADD fails.
	bin := t.TempDir()
	if err := os.Symlink("/usr/lib/cni/bridge", filepath.Join(bin, "bridge")); err != nil {
		t.Fatal(err)
	}
	ipam := "#!/bin/sh\ncase \"$CNI_COMMAND\" in\n" +
		"ADD) echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"test ipam: no address for you\"}'; exit 1;;\n" +
		"VERSION) echo '{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.3.1\",\"0.4.0\",\"1.0.0\"]}';;\n" +
		"esac\nexit 0\n"
	if err := os.WriteFile(filepath.Join(bin, "host-local"), []byte(ipam), 0o755); err != nil {
		t.Fatal(err)
	}
	d := netDaemon(t, bridge, subnet, fmt.Sprintf("bin_dirs = [%q]\n", bin))
	before := netLeftovers(t, d, bridge, prefix)

	r := d.ctl("run", "--rm", "busybox", "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, "no address for you") {
		t.Fatalf("run --rm with a failing ADD: exit %d, stderr %q; want the plugin's error", r.Code, r.Stderr)
	}
	if got := strings.TrimSpace(d.mustCtl("ps", "-aq")); got != "" {
		t.Errorf("the failed --rm container is listed: %q", got)
	}
	// Without --rm the container stays, created, without a task.
	r = d.ctl("run", "-d", "--name", "kept", "busybox", "sleep", "100")
	if r.Code == 0 || !strings.Contains(r.Stderr, "no address for you") {
		t.Fatalf("run -d with a failing ADD: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if st := d.mustCtl("inspect", "-f", "{{.status.state}}", "kept"); !strings.Contains(st, "CREATED") {
		t.Errorf("the failed container's state: %q, want created", st)
	}
	if r := d.ctl("exec", "kept", "true"); r.Code == 0 {
		t.Errorf("exec into a container whose start failed succeeded: it has a task")
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(processesMentioning(d.state)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if pids := processesMentioning(d.state); len(pids) > 0 {
		t.Errorf("shims left after failed starts: %v", pids)
	}
	if after := settledLeftovers(t, d, before, bridge, prefix); after != before {
		t.Errorf("failed ADDs left network state:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	d.mustCtl("rm", "kept")
}

func TestContainerNetworkNoLeaks(t *testing.T) {
	const bridge, subnet, prefix = "bit-lk", "10.202.35.0/24", "10.202.35."
	d := netDaemon(t, bridge, subnet)
	// The bridge and the network's own rules exist from the first container on.
	d.mustCtl("run", "--rm", "busybox", "true")
	waitNoContainers(t, d)
	waitNoAttachments(t, d)
	before := netLeftovers(t, d, bridge, prefix, "18081")

	const cycles, parallel = 100, 4
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan string, cycles)
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < cycles/parallel; i++ {
				if r := d.ctl("run", "--rm", "busybox", "true"); r.Code != 0 {
					errs <- fmt.Sprintf("exit %d: %s", r.Code, r.Stderr)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("run --rm busybox true: %s", e)
	}
	t.Logf("%d bridge run --rm cycles, %d in parallel: %v", cycles, parallel, time.Since(start).Round(time.Millisecond))
	waitNoContainers(t, d)
	if after := settledLeftovers(t, d, before, bridge, prefix, "18081"); after != before {
		t.Errorf("%d run/rm cycles left network state:\nbefore:\n%s\nafter:\n%s", cycles, before, after)
	}

	// berthd killed with two networked containers running: after a
	// restart their networks still work, and rm leaves nothing.
	d.mustCtl("run", "-d", "--name", "p1", "-p", "18081:80", "busybox", "httpd", "-f", "-p", "80", "-h", "/var/www")
	d.mustCtl("run", "-d", "--name", "p2", "busybox", "sleep", "300")
	if got := httpGet(t, "http://127.0.0.1:18081/"); got != "hello from berth\n" {
		t.Fatalf("GET :18081 = %q", got)
	}
	d.kill()
	d.start()
	if got := httpGet(t, "http://127.0.0.1:18081/"); got != "hello from berth\n" {
		t.Errorf("GET :18081 after berthd was killed and restarted = %q", got)
	}
	if ps := d.mustCtl("ps"); !strings.Contains(ps, "0.0.0.0:18081->80/tcp") {
		t.Errorf("ps after the restart does not show p1's port:\n%s", ps)
	}
	d.mustCtl("rm", "-f", "p1", "p2")
	if after := settledLeftovers(t, d, before, bridge, prefix, "18081"); after != before {
		t.Errorf("kill -9, restart, rm -f left network state:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// waitNoAttachments waits (≤ 10 s) until berthd holds no network
// attachment.
func waitNoAttachments(t *testing.T, d *daemon) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		all, _ := filepath.Glob(filepath.Join(d.state, "net", "attachments", "*", "*.json"))
		var left []string
		for _, p := range all {
			if !strings.Contains(p, "/_warm/") {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("attachments left: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitNoContainers waits (≤ 10 s) for --rm containers to be removed.
func waitNoContainers(t *testing.T, d *daemon) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.TrimSpace(d.mustCtl("ps", "-aq")) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("containers left after run --rm:\n%s", d.mustCtl("ps", "-a"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// warmNet is what berthd's warm network attachment holds ([network]
// warm_attachments): its pinned namespace, its address and its host-side
// veth. Leak checks leave it out and count it instead: it is replaced
// whenever a container adopts it, so its names change, but there is never
// more than one.
type warmNet struct {
	netns, ips, veths map[string]bool
}

func warmNetOf(t *testing.T, state string) warmNet {
	t.Helper()
	w := warmNet{netns: map[string]bool{}, ips: map[string]bool{}, veths: map[string]bool{}}
	// One in the making has its namespace and maybe its address before
	// its record says so: wait (≤ 5 s) until it is complete.
	var recs []string
	for deadline := time.Now().Add(5 * time.Second); ; {
		recs, _ = filepath.Glob(filepath.Join(state, "net", "attachments", "_warm", "*.json"))
		complete := true
		for _, p := range recs {
			if b, err := os.ReadFile(p); err != nil || !strings.Contains(string(b), `"ip":`) {
				complete = false
			}
		}
		if complete || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, p := range recs {
		var r struct {
			Netns string `json:"netns"`
			IP    string `json:"ip"`
		}
		b, err := os.ReadFile(p)
		if err != nil || json.Unmarshal(b, &r) != nil {
			continue
		}
		w.netns[r.Netns] = true
		if r.IP != "" {
			w.ips[r.IP] = true
		}
		// eth0@ifN in the namespace: N is the host veth's index.
		out, err := exec.Command("nsenter", "--net="+r.Netns, "ip", "-o", "link", "show", "eth0").Output()
		if err != nil {
			continue
		}
		f := strings.Fields(string(out))
		if len(f) < 2 {
			continue
		}
		_, idx, ok := strings.Cut(strings.TrimSuffix(f[1], ":"), "@if")
		if !ok {
			continue
		}
		if host, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
			for _, l := range strings.Split(string(host), "\n") {
				if g := strings.Fields(l); len(g) > 1 && g[0] == idx+":" {
					name, _, _ := strings.Cut(strings.TrimSuffix(g[1], ":"), "@")
					w.veths[name] = true
				}
			}
		}
	}
	return w
}
