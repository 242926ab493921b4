package cgroup

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
)

// removeTestParent removes parent's groups (and parent) in every
// hierarchy, whatever a failed test left.
func removeTestParent(t *testing.T, parent string) {
	t.Helper()
	t.Cleanup(func() {
		ents, _ := os.ReadDir("/sys/fs/cgroup")
		for _, e := range ents {
			dir := filepath.Join("/sys/fs/cgroup", e.Name(), parent)
			kids, _ := os.ReadDir(dir)
			for _, k := range kids {
				if k.IsDir() {
					os.Remove(filepath.Join(dir, k.Name()))
				}
			}
			os.Remove(dir)
		}
	})
}

// sleepIn starts a sleep in m's group, killed at the test's end.
func sleepIn(t *testing.T, m Manager) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := m.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// TestRenameMovesTheGroupWithItsProcessesAndSettings: what a warm shim
// relies on when it hands its ready-made group to the container it is
// adopted for.
func TestRenameMovesTheGroupWithItsProcessesAndSettings(t *testing.T) {
	for _, im := range impls(t) {
		t.Run(im.name, func(t *testing.T) {
			parent := "/berth-rename-" + im.name
			removeTestParent(t, parent)
			var res *specs.LinuxResources
			if im.full {
				limit := int64(17)
				res = &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &limit}}
			}
			m, err := im.new(parent+"/.warm-a", res)
			if err != nil {
				t.Fatal(err)
			}
			cmd := sleepIn(t, m)
			err = m.Rename(parent + "/web")
			if im.name != "v1" {
				if !errors.Is(err, errdefs.ErrNotImplemented) || m.Path() != parent+"/.warm-a" {
					t.Fatalf("v2 Rename = %v, path %s; want ErrNotImplemented and the group unchanged", err, m.Path())
				}
				if CanRename() && HostMode() == V2 {
					t.Error("CanRename on a v2 host")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Path() != parent+"/web" {
				t.Errorf("Path() after rename = %s", m.Path())
			}
			self, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
			for _, line := range strings.Split(strings.TrimSpace(string(self)), "\n") {
				f := strings.SplitN(line, ":", 3)
				if len(f) == 3 && f[1] != "" && strings.HasPrefix(f[2], parent) && f[2] != parent+"/web" {
					t.Errorf("process still in %s after rename: %s", f[2], line)
				}
			}
			if !strings.Contains(string(self), ":pids:"+parent+"/web\n") {
				t.Errorf("process not in the renamed group:\n%s", self)
			}
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", parent, ".warm-a")); !os.IsNotExist(err) {
				t.Errorf("old group still there: %v", err)
			}
			if st, err := m.Stats(); err != nil || st.PidsLimit != 17 || st.PidsCurrent != 1 {
				t.Errorf("stats after rename = %+v, %v; want the limit and the process kept", st, err)
			}

			// A name in use is refused, and neither group changes.
			other, err := im.new(parent+"/db", nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Rename(parent + "/db"); !errors.Is(err, errdefs.ErrAlreadyExists) {
				t.Errorf("rename onto an existing group = %v, want ErrAlreadyExists", err)
			}
			if pids, err := m.Pids(); err != nil || len(pids) != 1 || m.Path() != parent+"/web" {
				t.Errorf("after a refused rename: %s %v %v", m.Path(), pids, err)
			}
			if pids, err := other.Pids(); err != nil || len(pids) != 0 {
				t.Errorf("the other group after a refused rename: %v %v", pids, err)
			}
			if err := m.Rename("/elsewhere/web2"); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("rename to another parent = %v, want ErrInvalidArgument", err)
			}
			cmd.Process.Kill()
			cmd.Wait()
			if err := m.Delete(); err != nil {
				t.Fatal(err)
			}
			if err := other.Delete(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRemoveEmptyKeepsGroupsInUse: berthd's start removes the groups of
// warm shims killed before they could, never one with a process.
func TestRemoveEmptyKeepsGroupsInUse(t *testing.T) {
	if HostMode() == Unavailable {
		t.Skip("no cgroup hierarchy")
	}
	parent := "/berth-removeempty"
	removeTestParent(t, parent)
	busy, err := New(parent+"/.warm-busy", nil)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := New(parent+"/.warm-idle", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctr, err := New(parent+"/ctr", nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := sleepIn(t, busy)
	if err := RemoveEmpty(parent, ".warm-"); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(idle.Path()); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("empty warm group kept: %v", err)
	}
	for _, m := range []Manager{busy, ctr} {
		if _, err := Load(m.Path()); err != nil {
			t.Errorf("%s removed: %v", m.Path(), err)
		}
	}
	if err := RemoveEmpty(parent, "a/b"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("prefix with a slash = %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	busy.Delete()
	ctr.Delete()
}
