package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/metadata"
	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// TestKilledAgentRecoversTasks kills berthd with SIGKILL while five
// containers run; two of them exit during the outage. The restarted
// berthd must find the three live ones running and attachable, and the
// two others exited with their real exit codes.
func TestKilledAgentRecoversTasks(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var live, exiting []string
	for i := 0; i < 3; i++ {
		c := r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh", "-c", "while read l; do echo got:$l; done"}, OpenStdin: true})
		live = append(live, c.Id)
	}
	// Two exit about 1.5 s from now, while berthd is down: their shims
	// outlive it and keep the exits.
	for i := 0; i < 2; i++ {
		c := r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh", "-c", fmt.Sprintf("sleep 1.5; exit %d", 30+i)}})
		exiting = append(exiting, c.Id)
	}
	r.d.kill()
	for _, id := range exiting {
		if got, err := r.cc.GetContainer(ctx, &berthv1.GetContainerRequest{Id: id}); err == nil {
			t.Fatalf("berthd still answers after SIGKILL: %v", got)
		}
	}
	time.Sleep(2500 * time.Millisecond)

	begin := time.Now()
	r.d.start()
	t.Logf("berthd answered %v after restart", time.Since(begin))
	r.connect()
	for i, id := range exiting {
		w := r.wait(ctx, id)
		got, err := r.cc.GetContainer(ctx, &berthv1.GetContainerRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		want := uint32(30 + i)
		if w.ExitStatus != want || got.Container.Status.ExitCode != int32(want) ||
			got.Container.Status.State != berthv1.ContainerState_CONTAINER_STATE_EXITED {
			t.Errorf("container that exited during the outage: wait %d, status %+v; want exited %d", w.ExitStatus, got.Container.Status, want)
		}
	}
	for _, id := range live {
		task, err := r.tc.GetTask(ctx, &berthv1.GetTaskRequest{ContainerId: id})
		if err != nil || task.Task.Status != berthv1.TaskStatus_TASK_STATUS_RUNNING {
			t.Fatalf("live container after restart: %v %v", task, err)
		}
		a := r.attach(ctx, id, "", true)
		a.send(t, "hello\n")
		a.expect(t, "got:hello")
	}
}

// TestShimDeathIsReported: a shim killed outright leaves its task
// exited (status 255 or the recorded code) and cleaned up, not hanging.
func TestDeadShimIsCleanedUpOnRestart(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh", "-c", "exit 9"}})
	r.wait(ctx, c.Id)
	r.d.kill()
	for _, pid := range processesMentioning(r.d.state) {
		killPid(pid)
	}
	r.d.start()
	r.connect()
	got, err := r.cc.GetContainer(ctx, &berthv1.GetContainerRequest{Id: c.Id})
	if err != nil {
		t.Fatal(err)
	}
	if got.Container.Status.ExitCode != 9 {
		t.Errorf("exit code after the shim died: %+v, want the recorded 9", got.Container.Status)
	}
	if m := containerMountsUnder(r.d.state); len(m) != 0 {
		t.Errorf("rootfs still mounted: %v", m)
	}
	if dirs := cgroupDirs(r.cgParent + "/" + c.Id); len(dirs) != 0 {
		t.Errorf("cgroup left: %v", dirs)
	}
}

// TestCutShortRemovalIsFinishedOnRestart: a removal deletes the record
// first and the rest after it (for run --rm, after the client has its
// answer). berthd killed in between leaves a live shim, a mounted rootfs,
// a cgroup, a snapshot and a log dir that no record names; the next start
// removes them all, and leaves the other containers alone.
func TestCutShortRemovalIsFinishedOnRestart(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gone := r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sleep", "300"}})
	kept := r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sleep", "300"}})
	snapshots := func() int {
		n := 0
		for _, driver := range []string{"overlay", "native"} {
			snaps, _ := os.ReadDir(filepath.Join(r.d.root, "snapshots", driver, "snapshots"))
			n += len(snaps)
		}
		return n
	}
	before := snapshots()
	r.d.kill()
	// What a removal does first, and all a crash right after it leaves done.
	db, err := metadata.Open(filepath.Join(r.d.root, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Containers().Delete(namespaces.WithNamespace(ctx, "default"), gone.Id); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if len(shimsOf(r.d.state, gone.Id)) == 0 || len(cgroupDirs(r.cgParent+"/"+gone.Id)) == 0 {
		t.Fatal("the container's shim or cgroup is gone before the restart: the test shows nothing")
	}

	r.d.start()
	r.connect()
	if pids := shimsOf(r.d.state, gone.Id); len(pids) != 0 {
		t.Errorf("the removed container's shim still runs: %v", pids)
	}
	for _, m := range containerMountsUnder(r.d.state) {
		if strings.Contains(m, gone.Id) {
			t.Errorf("the removed container's rootfs is still mounted: %s", m)
		}
	}
	if dirs := cgroupDirs(r.cgParent + "/" + gone.Id); len(dirs) != 0 {
		t.Errorf("the removed container's cgroup is left: %v", dirs)
	}
	for _, p := range []string{
		filepath.Join(r.d.root, "containers", "default", gone.Id),
		filepath.Join(r.d.state, "tasks", "default", gone.Id),
	} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s is left", p)
		}
	}
	if after := snapshots(); after != before-1 {
		t.Errorf("snapshot dirs: %d before, %d after the restart; want the removed container's gone", before, after)
	}
	// The other container runs on, untouched.
	st, err := r.cc.GetContainer(ctx, &berthv1.GetContainerRequest{Id: kept.Id})
	if err != nil {
		t.Fatal(err)
	}
	if st.Container.Status.State != berthv1.ContainerState_CONTAINER_STATE_RUNNING || len(shimsOf(r.d.state, kept.Id)) != 1 {
		t.Errorf("the kept container after the restart: %v, shims %v; want it running", st.Container.Status, shimsOf(r.d.state, kept.Id))
	}
}

// shimsOf lists the shims serving container id (in namespace default):
// those working in its bundle, where an adopted warm shim moves too.
func shimsOf(state, id string) []int {
	var out []int
	bundle := filepath.Join(state, "tasks", "default", id)
	for _, pid := range shimsMentioning(state) {
		if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil && cwd == bundle {
			out = append(out, pid)
		}
	}
	return out
}
