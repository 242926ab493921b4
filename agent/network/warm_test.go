package network

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// waitWarm waits for m's warm attachment to be ready and returns it.
func waitWarm(t *testing.T, m *Manager) record {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		m.warm.mu.Lock()
		r := m.warm.ready
		m.warm.mu.Unlock()
		if r != nil {
			return *r
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no warm attachment was made")
	return record{}
}

// TestWarmAttachmentIsAdoptedAndLeavesNothing: a container on the default
// network without published ports adopts the attachment made ahead, with
// its interface and address, and a new one is made; one with ports
// attaches the usual way. Close, and a crash followed by Recover, leave
// no link, mount or IP allocation behind.
func TestWarmAttachmentIsAdoptedAndLeavesNothing(t *testing.T) {
	e := newTestEnv(t, "10.201.16.0/24")
	ctx := context.Background()
	// The first attach creates the bridge every later one shares.
	e.attach(t, "warmup", "", nil)
	if err := e.m.Detach(ctx, "default", "warmup"); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, e)

	e.m.KeepWarm()
	w := waitWarm(t, e.m)
	if links := netnsLinks(t, w.NetnsPath); !slices.Contains(links, "eth0") || w.IP == "" {
		t.Fatalf("warm attachment: links %v, address %q; want eth0 with an address", links, w.IP)
	}
	a := e.attach(t, "adopter", "web", nil)
	if a.NetnsPath != w.NetnsPath {
		t.Fatalf("container namespace %s, want the warm one %s", a.NetnsPath, w.NetnsPath)
	}
	if got := strings.Join(a.Networks[0].GetAddresses(), " "); !strings.HasPrefix(got, w.IP+"/") {
		t.Errorf("container address %q, want the warm one's %s", got, w.IP)
	}
	if hosts, _ := os.ReadFile(a.HostsPath); !strings.Contains(string(hosts), w.IP) {
		t.Errorf("/etc/hosts lacks the container's address %s:\n%s", w.IP, hosts)
	}
	if members := e.m.members(DefaultNetwork); strings.Join(members, " ") != "web" {
		t.Errorf("members of the default network: %v, want only web", members)
	}
	w2 := waitWarm(t, e.m)
	if w2.NetnsPath == w.NetnsPath || w2.IP == w.IP {
		t.Errorf("the next warm attachment reuses the adopted one: %s %s", w2.NetnsPath, w2.IP)
	}
	ported := e.attach(t, "ported", "", &berthv1.NetworkConfig{Ports: []*berthv1.PortMapping{{HostPort: 18190, ContainerPort: 80}}})
	if ported.NetnsPath != e.m.netnsPath(key{"default", "ported"}) {
		t.Errorf("a container with ports adopted the warm attachment: %s", ported.NetnsPath)
	}
	for _, id := range []string{"adopter", "ported"} {
		if err := e.m.Detach(ctx, "default", id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(w.NetnsPath); !os.IsNotExist(err) {
		t.Errorf("the adopted namespace is still pinned after Detach: %v", err)
	}
	e.m.Close()
	compareSnapshots(t, "after adoption, detach and Close", before, snapshot(t, e))

	// A crash with a warm attachment made: the next start releases it.
	e.m = e.newManager(t)
	e.m.KeepWarm()
	waitWarm(t, e.m)
	e.m = e.newManager(t) // the old one is gone without Close
	if err := e.m.Recover(ctx, func(string, string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	compareSnapshots(t, "after a crash with a warm attachment and Recover", before, snapshot(t, e))
}

// TestDetachAsyncThenRemoveNetwork: a removed container's network is
// released in the background; it no longer counts as a member at once,
// and removing its network right after waits for the release instead of
// refusing or racing it. Nothing of it is left.
func TestDetachAsyncThenRemoveNetwork(t *testing.T) {
	e := newTestEnv(t, "10.201.18.0/24")
	ctx := context.Background()
	const name = "async-net"
	if _, err := e.m.CreateNetwork(ctx, CreateRequest{Name: name, Subnet: "10.201.19.0/24"}); err != nil {
		t.Fatal(err)
	}
	e.attach(t, "leaver", "leaver", &berthv1.NetworkConfig{Mode: name})
	if err := e.m.DetachAsync("default", "leaver"); err != nil {
		t.Fatal(err)
	}
	e.m.mu.Lock()
	members := e.m.members(name)
	e.m.mu.Unlock()
	if len(members) != 0 {
		t.Errorf("members right after DetachAsync: %v, want none", members)
	}
	if err := e.m.RemoveNetwork(ctx, name); err != nil {
		t.Fatalf("remove the network right after: %v", err)
	}
	leftovers(t, e, "leaver")
	if allocs := ipamAllocations(t, e); len(allocs) != 0 {
		t.Errorf("IP allocations left: %v", allocs)
	}
}
