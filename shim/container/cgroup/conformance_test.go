package cgroup

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

// impl is one Manager implementation the conformance suite runs against.
type impl struct {
	name string
	dir  string // where the group shows up in the filesystem
	// full is true when the resource controllers are available.
	full bool
	new  func(path string, r *specs.LinuxResources) (Manager, error)
	load func(path string) (Manager, error)
}

// impls lists what this host can run: its own mode, plus v2 on the empty
// cgroup2 mount a hybrid host has beside its v1 hierarchies (no
// controllers there, but processes, freezing and removal are real).
func impls(t *testing.T) []impl {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: run 'make test' as root")
	}
	var out []impl
	switch HostMode() {
	case V1:
		out = append(out, impl{name: "v1", dir: "/sys/fs/cgroup/pids", full: true, new: New, load: Load})
	case V2:
		out = append(out, impl{name: "v2", dir: v2Root, full: true, new: New, load: Load})
	}
	var st unix.Statfs_t
	if HostMode() == V1 && unix.Statfs("/sys/fs/cgroup/unified", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		root := "/sys/fs/cgroup/unified"
		out = append(out, impl{
			name: "v2-on-hybrid", dir: root,
			new:  func(p string, r *specs.LinuxResources) (Manager, error) { return newV2At(root, p, r) },
			load: func(p string) (Manager, error) { return loadV2At(root, p) },
		})
	}
	if len(out) == 0 {
		t.Skip("no cgroup hierarchy")
	}
	return out
}

func TestManagerConformance(t *testing.T) {
	for _, im := range impls(t) {
		t.Run(im.name, func(t *testing.T) {
			path := "/berth-conformance/" + im.name
			var res *specs.LinuxResources
			if im.full {
				limit, mem := int64(20), int64(64<<20)
				res = &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &limit}, Memory: &specs.LinuxMemory{Limit: &mem}}
			}
			m, err := im.new(path, res)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("sleep", "30")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				_ = m.Delete()
				_ = os.Remove(filepath.Join(im.dir, "berth-conformance"))
				if im.full {
					for _, h := range []string{"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd", "perf_event", "net_cls", "net_prio", "hugetlb", "rdma"} {
						_ = os.Remove(filepath.Join("/sys/fs/cgroup", h, "berth-conformance"))
					}
				}
			})
			if m.Path() != path {
				t.Errorf("Path() = %q", m.Path())
			}
			if err := m.Add(cmd.Process.Pid); err != nil {
				t.Fatal(err)
			}
			pids, err := m.Pids()
			if err != nil || !slices.Contains(pids, cmd.Process.Pid) {
				t.Fatalf("Pids() = %v, %v; want %d in it", pids, err, cmd.Process.Pid)
			}
			if err := m.Freeze(); err != nil {
				t.Fatal(err)
			}
			if f, err := m.Frozen(); err != nil || !f {
				t.Errorf("Frozen() after Freeze = %v, %v", f, err)
			}
			if err := m.Thaw(); err != nil {
				t.Fatal(err)
			}
			if f, err := m.Frozen(); err != nil || f {
				t.Errorf("Frozen() after Thaw = %v, %v", f, err)
			}
			if im.full {
				st, err := m.Stats()
				if err != nil {
					t.Fatal(err)
				}
				if st.PidsCurrent != 1 || st.PidsLimit != 20 || st.MemoryLimit != 64<<20 {
					t.Errorf("stats %+v", st)
				}
				if n, err := m.OOMKillCount(); err != nil || n != 0 {
					t.Errorf("OOMKillCount = %d, %v", n, err)
				}
				fd, err := m.OOMEventFD()
				if err != nil {
					t.Fatal(err)
				}
				unix.Close(fd)
				limit := int64(30)
				if err := m.Update(&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &limit}}); err != nil {
					t.Fatal(err)
				}
				if st, _ := m.Stats(); st == nil || st.PidsLimit != 30 {
					t.Errorf("after Update pids limit = %+v", st)
				}
			}
			if l, err := im.load(path); err != nil || l.Path() != path {
				t.Errorf("Load = %v, %v", l, err)
			}
			if err := m.Delete(); !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Errorf("Delete while populated = %v, want ErrFailedPrecondition", err)
			}
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			if err := m.Delete(); err != nil {
				t.Fatalf("Delete after kill: %v", err)
			}
			if _, err := os.Stat(filepath.Join(im.dir, path)); !os.IsNotExist(err) {
				t.Errorf("group dir still there: %v", err)
			}
			if _, err := im.load(path); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("Load after Delete = %v, want ErrNotFound", err)
			}
		})
	}
}
