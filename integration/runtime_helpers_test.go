package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/integration/fixture"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// rt is a berthd with the busybox image, driven through the gRPC API.
type rt struct {
	t        testing.TB
	d        *daemon
	cgParent string
	cc       berthv1.ContainersServiceClient
	tc       berthv1.TasksServiceClient
}

// startRuntime starts a berthd with a private cgroup parent and the
// busybox image. Its cleanup removes every container through the API,
// then, whatever happened, kills any shim or container process left under
// its state dir, unmounts what is mounted there and removes its cgroups.
func startRuntime(t testing.TB, opts ...daemonOption) *rt {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	parent := "/berth-it-" + hex.EncodeToString(b)
	opts = append([]daemonOption{withConfig(fmt.Sprintf("cgroup_parent = %q\n", parent))}, opts...)
	d := newDaemon(t, opts...)
	seedBusybox(t, d)
	d.start()
	r := &rt{t: t, d: d, cgParent: parent}
	r.connect()
	t.Cleanup(func() {
		if d.cmd != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// A connection of its own: the test's may be closed already.
			if conn, err := grpc.NewClient("unix://"+d.socket, grpc.WithTransportCredentials(insecure.NewCredentials())); err == nil {
				cc := berthv1.NewContainersServiceClient(conn)
				if list, err := cc.ListContainers(ctx, &berthv1.ListContainersRequest{}); err == nil {
					for _, c := range list.Containers {
						// NotFound: a --rm removal finished after the list.
						if _, err := cc.DeleteContainer(ctx, &berthv1.DeleteContainerRequest{Id: c.Id, Force: true}); err != nil && status.Code(err) != codes.NotFound {
							t.Errorf("cleanup: delete container %s: %v", c.Id, err)
						}
					}
				}
				conn.Close()
			}
		}
		d.stop()
		reapLeftovers(t, d.state, parent)
	})
	return r
}

// connect (re)makes the API clients, e.g. after a restart.
func (r *rt) connect() {
	conn := r.d.conn()
	r.cc = berthv1.NewContainersServiceClient(conn)
	r.tc = berthv1.NewTasksServiceClient(conn)
}

// reapLeftovers is the backstop of every runtime test's cleanup.
func reapLeftovers(t testing.TB, state, cgParent string) {
	for _, pid := range append(processesMentioning(state), warmShims(state)...) {
		t.Logf("cleanup: killing leftover process %d", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, m := range mountsUnder(filepath.Dir(state)) {
		t.Logf("cleanup: unmounting leftover %s", m)
		unix.Unmount(m, unix.MNT_DETACH)
	}
	for _, dir := range cgroupDirs(cgParent) {
		removeCgroupTree(dir)
	}
}

// processesMentioning lists the shims whose command line contains s (they
// all name berthd's state dir), idle warm shims excepted: berthd keeps
// those on purpose (runtime.warm_shims), and warmShims counts them.
func processesMentioning(s string) []int {
	var out []int
	for _, pid := range shimsMentioning(s) {
		if !isIdleWarm(pid, s) {
			out = append(out, pid)
		}
	}
	return out
}

// warmShims lists the idle warm shims of the berthd whose state dir is
// state: shims whose working directory is still their warm directory.
func warmShims(state string) []int {
	var out []int
	for _, pid := range shimsMentioning(state) {
		if isIdleWarm(pid, state) {
			out = append(out, pid)
		}
	}
	return out
}

func isIdleWarm(pid int, state string) bool {
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmd), "\x00--warm\x00") {
		return false
	}
	// A warm shim (being started, or serving) is idle until adopted: the
	// adoption moves its working directory into the container's bundle.
	// Before it has moved into its warm directory, its cwd is berthd's.
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	return err == nil && !strings.HasPrefix(cwd, filepath.Join(state, "tasks")+"/")
}

// shimsMentioning lists the serving shims whose command line contains s.
// Serving only: `berth-shim start` is the launcher, which exits once it
// has printed the bootstrap line (and, exiting, has no working directory
// to tell whether it is warm).
func shimsMentioning(s string) []int {
	pids, _ := fixture.Processes(func(_ int, args []string) bool {
		cmd := strings.Join(args, "\x00") + "\x00"
		return strings.Contains(cmd, s) && strings.Contains(cmd, "berth-shim\x00serve\x00")
	})
	return pids
}

// warmMount reports whether a mount point is the namespace of berthd's
// warm network attachment ([network] warm_attachments), which stands
// ready while berthd runs and belongs to no container.
func warmMount(p string) bool { return strings.Contains(p, "/net/netns/_warm/") }

// containerMountsUnder is mountsUnder without the warm attachment's
// namespace: what containers left.
func containerMountsUnder(dir string) []string {
	var out []string
	for _, m := range mountsUnder(dir) {
		if !warmMount(m) {
			out = append(out, m)
		}
	}
	return out
}

// mountsUnder lists mount points below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			out = append([]string{fields[4]}, out...)
		}
	}
	return out
}

// cgroupDirs lists the directories of a cgroup path in every mounted
// hierarchy (one on v2, one per controller on v1).
func cgroupDirs(cg string) []string {
	var out []string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		if _, err := os.Stat("/sys/fs/cgroup" + cg); err == nil {
			out = append(out, "/sys/fs/cgroup"+cg)
		}
		return out
	}
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range ents {
		p := filepath.Join("/sys/fs/cgroup", e.Name()) + cg
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func removeCgroupTree(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			removeCgroupTree(filepath.Join(dir, e.Name()))
		}
	}
	if pids, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
		for _, f := range strings.Fields(string(pids)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	for i := 0; i < 50; i++ {
		if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// create makes a container from spec (image busybox unless set).
func (r *rt) create(ctx context.Context, spec *berthv1.ContainerSpec) *berthv1.Container {
	r.t.Helper()
	if spec.Image == "" {
		spec.Image = "busybox"
	}
	resp, err := r.cc.CreateContainer(ctx, &berthv1.CreateContainerRequest{Spec: spec})
	if err != nil {
		r.t.Fatalf("create container: %v", err)
	}
	return resp.Container
}

// start creates the container's task and starts it.
func (r *rt) start(ctx context.Context, id string) {
	r.t.Helper()
	if _, err := r.tc.CreateTask(ctx, &berthv1.CreateTaskRequest{ContainerId: id}); err != nil {
		r.t.Fatalf("create task: %v", err)
	}
	if _, err := r.tc.StartTask(ctx, &berthv1.StartTaskRequest{ContainerId: id}); err != nil {
		r.t.Fatalf("start task: %v", err)
	}
}

// run creates and starts a container.
func (r *rt) run(ctx context.Context, spec *berthv1.ContainerSpec) *berthv1.Container {
	r.t.Helper()
	c := r.create(ctx, spec)
	r.start(ctx, c.Id)
	return c
}

func (r *rt) wait(ctx context.Context, id string) *berthv1.WaitTaskResponse {
	r.t.Helper()
	w, err := r.tc.WaitTask(ctx, &berthv1.WaitTaskRequest{ContainerId: id})
	if err != nil {
		r.t.Fatalf("wait: %v", err)
	}
	return w
}

// logs returns the container's whole log as stdout and stderr text.
func (r *rt) logs(ctx context.Context, req *berthv1.LogsRequest) (stdout, stderr string) {
	r.t.Helper()
	s, err := r.tc.Logs(ctx, req)
	if err != nil {
		r.t.Fatal(err)
	}
	var out, errb strings.Builder
	for {
		resp, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			r.t.Fatalf("logs: %v", err)
		}
		for _, e := range resp.Entries {
			if e.Stream == berthv1.Stream_STREAM_STDERR {
				errb.Write(e.Data)
			} else {
				out.Write(e.Data)
			}
		}
	}
	return out.String(), errb.String()
}

// runToExit runs spec to its end and returns exit status and stdout.
func (r *rt) runToExit(ctx context.Context, spec *berthv1.ContainerSpec) (*berthv1.Container, *berthv1.WaitTaskResponse, string) {
	r.t.Helper()
	c := r.run(ctx, spec)
	w := r.wait(ctx, c.Id)
	out, _ := r.logs(ctx, &berthv1.LogsRequest{ContainerId: c.Id})
	return c, w, out
}

// remove deletes the container and its task.
func (r *rt) remove(ctx context.Context, id string) {
	r.t.Helper()
	if _, err := r.cc.DeleteContainer(ctx, &berthv1.DeleteContainerRequest{Id: id, Force: true}); err != nil {
		r.t.Fatalf("delete container: %v", err)
	}
}

func killPid(pid int) { syscall.Kill(pid, syscall.SIGKILL) }
