package network

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// Begin, Wait and Cancel: the runtime gets the namespace and the files at
// once while CNI ADD runs; the container's address reaches its /etc/hosts
// by Wait, in place, so a bind mount made before Wait sees it.

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

// links lists the interfaces of a pinned namespace.
func netnsLinks(t *testing.T, path string) []string {
	t.Helper()
	var names []string
	err := InNetns(path, func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestBeginHandsOutPathsAndWaitCompletesInPlace(t *testing.T) {
	e := newTestEnv(t, "10.201.12.0/24")
	ctx := context.Background()
	name := "tbegin-" + randHex(3)
	if _, err := e.m.CreateNetwork(ctx, CreateRequest{Name: name, Subnet: "10.201.13.0/24"}); err != nil {
		t.Fatal(err)
	}
	peer := e.attach(t, "peer", "peer", &berthv1.NetworkConfig{Mode: name})
	e.ids["late"] = true
	p, err := e.m.Begin(ctx, AttachRequest{Namespace: "default", ContainerID: "late", Name: "late", Config: &berthv1.NetworkConfig{Mode: name}})
	if err != nil {
		t.Fatal(err)
	}
	pre := p.Attachment
	if pre.NetnsPath == "" || len(pre.Networks) != 0 {
		t.Fatalf("Begin's attachment: netns %q, networks %v; want a namespace and no networks yet", pre.NetnsPath, pre.Networks)
	}
	// The files the spec names exist before ADD is joined; the namespace
	// is made alongside ADD, and pinned once Wait returns.
	for _, f := range []string{pre.HostsPath, pre.HostnamePath, pre.ResolvConfPath} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("after Begin: %v", err)
		}
	}
	ino := inode(t, pre.HostsPath)
	att, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(mountsUnder(t, e.dir), pre.NetnsPath) {
		t.Errorf("namespace %s is not pinned after Wait", pre.NetnsPath)
	}
	if len(att.Networks) != 1 || len(att.Networks[0].Addresses) == 0 {
		t.Fatalf("Wait's attachment has no address: %v", att.Networks)
	}
	ip := strings.Split(att.Networks[0].Addresses[0], "/")[0]
	if got := lookupHosts(t, pre.HostsPath, "late"); got != ip {
		t.Errorf("/etc/hosts has late at %q after Wait; want %s", got, ip)
	}
	if got := inode(t, pre.HostsPath); got != ino {
		t.Errorf("/etc/hosts was replaced (inode %d, was %d): a bind mount made before Wait would not see it", got, ino)
	}
	if got := lookupHosts(t, peer.HostsPath, "late"); got != ip {
		t.Errorf("the peer's /etc/hosts has late at %q; want %s", got, ip)
	}
	if links := netnsLinks(t, pre.NetnsPath); len(links) != 2 {
		t.Errorf("links in the namespace after Wait: %v; want lo and eth0", links)
	}
	if again, err := p.Wait(ctx); err != nil || again != att {
		t.Errorf("a second Wait: %v, %v; want the same attachment", again, err)
	}
	for _, id := range []string{"late", "peer"} {
		if err := e.m.Detach(ctx, "default", id); err != nil {
			t.Fatal(err)
		}
	}
}

// leftovers reports a container's files, records and namespaces.
func leftovers(t *testing.T, e *testEnv, id string) {
	t.Helper()
	for _, d := range []string{e.m.netnsDir(), e.m.recordsDir(), e.m.filesDir()} {
		filepath.WalkDir(d, func(p string, de fs.DirEntry, err error) error {
			if err == nil && strings.Contains(p, id) {
				t.Errorf("%s left behind", p)
			}
			return nil
		})
	}
}

func TestFailedAddAfterBeginLeavesNothing(t *testing.T) {
	e := newTestEnv(t, "10.201.14.0/24")
	e.ids["doomed"] = true
	before := snapshot(t, e)
	// Without the plugins, Begin succeeds (the namespace, the files, the
	// port reservation and the record exist) and ADD fails behind it.
	e.m.Close()
	e.cfg.BinDirs = []string{t.TempDir()}
	e.m = e.newManager(t)
	ctx := context.Background()
	p, err := e.m.Begin(ctx, AttachRequest{Namespace: "default", ContainerID: "doomed",
		Config: &berthv1.NetworkConfig{Ports: []*berthv1.PortMapping{{HostPort: 18096, ContainerPort: 80}}}})
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	if _, err := p.Wait(ctx); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "doomed") {
		t.Fatalf("Wait without plugins: %v; want a failed precondition naming the container", err)
	}
	if _, err := e.m.Get("default", "doomed"); !errdefs.IsNotFound(err) {
		t.Errorf("Get after a failed Wait: %v; want not found", err)
	}
	if err := p.Cancel(ctx); err != nil {
		t.Errorf("Cancel after a failed Wait: %v", err)
	}
	after := snapshot(t, e)
	before.iptables, after.iptables = "", "" // the network's shared rules
	compareSnapshots(t, "after a failed ADD", before, after)
	leftovers(t, e, "doomed")
	l, err := net.Listen("tcp", ":18096")
	if err != nil {
		t.Fatalf("port reservation leaked: %v", err)
	}
	l.Close()
}

func TestCancelDuringAddLeavesNothing(t *testing.T) {
	e := newTestEnv(t, "10.201.15.0/24")
	ctx := context.Background()
	e.attach(t, "warmup", "", nil) // the bridge, shared by all
	if err := e.m.Detach(ctx, "default", "warmup"); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, e)
	for i := range 3 {
		id := fmt.Sprintf("given-up%d", i)
		e.ids[id] = true
		p, err := e.m.Begin(ctx, AttachRequest{Namespace: "default", ContainerID: id})
		if err != nil {
			t.Fatal(err)
		}
		// At once, while ADD runs: a shim that failed to start.
		if err := p.Cancel(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(ctx); !errors.Is(err, errdefs.ErrAborted) {
			t.Errorf("Wait after Cancel: %v; want aborted", err)
		}
		leftovers(t, e, id)
	}
	compareSnapshots(t, "after cancelled attaches", before, snapshot(t, e))
}
