package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func grpcurl(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("GRPCURL"); p != "" {
		return p
	}
	if p, err := filepath.Abs("../bin/tools/grpcurl"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("grpcurl")
	if err != nil {
		t.Fatal("grpcurl not found: run the tests with 'make test', which installs it into bin/tools, or set GRPCURL")
	}
	return p
}

func TestReflectionAndHealth(t *testing.T) {
	d := startDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := grpcurl(t)
	list := runCmd(ctx, nil, g, "-plaintext", "-unix", d.socket, "list")
	if list.Code != 0 {
		t.Fatalf("grpcurl list: %+v", list)
	}
	for _, svc := range []string{"berth.v1.SystemService", "berth.v1.NamespacesService", "berth.v1.ContainersService",
		"berth.v1.ImagesService", "berth.v1.TasksService", "berth.v1.EventsService", "grpc.health.v1.Health"} {
		if !strings.Contains(list.Stdout, svc+"\n") {
			t.Errorf("grpcurl list lacks %s:\n%s", svc, list.Stdout)
		}
	}
	desc := runCmd(ctx, nil, g, "-plaintext", "-unix", d.socket, "describe", "berth.v1.TasksService")
	if desc.Code != 0 || !strings.Contains(desc.Stdout, "rpc Attach ( stream .berth.v1.AttachRequest ) returns ( stream .berth.v1.AttachResponse )") {
		t.Fatalf("grpcurl describe: %+v", desc)
	}
	msg := runCmd(ctx, nil, g, "-plaintext", "-unix", d.socket, "describe", "berth.v1.ContainerSpec")
	if msg.Code != 0 || !strings.Contains(msg.Stdout, "restart_policy") {
		t.Fatalf("grpcurl describe message: %+v", msg)
	}
	health := runCmd(ctx, nil, g, "-plaintext", "-unix", d.socket, "grpc.health.v1.Health/Check")
	if health.Code != 0 || !strings.Contains(health.Stdout, `"SERVING"`) {
		t.Fatalf("health check: %+v", health)
	}
	// A real call through reflection alone, with the namespace header.
	call := runCmd(ctx, nil, g, "-plaintext", "-H", "berth-namespace: default", "-unix", d.socket, "berth.v1.SystemService/Info")
	if call.Code != 0 || !strings.Contains(call.Stdout, d.root) {
		t.Fatalf("grpcurl Info: %+v", call)
	}
}

func TestSocketIsGroupOnly(t *testing.T) {
	d := startDaemon(t)
	st, err := os.Stat(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v, want socket 0660", st.Mode())
	}
}

func TestRecordsSurviveRestart(t *testing.T) {
	d := startDaemon(t)
	d.mustCtl("namespace", "create", "team", "--label", "owner=ops")
	// A container needs its image present (its rootfs is made from it).
	seedBusybox(t, d, "team")
	ctx := context.Background()
	cc := berthv1.NewContainersServiceClient(d.conn())
	created, err := cc.CreateContainer(inNamespace(ctx, "team"), &berthv1.CreateContainerRequest{
		Name:   "web",
		Spec:   &berthv1.ContainerSpec{Image: "busybox", Cmd: []string{"httpd", "-f"}},
		Labels: map[string]string{"tier": "front"},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := created.Container
	if len(c.Id) != 64 || c.Spec.Image != "docker.io/library/busybox:latest" {
		t.Fatalf("created %+v", c)
	}
	d.restart()
	cc = berthv1.NewContainersServiceClient(d.conn())
	got, err := cc.GetContainer(inNamespace(ctx, "team"), &berthv1.GetContainerRequest{Id: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Container.Id != c.Id || got.Container.Labels["tier"] != "front" || got.Container.Spec.Cmd[1] != "-f" {
		t.Fatalf("after restart: %+v", got.Container)
	}
	// By unique prefix too, and not from another namespace.
	if _, err := cc.GetContainer(inNamespace(ctx, "team"), &berthv1.GetContainerRequest{Id: c.Id[:6]}); err != nil {
		t.Fatalf("get by prefix: %v", err)
	}
	if _, err := cc.GetContainer(ctx, &berthv1.GetContainerRequest{Id: "web"}); status.Code(err) != codes.NotFound {
		t.Fatalf("container seen from the default namespace: %v", err)
	}
	ls := d.mustCtl("namespace", "ls")
	if !strings.Contains(ls, "team") || !strings.Contains(ls, "owner=ops") || !strings.Contains(ls, "default") {
		t.Fatalf("namespace ls after restart:\n%s", ls)
	}
	// Update survives too.
	_, err = cc.UpdateContainer(inNamespace(ctx, "team"), &berthv1.UpdateContainerRequest{
		Container:  &berthv1.Container{Id: "web", Name: "web2"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	d.restart()
	cc = berthv1.NewContainersServiceClient(d.conn())
	if got, err := cc.GetContainer(inNamespace(ctx, "team"), &berthv1.GetContainerRequest{Id: "web2"}); err != nil || got.Container.Id != c.Id {
		t.Fatalf("renamed container after restart: %v %v", got, err)
	}
	// A namespace holding a container cannot be removed.
	r := d.ctl("namespace", "rm", "team")
	if r.Code != 1 || !strings.Contains(r.Stderr, `namespace "team" is not empty`) {
		t.Fatalf("rm non-empty namespace: %+v", r)
	}
}

func TestBadInputIsInvalidArgumentNamingTheField(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()
	cc := berthv1.NewContainersServiceClient(d.conn())
	ns := berthv1.NewNamespacesServiceClient(d.conn())
	spec := &berthv1.ContainerSpec{Image: "busybox"}
	long := strings.Repeat("a", 200)
	cases := []struct {
		name  string
		call  func() error
		field string
	}{
		{"id with slash", func() error {
			_, err := cc.CreateContainer(ctx, &berthv1.CreateContainerRequest{Id: "a/b", Spec: spec})
			return err
		}, "id"},
		{"id dotdot", func() error {
			_, err := cc.CreateContainer(ctx, &berthv1.CreateContainerRequest{Id: "..", Spec: spec})
			return err
		}, "id"},
		{"id traversal", func() error {
			_, err := cc.CreateContainer(ctx, &berthv1.CreateContainerRequest{Id: "../../etc", Spec: spec})
			return err
		}, "id"},
		{"id over-long", func() error {
			_, err := cc.CreateContainer(ctx, &berthv1.CreateContainerRequest{Id: long, Spec: spec})
			return err
		}, "id"},
		{"name with slash", func() error {
			_, err := cc.CreateContainer(ctx, &berthv1.CreateContainerRequest{Name: "x/y", Spec: spec})
			return err
		}, "name"},
		{"get empty id", func() error {
			_, err := cc.GetContainer(ctx, &berthv1.GetContainerRequest{Id: ""})
			return err
		}, "id"},
		{"get dotdot", func() error {
			_, err := cc.GetContainer(ctx, &berthv1.GetContainerRequest{Id: "../x"})
			return err
		}, "id"},
		{"delete over-long", func() error {
			_, err := cc.DeleteContainer(ctx, &berthv1.DeleteContainerRequest{Id: long})
			return err
		}, "id"},
		{"image missing", func() error {
			_, err := cc.CreateContainer(ctx, &berthv1.CreateContainerRequest{Spec: &berthv1.ContainerSpec{}})
			return err
		}, "spec.image"},
		{"image invalid", func() error {
			_, err := cc.CreateContainer(ctx, &berthv1.CreateContainerRequest{Spec: &berthv1.ContainerSpec{Image: "BusyBox"}})
			return err
		}, "spec.image"},
		{"restart policy", func() error {
			_, err := cc.CreateContainer(ctx, &berthv1.CreateContainerRequest{Spec: &berthv1.ContainerSpec{Image: "busybox", RestartPolicy: &berthv1.RestartPolicy{Name: "sometimes"}}})
			return err
		}, "spec.restart_policy"},
		{"namespace name", func() error {
			_, err := ns.CreateNamespace(ctx, &berthv1.CreateNamespaceRequest{Name: "../x"})
			return err
		}, "namespace"},
		{"namespace empty", func() error {
			_, err := ns.CreateNamespace(ctx, &berthv1.CreateNamespaceRequest{Name: ""})
			return err
		}, "namespace"},
		{"namespace header", func() error {
			_, err := cc.ListContainers(inNamespace(ctx, "a/b"), &berthv1.ListContainersRequest{})
			return err
		}, "namespace"},
		{"update mask", func() error {
			_, err := cc.UpdateContainer(ctx, &berthv1.UpdateContainerRequest{Container: &berthv1.Container{Id: "nope"}})
			return err
		}, "update_mask"},
	}
	for _, c := range cases {
		err := c.call()
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), c.field+" ") && !strings.HasPrefix(st.Message(), c.field+":") {
			t.Errorf("%s: got %v %q, want InvalidArgument starting with %q", c.name, st.Code(), st.Message(), c.field)
		}
	}
	// Nothing was created by any of them.
	list, err := cc.ListContainers(ctx, &berthv1.ListContainersRequest{})
	if err != nil || len(list.Containers) != 0 {
		t.Fatalf("bad input left containers: %v %v", list, err)
	}
	// Unknown namespace: NotFound, naming it.
	_, err = cc.ListContainers(inNamespace(ctx, "ghost"), &berthv1.ListContainersRequest{})
	if st := status.Convert(err); st.Code() != codes.NotFound || !strings.Contains(st.Message(), `"ghost"`) {
		t.Fatalf("unknown namespace: %v", err)
	}
	r := d.ctl("-n", "ghost", "info")
	if r.Code != 1 || !strings.Contains(r.Stderr, `namespace "ghost" not found`) {
		t.Fatalf("berthctl in unknown namespace: %+v", r)
	}
}

func TestSecondDaemonOnOneRootFails(t *testing.T) {
	d := startDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	other := filepath.Join(filepath.Dir(d.state), "state2")
	r := runCmd(ctx, nil, filepath.Join(binDir, "berthd"), "--root", d.root, "--state", other)
	lock := filepath.Join(d.root, "berthd.lock")
	if r.Code == 0 || !strings.Contains(r.Stderr, "cannot take the lock "+lock) || !strings.Contains(r.Stderr, fmt.Sprintf("pid %d", d.cmd.Process.Pid)) {
		t.Fatalf("second berthd: %+v", r)
	}
	// The first one is unharmed.
	d.mustCtl("info")
	// A second berthd on another root but the same socket fails too, and
	// leaves the first one's socket in place.
	r = runCmd(ctx, nil, filepath.Join(binDir, "berthd"), "--root", filepath.Join(filepath.Dir(d.root), "root2"), "--state", other, "--address", d.socket)
	if r.Code == 0 || !strings.Contains(r.Stderr, "in use") {
		t.Fatalf("second berthd on a live socket: %+v", r)
	}
	d.mustCtl("info")
}

func TestCorruptMetaDBIsRefusedAndUntouched(t *testing.T) {
	d := newDaemon(t)
	if err := os.MkdirAll(d.root, 0o711); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(d.root, "meta.db")
	junk := bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 8192)
	if err := os.WriteFile(db, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := runCmd(ctx, nil, filepath.Join(binDir, "berthd"), d.args()...)
	if r.Code == 0 || !strings.Contains(r.Stderr, db) || !strings.Contains(r.Stderr, "unreadable") {
		t.Fatalf("berthd on a corrupt meta.db: %+v", r)
	}
	after, err := os.ReadFile(db)
	if err != nil || !bytes.Equal(after, junk) {
		t.Fatal("berthd modified or removed the corrupt meta.db")
	}
	if _, err := os.Stat(d.socket); err == nil {
		t.Fatal("berthd left a socket behind after refusing to start")
	}
}

func TestGracefulShutdownOnSIGTERM(t *testing.T) {
	d := startDaemon(t)
	d.stop()
	if d.exitErr != nil {
		t.Fatalf("berthd exited with %v on SIGTERM:\n%s", d.exitErr, d.logs.String())
	}
	if _, err := os.Stat(d.socket); err == nil {
		t.Fatal("socket left behind after shutdown")
	}
	// The database was closed cleanly: a new berthd opens it at once.
	d.start()
	d.mustCtl("info")
}

func TestCtlWithoutDaemon(t *testing.T) {
	ctx := context.Background()
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, addr := range []string{sock, "unix://" + sock} {
		r := runCmd(ctx, nil, filepath.Join(binDir, "berthctl"), "--address", addr, "info")
		want := "cannot connect to berthd at " + sock + ": is it running?\n"
		if r.Code != 1 || r.Stderr != want {
			t.Fatalf("berthctl -a %s info: code %d stderr %q, want 1 and %q", addr, r.Code, r.Stderr, want)
		}
	}
	r := runCmd(ctx, []string{"BERTH_ADDRESS=" + sock}, filepath.Join(binDir, "berthctl"), "namespace", "ls")
	if r.Code != 1 || !strings.Contains(r.Stderr, "cannot connect to berthd at "+sock) {
		t.Fatalf("BERTH_ADDRESS: %+v", r)
	}
	r = runCmd(ctx, nil, filepath.Join(binDir, "berthctl"), "--bogus")
	if r.Code != 125 || !strings.Contains(r.Stderr, "unknown flag: --bogus") {
		t.Fatalf("unknown flag: %+v", r)
	}
}

func TestCtlVersionInfoNamespaces(t *testing.T) {
	d := startDaemon(t)
	v := d.mustCtl("version")
	if !strings.Contains(v, "Client:\n") || !strings.Contains(v, "Server:\n") || !strings.Contains(v, "API:        berth.v1") {
		t.Fatalf("version:\n%s", v)
	}
	info := d.mustCtl("info")
	for _, want := range []string{"Root Dir: " + d.root, "State Dir: " + d.state, "Cgroup Version: ", "Cgroup Driver: cgroupfs", "Snapshotter: overlay", "Containers: 0", "Images: 0"} {
		if !strings.Contains(info, want) {
			t.Errorf("info lacks %q:\n%s", want, info)
		}
	}
	var infoJSON map[string]any
	if err := json.Unmarshal([]byte(d.mustCtl("info", "--format", "json")), &infoJSON); err != nil || infoJSON["root"] != d.root {
		t.Fatalf("info json: %v %v", infoJSON, err)
	}
	d.mustCtl("namespace", "create", "alpha", "-l", "team=a")
	d.mustCtl("ns", "create", "beta")
	ls := d.mustCtl("namespace", "ls")
	lines := strings.Split(strings.TrimSpace(ls), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "alpha") {
		t.Fatalf("namespace ls:\n%s", ls)
	}
	// Columns are aligned: CREATED starts at the same offset on every line.
	col := strings.Index(lines[0], "CREATED")
	for _, l := range lines[1:] {
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Fatalf("misaligned table:\n%s", ls)
		}
	}
	if q := d.mustCtl("namespace", "ls", "-q"); q != "alpha\nbeta\ndefault\n" {
		t.Fatalf("ls -q: %q", q)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(d.mustCtl("namespace", "ls", "--format", "json")), &list); err != nil || len(list) != 3 {
		t.Fatalf("ls json: %v %v", list, err)
	}
	if tmpl := d.mustCtl("namespace", "ls", "--format", "{{.Name}}={{.labels}}"); !strings.Contains(tmpl, "alpha=map[team:a]") {
		t.Fatalf("ls template: %q", tmpl)
	}
	r := d.ctl("namespace", "create", "alpha")
	if r.Code != 1 || !strings.Contains(r.Stderr, `namespace "alpha": already exists`) {
		t.Fatalf("duplicate namespace: %+v", r)
	}
	r = d.ctl("namespace", "rm", "alpha", "nope", "beta")
	if r.Code != 1 || r.Stdout != "alpha\nbeta\n" || !strings.Contains(r.Stderr, `namespace "nope" not found`) {
		t.Fatalf("rm with one unknown: %+v", r)
	}
	if q := d.mustCtl("namespace", "ls", "-q"); q != "default\n" {
		t.Fatalf("after rm: %q", q)
	}
	comp := d.mustCtl("completion", "bash")
	if !strings.Contains(comp, "__start_berthctl") {
		t.Fatalf("bash completion script missing")
	}
}

func TestCtlEventsStream(t *testing.T) {
	d := startDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "berthctl"), "--address", d.socket, "events", "--all-namespaces", "--filter", "type=namespace")
	var out syncBuffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// Subscriptions are registered before the stream's headers; wait
	// until the agent counts ours by creating namespaces until one shows.
	for i := 0; ; i++ {
		d.mustCtl("namespace", "create", fmt.Sprintf("ev%d", i))
		time.Sleep(50 * time.Millisecond)
		if strings.Contains(out.String(), "namespace create ev") {
			break
		}
		if i > 100 {
			t.Fatalf("no event seen; output %q", out.String())
		}
	}
	d.mustCtl("namespace", "create", "last")
	d.mustCtl("namespace", "rm", "last")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "namespace delete last") {
		if time.Now().After(deadline) {
			t.Fatalf("events output lacks the delete: %q", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "namespace create last") {
		t.Fatalf("events output lacks the create: %q", out.String())
	}
}

// A subscriber that never reads does not slow the agent: other clients'
// calls go on and another subscriber misses nothing; when the stuck one
// reads at last, it learns how many events it lost.
func TestStuckSubscriberLearnsItLostEvents(t *testing.T) {
	d := startDaemon(t, withConfig("[events]\nsubscriber_buffer = 256\n"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// A fixed 64 KiB window (which turns off gRPC's dynamic window) bounds
	// what the transport may buffer for the stuck reader.
	stuckConn := d.conn(grpc.WithInitialWindowSize(65535), grpc.WithInitialConnWindowSize(65535))
	stuck, err := berthv1.NewEventsServiceClient(stuckConn).Subscribe(ctx, &berthv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stuck.Header(); err != nil {
		t.Fatal(err)
	}
	reader, err := berthv1.NewEventsServiceClient(d.conn()).Subscribe(ctx, &berthv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Header(); err != nil {
		t.Fatal(err)
	}
	const total = 4000
	readerGot := make(chan int, 1)
	go func() {
		n := 0
		for n < total {
			m, err := reader.Recv()
			if err != nil || m.GetLost() != nil {
				break
			}
			n++
		}
		readerGot <- n
	}()
	ns := berthv1.NewNamespacesServiceClient(d.conn())
	if _, err := ns.CreateNamespace(ctx, &berthv1.CreateNamespaceRequest{Name: "busy"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < total; i++ {
		labels := map[string]string{"i": fmt.Sprint(i), "pad": strings.Repeat("x", 64)}
		if _, err := ns.UpdateNamespace(ctx, &berthv1.UpdateNamespaceRequest{Name: "busy", Labels: labels}); err != nil {
			t.Fatalf("call %d while a subscriber is stuck: %v", i, err)
		}
	}
	if n := <-readerGot; n != total {
		t.Fatalf("the reading subscriber got %d of %d events", n, total)
	}
	var events, lost uint64
	for events+lost < total {
		m, err := stuck.Recv()
		if err != nil {
			t.Fatalf("after %d events and %d lost: %v", events, lost, err)
		}
		if l := m.GetLost(); l != nil {
			lost += l.Count
		} else {
			events++
		}
	}
	if lost == 0 || events+lost != total {
		t.Fatalf("stuck subscriber: %d events, %d lost; want some lost and a total of %d", events, lost, total)
	}
	t.Logf("stuck subscriber: %d events delivered, %d reported lost", events, lost)
}
