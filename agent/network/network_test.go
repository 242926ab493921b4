package network

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// The tests create real namespaces, bridges, veths and iptables rules with
// the Debian CNI plugins, so they need root and /usr/lib/cni. Traffic goes
// only to 127.0.0.1 and to addresses inside the namespaces they create.
// Every test uses its own bridge name and subnet (10.201.0.0/16), so it
// never touches a real berth0, and tears everything down even on failure.

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("network tests need root: they create network namespaces, bridges and iptables rules (run 'sudo make test')")
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Fatal("network tests need the CNI plugins in /usr/lib/cni (apt-get install containernetworking-plugins; make test does it)")
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type testEnv struct {
	dir     string
	cfg     Config
	m       *Manager
	bridges []string
	// ids are the container IDs the test attached, for snapshot.
	ids map[string]bool
}

// newTestEnv builds a Manager in a private directory, with a default
// network on bridge "bt<random>" and the given subnet.
func newTestEnv(t testing.TB, subnet string) *testEnv {
	t.Helper()
	requireRoot(t)
	dir, err := os.MkdirTemp("", "berth-net-")
	if err != nil {
		t.Fatal(err)
	}
	resolv := filepath.Join(dir, "host-resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 127.0.0.53\nsearch example.test\noptions edns0\n"), 0o644)
	e := &testEnv{dir: dir, ids: map[string]bool{}}
	e.cfg = Config{
		ConfDir:        filepath.Join(dir, "conf"),
		BinDirs:        []string{"/usr/lib/cni", "/opt/cni/bin"},
		StateDir:       filepath.Join(dir, "state"),
		DefaultBridge:  "bt" + randHex(4),
		DefaultSubnet:  subnet,
		SubnetPool:     "10.201.128.0/17",
		FallbackDNS:    []string{"8.8.8.8", "8.8.4.4"},
		HostResolvConf: resolv,
	}
	e.bridges = append(e.bridges, e.cfg.DefaultBridge)
	t.Cleanup(func() { e.cleanup(t) })
	e.m = e.newManager(t)
	return e
}

func (e *testEnv) newManager(t testing.TB) *Manager {
	t.Helper()
	m, err := New(e.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// cleanup releases whatever a failed test left: every attachment, then
// the bridges, then the directory.
func (e *testEnv) cleanup(t testing.TB) {
	if e.m != nil {
		if err := e.m.Recover(context.Background(), func(string, string) bool { return false }); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		e.m.Close()
	}
	// Networks left by the test: their iptables rules and bridges.
	if e.m != nil {
		nets, _ := e.m.loadNetworks()
		for _, n := range nets {
			e.m.removeRules(context.Background(), n)
			e.bridges = append(e.bridges, n.Info.Bridge)
		}
	}
	for _, br := range e.bridges {
		if err := deleteBridge(br); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	if rules, err := exec.Command("iptables-save").Output(); err == nil {
		for _, br := range e.bridges {
			if strings.Contains(string(rules), br) {
				t.Errorf("cleanup: iptables rules for bridge %s remain", br)
			}
		}
	}
	// Recover unmounted the namespaces; if it failed, force it, and never
	// RemoveAll over a mount.
	for _, mnt := range strings.Fields(mountsUnder(t, e.dir)) {
		t.Errorf("cleanup: %s was still mounted", mnt)
		unix.Unmount(mnt, unix.MNT_DETACH)
	}
	if mountsUnder(t, e.dir) == "" {
		os.RemoveAll(e.dir)
	}
}

func mountsUnder(t testing.TB, dir string) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir) {
			out = append(out, f[4])
		}
	}
	return strings.Join(out, "\n")
}

func (e *testEnv) attach(t testing.TB, id, name string, cfg *berthv1.NetworkConfig) *Attachment {
	t.Helper()
	e.ids[id] = true
	a, err := e.m.Attach(context.Background(), AttachRequest{Namespace: "default", ContainerID: id, Name: name, Config: cfg})
	if err != nil {
		t.Fatalf("attach %s: %v", id, err)
	}
	return a
}

// serveHTTP runs an HTTP server on port inside the pinned namespace until
// the test ends.
func serveHTTP(t *testing.T, netns string, port int, body string) {
	t.Helper()
	var l net.Listener
	err := InNetns(netns, func() error {
		var err error
		l, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) })}
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
}

// waitListening waits until something in the namespace accepts on addr.
func waitListening(t *testing.T, netns, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := InNetns(netns, func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s in %s: %v", addr, netns, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestBridgePublishedPortsAnswerOnLocalhost(t *testing.T) {
	e := newTestEnv(t, "10.201.1.0/24")
	a := e.attach(t, "web1", "web", &berthv1.NetworkConfig{Ports: []*berthv1.PortMapping{
		{HostPort: 18080, ContainerPort: 80},
		{ContainerPort: 81}, // a free host port chosen by berthd
		{HostIp: "127.0.0.1", HostPort: 18082, ContainerPort: 80, Protocol: "tcp"},
	}})
	if len(a.Networks) != 1 || len(a.Networks[0].Addresses) != 1 || !strings.HasPrefix(a.Networks[0].Addresses[0], "10.201.1.") ||
		a.Networks[0].Gateway != "10.201.1.1" || a.Networks[0].MacAddress == "" || a.Networks[0].Interface != "eth0" {
		t.Fatalf("attachment %v: want eth0 with an address in 10.201.1.0/24, gateway 10.201.1.1 and a MAC", a.Networks)
	}
	if len(a.Ports) != 3 || a.Ports[1].HostPort == 0 || a.Ports[1].Protocol != "tcp" {
		t.Fatalf("ports %v: want three, the second with a chosen host port", a.Ports)
	}
	// Port 80 is a separate process in the namespace, as a container's
	// server would be: busybox httpd entered with nsenter.
	www := t.TempDir()
	os.WriteFile(filepath.Join(www, "index.html"), []byte("hello from 80"), 0o644)
	httpd := exec.Command("nsenter", "--net="+a.NetnsPath, "busybox", "httpd", "-f", "-p", "80", "-h", www)
	if err := httpd.Start(); err != nil {
		t.Fatalf("busybox httpd in the container's namespace (apt-get install busybox-static): %v", err)
	}
	t.Cleanup(func() { httpd.Process.Kill(); httpd.Wait() })
	waitListening(t, a.NetnsPath, "127.0.0.1:80")
	serveHTTP(t, a.NetnsPath, 81, "hello from 81")
	for url, want := range map[string]string{
		"http://127.0.0.1:18080/":                                "hello from 80",
		fmt.Sprintf("http://127.0.0.1:%d/", a.Ports[1].HostPort): "hello from 81",
		"http://127.0.0.1:18082/":                                "hello from 80",
	} {
		got, err := httpGet(url)
		if err != nil || got != want {
			t.Errorf("GET %s = %q, %v; want %q", url, got, err, want)
		}
	}
	// What a user would type (curl is not a test package; the Go client
	// above already made the same request).
	if curl, err := exec.LookPath("curl"); err == nil {
		if out, err := exec.Command(curl, "-sS", "-m", "5", "http://127.0.0.1:18080/").CombinedOutput(); err != nil || string(out) != "hello from 80" {
			t.Errorf("curl http://127.0.0.1:18080/: %q, %v", out, err)
		}
	}
	// The container's own address answers from the host too.
	ip := strings.Split(a.Networks[0].Addresses[0], "/")[0]
	if got, err := httpGet("http://" + ip + ":80/"); err != nil || got != "hello from 80" {
		t.Errorf("GET container address %s = %q, %v", ip, got, err)
	}
	if err := e.m.Detach(context.Background(), "default", "web1"); err != nil {
		t.Fatal(err)
	}
	// The port is free again once the container is gone.
	l, err := net.Listen("tcp", "127.0.0.1:18080")
	if err != nil {
		t.Fatalf("port 18080 still held after detach: %v", err)
	}
	l.Close()
}

func TestPortInUseIsRefusedAndLeavesNothing(t *testing.T) {
	e := newTestEnv(t, "10.201.2.0/24")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := uint32(l.Addr().(*net.TCPAddr).Port)
	_, err = e.m.Attach(context.Background(), AttachRequest{Namespace: "default", ContainerID: "busy",
		Config: &berthv1.NetworkConfig{Ports: []*berthv1.PortMapping{{HostPort: port, ContainerPort: 80}}}})
	if !errors.Is(err, errdefs.ErrAlreadyExists) || !strings.Contains(err.Error(), fmt.Sprint(port)) {
		t.Fatalf("attach with a taken port: %v; want ErrAlreadyExists naming port %d", err, port)
	}
	// A second container may not take a port the first one published.
	e.attach(t, "first", "", &berthv1.NetworkConfig{Ports: []*berthv1.PortMapping{{HostPort: 18090, ContainerPort: 80}}})
	_, err = e.m.Attach(context.Background(), AttachRequest{Namespace: "default", ContainerID: "second",
		Config: &berthv1.NetworkConfig{Ports: []*berthv1.PortMapping{{HostPort: 18090, ContainerPort: 80}}}})
	if !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second container on port 18090: %v; want ErrAlreadyExists", err)
	}
	for _, id := range []string{"busy", "second"} {
		if _, err := os.Stat(e.m.netnsPath(key{"default", id})); err == nil {
			t.Errorf("refused container %s left a netns", id)
		}
		if _, err := e.m.Get("default", id); !errdefs.IsNotFound(err) {
			t.Errorf("refused container %s left an attachment: %v", id, err)
		}
	}
	if n := ipamAllocations(t, e); len(n) != 1 {
		t.Errorf("IP allocations %v: want only the first container's", n)
	}
}

func TestUserNetworkPeersReachEachOtherByName(t *testing.T) {
	e := newTestEnv(t, "10.201.3.0/24")
	ctx := context.Background()
	name := "tnet-" + randHex(3)
	n, err := e.m.CreateNetwork(ctx, CreateRequest{Name: name, Subnet: "10.201.4.0/24", Labels: map[string]string{"team": "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if n.Subnet != "10.201.4.0/24" || n.Gateway != "10.201.4.1" || n.Driver != "bridge" || n.Labels["team"] != "a" || len(n.Bridge) > 15 {
		t.Fatalf("network %v", n)
	}
	if _, err := e.m.CreateNetwork(ctx, CreateRequest{Name: name}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second create: %v; want ErrAlreadyExists", err)
	}
	if _, err := e.m.CreateNetwork(ctx, CreateRequest{Name: "other", Subnet: "10.201.4.128/25"}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("overlapping subnet: %v; want ErrAlreadyExists", err)
	}
	web := e.attach(t, "web-id", "web", &berthv1.NetworkConfig{Mode: name, Aliases: []string{"www"}})
	cli := e.attach(t, "cli-id", "client", &berthv1.NetworkConfig{Mode: name, ExtraHosts: []string{"db.test:10.201.4.99"}})

	webIP := strings.Split(web.Networks[0].Addresses[0], "/")[0]
	cliIP := strings.Split(cli.Networks[0].Addresses[0], "/")[0]
	if got := lookupHosts(t, cli.HostsPath, "web"); got != webIP {
		t.Fatalf("client's /etc/hosts has web at %q; want %s", got, webIP)
	}
	if got := lookupHosts(t, cli.HostsPath, "www"); got != webIP {
		t.Errorf("alias www at %q; want %s", got, webIP)
	}
	if got := lookupHosts(t, cli.HostsPath, "db.test"); got != "10.201.4.99" {
		t.Errorf("--add-host db.test at %q", got)
	}
	// web joined first; its hosts file learned about client in place.
	if got := lookupHosts(t, web.HostsPath, "client"); got != cliIP {
		t.Fatalf("web's /etc/hosts has client at %q; want %s", got, cliIP)
	}
	if got := lookupHosts(t, web.HostsPath, "web"); got != webIP {
		t.Errorf("web's own name at %q", got)
	}

	// Connect from client's namespace to web by the address its hosts file gives.
	serveHTTP(t, web.NetnsPath, 8080, "web here")
	var got string
	err = InNetns(cli.NetnsPath, func() error {
		c, err := net.DialTimeout("tcp", lookupHosts(t, cli.HostsPath, "web")+":8080", 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	if err != nil || !strings.HasSuffix(got, "web here") {
		t.Fatalf("client → web: %q, %v", got, err)
	}

	g, err := e.m.GetNetwork(ctx, name)
	if err != nil || strings.Join(g.Containers, ",") != "client,web" {
		t.Fatalf("network containers %v, %v", g.GetContainers(), err)
	}
	if err := e.m.RemoveNetwork(ctx, name); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "client") {
		t.Fatalf("remove while in use: %v; want FailedPrecondition naming the containers", err)
	}
	// When client leaves, web's hosts file forgets it.
	st1, _ := os.Stat(web.HostsPath)
	if err := e.m.Detach(ctx, "default", "cli-id"); err != nil {
		t.Fatal(err)
	}
	if got := lookupHosts(t, web.HostsPath, "client"); got != "" {
		t.Errorf("web's hosts still lists client at %s", got)
	}
	st2, _ := os.Stat(web.HostsPath)
	if !os.SameFile(st1, st2) {
		t.Error("the hosts file was replaced, not rewritten in place: a bind mount would not see the change")
	}
	if err := e.m.Detach(ctx, "default", "web-id"); err != nil {
		t.Fatal(err)
	}
	if _, err := net.InterfaceByName(n.Bridge); err != nil {
		t.Fatalf("bridge %s of a used network: %v", n.Bridge, err)
	}
	if err := e.m.RemoveNetwork(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := net.InterfaceByName(n.Bridge); err == nil {
		t.Errorf("bridge %s still exists after network rm", n.Bridge)
	}
	if rules, _ := exec.Command("iptables-save").Output(); strings.Contains(string(rules), n.Bridge) {
		t.Errorf("iptables rules of %s remain after network rm", n.Bridge)
	}
	if err := e.m.RemoveNetwork(ctx, DefaultNetwork); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("removing the default network: %v", err)
	}
	list, _ := e.m.ListNetworks(ctx)
	if len(list) != 1 || list[0].Name != DefaultNetwork {
		t.Errorf("networks after rm: %v", list)
	}
}

// lookupHosts resolves name the way a libc resolver reads /etc/hosts.
func lookupHosts(t *testing.T, path, name string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		for _, n := range fields[1:] {
			if n == name {
				return fields[0]
			}
		}
	}
	return ""
}

func TestNoneHasOnlyLoopbackAndHostAttachesNothing(t *testing.T) {
	e := newTestEnv(t, "10.201.5.0/24")
	a := e.attach(t, "quiet", "quiet", &berthv1.NetworkConfig{Mode: "none"})
	if len(a.Networks) != 0 || a.NetnsPath == "" {
		t.Fatalf("none: %+v", a)
	}
	var names []string
	err := InNetns(a.NetnsPath, func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, fmt.Sprintf("%s up=%v", i.Name, i.Flags&net.FlagUp != 0))
		}
		return err
	})
	if err != nil || strings.Join(names, ",") != "lo up=true" {
		t.Fatalf("interfaces in a none namespace: %v, %v; want only lo, up", names, err)
	}
	resolv, _ := os.ReadFile(a.ResolvConfPath)
	if !strings.Contains(string(resolv), "nameserver 8.8.8.8") || strings.Contains(string(resolv), "127.0.0.53") ||
		!strings.Contains(string(resolv), "search example.test") || !strings.Contains(string(resolv), "options edns0") {
		t.Errorf("resolv.conf from a host with a loopback resolver:\n%s", resolv)
	}
	if b, _ := os.ReadFile(a.HostnamePath); string(b) != "quiet\n" {
		t.Errorf("hostname file %q", b)
	}

	h := e.attach(t, "hosty", "", &berthv1.NetworkConfig{Mode: "host", Dns: []string{"192.0.2.53"}, DnsSearch: []string{"corp.test"}, DnsOptions: []string{"ndots:2"}})
	if h.NetnsPath != "" || len(h.Networks) != 0 {
		t.Fatalf("host mode attached something: %+v", h)
	}
	resolv, _ = os.ReadFile(h.ResolvConfPath)
	if want := "nameserver 192.0.2.53\nsearch corp.test\noptions ndots:2\n"; !strings.HasSuffix(string(resolv), want) {
		t.Errorf("resolv.conf with --dns flags:\n%s\nwant it to end with\n%s", resolv, want)
	}
	if _, err := e.m.Attach(context.Background(), AttachRequest{Namespace: "default", ContainerID: "bad",
		Config: &berthv1.NetworkConfig{Mode: "host", Ports: []*berthv1.PortMapping{{ContainerPort: 80}}}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("ports in host mode: %v", err)
	}
	if _, err := e.m.Attach(context.Background(), AttachRequest{Namespace: "default", ContainerID: "bad",
		Config: &berthv1.NetworkConfig{Mode: "nosuchnet"}}); !errdefs.IsNotFound(err) {
		t.Errorf("unknown network: %v", err)
	}
	if _, err := e.m.Attach(context.Background(), AttachRequest{Namespace: "default", ContainerID: "../evil"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad id: %v", err)
	}
	if _, err := e.m.Attach(context.Background(), AttachRequest{Namespace: "default", ContainerID: "bad", Hostname: "evil\n1.2.3.4 bank"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("hostname with a newline: %v", err)
	}
	for _, id := range []string{"quiet", "hosty"} {
		if err := e.m.Detach(context.Background(), "default", id); err != nil {
			t.Fatal(err)
		}
		if err := e.m.Detach(context.Background(), "default", id); err != nil {
			t.Fatalf("second detach of %s: %v", id, err)
		}
	}
}

// hostSnapshot is what a leak would change on the host.
type hostSnapshot struct {
	links, iptables, mounts string
	ipam                    []string
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// snapshot records what belongs to this test: the ports of its bridge,
// iptables lines naming its bridge, its subnet or one of its containers'
// CNI IDs (so other suites changing iptables at the same time do not
// disturb it), its mounts and its host-local allocations.
func snapshot(t *testing.T, e *testEnv) hostSnapshot {
	t.Helper()
	links, err := exec.Command("ip", "-o", "link", "show", "master", e.cfg.DefaultBridge).Output()
	if err != nil && !strings.Contains(err.Error(), "exit status") {
		t.Fatal(err)
	}
	var ls []string
	for _, l := range strings.Split(string(links), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			ls = append(ls, strings.TrimSuffix(f[1], ":"))
		}
	}
	sort.Strings(ls)
	ipt, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatal(err)
	}
	subnet := e.cfg.DefaultSubnet[:strings.LastIndex(e.cfg.DefaultSubnet, ".")+1] // "10.201.6."
	var rules []string
	for _, l := range strings.Split(string(ipt), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		mine := strings.Contains(l, e.cfg.DefaultBridge) || strings.Contains(l, subnet)
		for id := range e.ids {
			mine = mine || strings.Contains(l, cniID(key{"default", id}))
		}
		if mine {
			rules = append(rules, counters.ReplaceAllString(l, ""))
		}
	}
	return hostSnapshot{links: strings.Join(ls, " "), iptables: strings.Join(rules, "\n"), mounts: mountsUnder(t, e.dir), ipam: ipamAllocations(t, e)}
}

func ipamAllocations(t testing.TB, e *testEnv) []string {
	var out []string
	filepath.WalkDir(e.m.ipamDir(), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && net.ParseIP(d.Name()) != nil {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func compareSnapshots(t *testing.T, what string, before, after hostSnapshot) {
	t.Helper()
	if before.links != after.links {
		t.Errorf("%s: links changed:\nbefore %s\nafter  %s", what, before.links, after.links)
	}
	if before.iptables != after.iptables {
		t.Errorf("%s: iptables changed:\nbefore:\n%s\nafter:\n%s", what, before.iptables, after.iptables)
	}
	if before.mounts != after.mounts {
		t.Errorf("%s: mounts changed:\nbefore %q\nafter  %q", what, before.mounts, after.mounts)
	}
	if strings.Join(before.ipam, " ") != strings.Join(after.ipam, " ") {
		t.Errorf("%s: IP allocations changed:\nbefore %v\nafter  %v", what, before.ipam, after.ipam)
	}
}

func TestNoLeaksAfterCyclesAndCrash(t *testing.T) {
	e := newTestEnv(t, "10.201.6.0/24")
	ctx := context.Background()
	ports := func(i int) *berthv1.NetworkConfig {
		return &berthv1.NetworkConfig{Ports: []*berthv1.PortMapping{{HostPort: uint32(18100 + i%50), ContainerPort: 80}, {ContainerPort: 53, Protocol: "udp"}}}
	}
	// The first attach creates what every later one shares: the bridge
	// and the plugins' top-level iptables chains. Snapshot after it.
	e.attach(t, "warmup", "", ports(0))
	if err := e.m.Detach(ctx, "default", "warmup"); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, e)
	for i := range 100 {
		id := fmt.Sprintf("cycle%d", i)
		var cfg *berthv1.NetworkConfig
		if i%10 == 0 {
			cfg = ports(i) // portmap costs ~0.5 s per cycle here: every tenth
		}
		e.attach(t, id, "", cfg)
		if err := e.m.Detach(ctx, "default", id); err != nil {
			t.Fatal(err)
		}
	}
	compareSnapshots(t, "after 100 attach/detach cycles", before, snapshot(t, e))

	// A crash: attachments left behind, berthd gone without Detach.
	for i := range 3 {
		e.attach(t, fmt.Sprintf("crash%d", i), "", ports(i))
	}
	e.attach(t, "crashnone", "", &berthv1.NetworkConfig{Mode: "none"})
	// Also a crash between the record and CNI ADD.
	e.ids["halfway"] = true
	e.m.mu.Lock()
	r := &record{Namespace: "default", ID: "halfway", Mode: "bridge", Network: DefaultNetwork,
		ConfList: e.m.records[key{"default", "crash0"}].ConfList, CNIID: cniID(key{"default", "halfway"}), IfName: "eth0",
		NetnsPath: e.m.netnsPath(key{"default", "halfway"})}
	e.m.saveRecord(r)
	e.m.mu.Unlock()
	if during := snapshot(t, e); during.links == before.links || len(during.ipam) != 3 || during.iptables == before.iptables {
		t.Fatalf("the crash setup did not create anything the snapshot sees: links %s, ipam %v, iptables\n%s", during.links, during.ipam, during.iptables)
	}
	e.m.Close() // release port reservations, as process exit would
	e.m = e.newManager(t)
	// A second crashed attach of a container that still exists: Attach
	// itself starts over.
	e.m.mu.Lock()
	r2 := *e.m.records[key{"default", "halfway"}]
	r2.ID, r2.CNIID, r2.NetnsPath = "again", cniID(key{"default", "again"}), e.m.netnsPath(key{"default", "again"})
	e.ids["again"] = true
	e.m.saveRecord(&r2)
	e.m.records[key{"default", "again"}] = &r2
	e.m.mu.Unlock()
	e.attach(t, "again", "", nil)
	if err := e.m.Detach(ctx, "default", "again"); err != nil {
		t.Fatal(err)
	}
	// live keeps one container, which must survive recovery intact; the
	// unfinished attach of "halfway" goes although live says yes to it.
	e.attach(t, "survivor", "", nil)
	if err := e.m.Recover(ctx, func(ns, id string) bool { return id == "survivor" || id == "halfway" }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Get("default", "survivor"); err != nil {
		t.Fatalf("recover removed a live container's network: %v", err)
	}
	if _, err := os.Stat(e.m.recordPath(key{"default", "halfway"})); err == nil {
		t.Error("Recover kept the record of an attach that never finished")
	}
	if err := e.m.Detach(ctx, "default", "survivor"); err != nil {
		t.Fatal(err)
	}
	compareSnapshots(t, "after a crash and Recover", before, snapshot(t, e))
}

func BenchmarkAttachDetach(b *testing.B) {
	for i, mode := range []string{"none", "bridge", "bridge+port"} {
		b.Run(mode, func(b *testing.B) {
			e := newTestEnv(b, fmt.Sprintf("10.201.%d.0/24", 20+i))
			ctx := context.Background()
			cfg := &berthv1.NetworkConfig{Mode: mode}
			if mode == "bridge+port" {
				cfg = &berthv1.NetworkConfig{Ports: []*berthv1.PortMapping{{HostPort: 18200, ContainerPort: 80}}}
			}
			var attach time.Duration
			for n := 0; b.Loop(); n++ {
				id := fmt.Sprintf("bench%d", n)
				start := time.Now()
				if _, err := e.m.Attach(ctx, AttachRequest{Namespace: "default", ContainerID: id, Config: cfg}); err != nil {
					b.Fatal(err)
				}
				attach += time.Since(start)
				if err := e.m.Detach(ctx, "default", id); err != nil {
					b.Fatal(err)
				}
			}
			// attach-ms is what a container start pays; ms/op adds the
			// teardown at container removal.
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
			b.ReportMetric(float64(attach.Microseconds())/1000/float64(b.N), "attach-ms/op")
		})
	}
}

func TestFailedAttachLeavesNothing(t *testing.T) {
	e := newTestEnv(t, "10.201.7.0/24")
	e.ids["doomed"] = true
	before := snapshot(t, e)
	// A CNI bin dir without the plugins makes CNI ADD fail after the
	// namespace, the port reservation and the record exist.
	e.m.Close()
	e.cfg.BinDirs = []string{t.TempDir()}
	e.m = e.newManager(t)
	_, err := e.m.Attach(context.Background(), AttachRequest{Namespace: "default", ContainerID: "doomed",
		Config: &berthv1.NetworkConfig{Ports: []*berthv1.PortMapping{{HostPort: 18095, ContainerPort: 80}}}})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "doomed") || !strings.Contains(err.Error(), "bridge") || !strings.Contains(err.Error(), "bin_dirs") {
		t.Fatalf("attach without plugins: %v; want an error naming the container and the plugin", err)
	}
	after := snapshot(t, e)
	// The failed attempt may have installed the network's shared
	// iptables rules; they are not per container.
	before.iptables, after.iptables = "", ""
	compareSnapshots(t, "after a failed attach", before, after)
	// Per-namespace directories may stay (removing them races with other
	// attaches); nothing of the container may.
	for _, d := range []string{e.m.netnsDir(), e.m.recordsDir(), e.m.filesDir()} {
		filepath.WalkDir(d, func(p string, de fs.DirEntry, err error) error {
			if err == nil && (!de.IsDir() || strings.Contains(p, "doomed")) {
				t.Errorf("%s left after a failed attach", p)
			}
			return nil
		})
	}
	l, err := net.Listen("tcp", ":18095")
	if err != nil {
		t.Fatalf("port reservation leaked: %v", err)
	}
	l.Close()
}

func TestConcurrentPeersAllSeeEachOther(t *testing.T) {
	e := newTestEnv(t, "10.201.8.0/24")
	ctx := context.Background()
	name := "tconc-" + randHex(3)
	if _, err := e.m.CreateNetwork(ctx, CreateRequest{Name: name, Subnet: "10.201.9.0/24"}); err != nil {
		t.Fatal(err)
	}
	const n = 6
	atts := make([]*Attachment, n)
	errc := make(chan error, n)
	for i := range n {
		go func() {
			var err error
			atts[i], err = e.m.Attach(ctx, AttachRequest{Namespace: "default", ContainerID: fmt.Sprintf("c%d", i), Name: fmt.Sprintf("peer%d", i),
				Config: &berthv1.NetworkConfig{Mode: name}})
			errc <- err
		}()
	}
	for range n {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	ips := map[string]bool{}
	for i, a := range atts {
		ip := strings.Split(a.Networks[0].Addresses[0], "/")[0]
		ips[ip] = true
		for j := range n {
			if got := lookupHosts(t, atts[j].HostsPath, fmt.Sprintf("peer%d", i)); got != ip {
				t.Errorf("peer%d's /etc/hosts has peer%d at %q; want %s", j, i, got, ip)
			}
		}
	}
	if len(ips) != n {
		t.Errorf("addresses not unique: %v", ips)
	}
	for i := range n {
		go func() { errc <- e.m.Detach(ctx, "default", fmt.Sprintf("c%d", i)) }()
	}
	for range n {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if g, _ := e.m.GetNetwork(ctx, name); len(g.Containers) != 0 {
		t.Errorf("members after all detached: %v", g.Containers)
	}
}

func TestInternalNetworkHasNoWayOut(t *testing.T) {
	e := newTestEnv(t, "10.201.10.0/24")
	ctx := context.Background()
	name := "tint-" + randHex(3)
	n, err := e.m.CreateNetwork(ctx, CreateRequest{Name: name, Subnet: "10.201.11.0/24", Internal: true})
	if err != nil || !n.Internal {
		t.Fatalf("create internal: %v %v", n, err)
	}
	a := e.attach(t, "inside", "inside", &berthv1.NetworkConfig{Mode: name})
	routes := map[string]bool{}
	err = InNetns(a.NetnsPath, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/route")
		for _, l := range strings.Split(string(b), "\n")[1:] {
			if f := strings.Fields(l); len(f) > 1 {
				routes[f[1]] = true
			}
		}
		return err
	})
	if err != nil || routes["00000000"] || len(routes) != 1 {
		t.Fatalf("routes in an internal network's container: %v, %v; want only the subnet", routes, err)
	}
	rules, _ := exec.Command("iptables-save").Output()
	if strings.Contains(string(rules), "-s 10.201.11.0/24") || !strings.Contains(string(rules), "-i "+n.Bridge+" -o "+n.Bridge) {
		t.Errorf("an internal network must not be masqueraded nor forwarded out, only within its bridge:\n%s", rules)
	}
	if err := e.m.Detach(ctx, "default", "inside"); err != nil {
		t.Fatal(err)
	}
}
