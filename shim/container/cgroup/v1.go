package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/cgroups/v3/cgroup1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
)

// v1Root is where the legacy hierarchies are mounted, one directory per
// controller.
const v1Root = "/sys/fs/cgroup"

type v1 struct {
	path string
	cg   cgroup1.Cgroup
}

// v1Hierarchies is the host's list of v1 hierarchies, read once from
// mountinfo: cgroups/v3 would parse mountinfo again on every New and
// Load (twice per container create), and the host's cgroup mounts do not
// change under a running shim.
var v1Hierarchies = struct {
	sync.Mutex
	subs []cgroup1.Subsystem
}{}

func v1Hierarchy() ([]cgroup1.Subsystem, error) {
	v1Hierarchies.Lock()
	defer v1Hierarchies.Unlock()
	if v1Hierarchies.subs == nil {
		subs, err := cgroup1.Default()
		if err != nil {
			return nil, err // not kept: the next call tries again
		}
		v1Hierarchies.subs = subs
	}
	return v1Hierarchies.subs, nil
}

// v1Pather is the part of a cgroups/v3 subsystem that places a group in
// its hierarchy.
type v1Pather interface{ Path(path string) string }

// v1Dirs lists the directory of the group at path in every hierarchy,
// each once: co-mounted controllers (cpu,cpuacct) share one, reached
// through symlinks.
func v1Dirs(path string) ([]string, error) {
	subs, err := v1Hierarchy()
	if err != nil {
		return nil, fmt.Errorf("cgroup v1 hierarchies: %w", err)
	}
	var dirs []string
	seen := map[string]bool{}
	for _, s := range subs {
		p, ok := s.(v1Pather)
		if !ok {
			continue
		}
		// The hierarchy's root, resolved: the group itself may not exist.
		root, err := filepath.EvalSymlinks(p.Path("/"))
		if err != nil {
			continue
		}
		dir := filepath.Join(root, path)
		if !seen[dir] {
			seen[dir] = true
			dirs = append(dirs, dir)
		}
	}
	return dirs, nil
}

func newV1(path string, r *specs.LinuxResources) (Manager, error) {
	if r == nil {
		r = &specs.LinuxResources{}
	}
	r = dropUnsupportedV1(r)
	cg, err := cgroup1.New(cgroup1.StaticPath(path), r, cgroup1.WithHierarchy(v1Hierarchy))
	if err != nil {
		return nil, fmt.Errorf("create cgroup v1 %s: %w", path, err)
	}
	return &v1{path: path, cg: cg}, nil
}

func loadV1(path string) (Manager, error) {
	cg, err := cgroup1.Load(cgroup1.StaticPath(path), cgroup1.WithHierarchy(v1Hierarchy))
	if err != nil {
		if os.IsNotExist(err) || err == cgroup1.ErrCgroupDeleted {
			return nil, fmt.Errorf("cgroup v1 %s: %w", path, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("load cgroup v1 %s: %w", path, err)
	}
	return &v1{path: path, cg: cg}, nil
}

func (c *v1) Path() string { return c.path }

func (c *v1) Add(pid int) error {
	if err := c.cg.Add(cgroup1.Process{Pid: pid}); err != nil {
		return fmt.Errorf("add pid %d to cgroup %s: %w", pid, c.path, err)
	}
	return nil
}

func (c *v1) Update(r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	r = dropUnsupportedV1(r)
	if err := c.cg.Update(r); err != nil {
		return fmt.Errorf("update cgroup %s: %w", c.path, err)
	}
	return nil
}

func (c *v1) Freeze() error {
	if err := c.cg.Freeze(); err != nil {
		return fmt.Errorf("freeze cgroup %s: %w", c.path, err)
	}
	return nil
}

func (c *v1) Thaw() error {
	if err := c.cg.Thaw(); err != nil {
		return fmt.Errorf("thaw cgroup %s: %w", c.path, err)
	}
	return nil
}

func (c *v1) Frozen() (bool, error) {
	b, err := os.ReadFile(filepath.Join(v1Root, "freezer", c.path, "freezer.state"))
	if err != nil {
		return false, fmt.Errorf("freezer state of cgroup %s: %w", c.path, err)
	}
	return strings.TrimSpace(string(b)) == "FROZEN", nil
}

func (c *v1) Pids() ([]int, error) {
	// The pids controller sees every task; fall back to the freezer or
	// memory hierarchy on hosts that lack it.
	for _, sub := range []cgroup1.Name{cgroup1.Pids, cgroup1.Freezer, cgroup1.Memory} {
		procs, err := c.cg.Processes(sub, true)
		if err != nil {
			continue
		}
		pids := make([]int, 0, len(procs))
		seen := map[int]bool{}
		for _, p := range procs {
			if !seen[p.Pid] {
				seen[p.Pid] = true
				pids = append(pids, p.Pid)
			}
		}
		return pids, nil
	}
	return nil, fmt.Errorf("list processes of cgroup %s: no pids, freezer or memory hierarchy: %w", c.path, errdefs.ErrUnavailable)
}

func (c *v1) Stats() (*Stats, error) {
	m, err := c.cg.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return nil, fmt.Errorf("stats of cgroup %s: %w", c.path, err)
	}
	s := &Stats{}
	if cpu := m.GetCPU(); cpu != nil {
		if u := cpu.GetUsage(); u != nil {
			s.CPUUsageNanos, s.CPUUserNanos, s.CPUSystemNanos = u.Total, u.User, u.Kernel
		}
		if t := cpu.GetThrottling(); t != nil {
			s.CPUThrottledNanos, s.CPUThrottledCount = t.ThrottledTime, t.ThrottledPeriods
		}
	}
	if mem := m.GetMemory(); mem != nil {
		if u := mem.GetUsage(); u != nil {
			s.MemoryUsage, s.MemoryMaxUsage, s.MemoryLimit = u.Usage, u.Max, u.Limit
		}
		if sw := mem.GetSwap(); sw != nil && sw.Usage > s.MemoryUsage {
			// memsw counts memory plus swap.
			s.SwapUsage = sw.Usage - s.MemoryUsage
		}
	}
	if p := m.GetPids(); p != nil {
		s.PidsCurrent, s.PidsLimit = p.Current, p.Limit
	}
	if b := m.GetBlkio(); b != nil {
		for _, e := range b.IoServiceBytesRecursive {
			switch strings.ToLower(e.Op) {
			case "read":
				s.IOReadBytes += e.Value
			case "write":
				s.IOWriteBytes += e.Value
			}
		}
	}
	s.OOMKills, _ = c.OOMKillCount()
	return s, nil
}

func (c *v1) memoryDir() string { return filepath.Join(v1Root, "memory", c.path) }

func (c *v1) OOMKillCount() (uint64, error) {
	f, err := os.Open(filepath.Join(c.memoryDir(), "memory.oom_control"))
	if err != nil {
		return 0, fmt.Errorf("oom count of cgroup %s: %w", c.path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == "oom_kill" {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("oom count of cgroup %s: %w", c.path, err)
	}
	// Kernels before 4.13 have no counter: report "under_oom" instead.
	return 0, nil
}

func (c *v1) OOMEventFD() (int, error) {
	fd, err := c.cg.OOMEventFD()
	if err != nil {
		return -1, fmt.Errorf("oom eventfd of cgroup %s: %w", c.path, err)
	}
	return int(fd), nil
}

func (c *v1) Rename(newPath string) error {
	if path.Dir(newPath) != path.Dir(c.path) || path.Base(newPath) == path.Base(c.path) {
		return fmt.Errorf("rename cgroup %s to %s: a new name under the same parent is needed: %w", c.path, newPath, errdefs.ErrInvalidArgument)
	}
	dirs, err := v1Dirs(c.path)
	if err != nil {
		return fmt.Errorf("rename cgroup %s: %w", c.path, err)
	}
	name := path.Base(newPath)
	var moved []string
	for _, dir := range dirs {
		if _, err := os.Lstat(dir); os.IsNotExist(err) {
			continue // a hierarchy the group is not in (Load skips those too)
		}
		// The kernel refuses (EEXIST) a name already taken: no group is
		// ever replaced.
		if err := os.Rename(dir, filepath.Join(filepath.Dir(dir), name)); err != nil {
			for _, d := range moved {
				_ = os.Rename(filepath.Join(filepath.Dir(d), name), d)
			}
			if errors.Is(err, os.ErrExist) {
				err = fmt.Errorf("%w: %w", err, errdefs.ErrAlreadyExists)
			}
			return fmt.Errorf("rename cgroup %s to %s: %w", c.path, newPath, err)
		}
		moved = append(moved, dir)
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath(newPath), cgroup1.WithHierarchy(v1Hierarchy))
	if err != nil {
		return fmt.Errorf("rename cgroup %s to %s: %w", c.path, newPath, err)
	}
	c.path, c.cg = newPath, cg
	return nil
}

func (c *v1) Delete() error {
	if pids, err := c.Pids(); err == nil && len(pids) > 0 {
		return fmt.Errorf("delete cgroup %s: %w (%d left): %w", c.path, errNotEmpty, len(pids), errdefs.ErrFailedPrecondition)
	}
	if err := c.cg.Delete(); err != nil {
		return fmt.Errorf("delete cgroup %s: %w", c.path, err)
	}
	return nil
}

// dropUnsupportedV1 removes settings the host kernel has no file for, as
// Docker does, with a warning instead of failing the container: blkio
// weights exist only with the CFQ or BFQ schedulers, which many kernels
// lack (this one's blkio.weight is missing).
func dropUnsupportedV1(r *specs.LinuxResources) *specs.LinuxResources {
	if r == nil {
		return r
	}
	if m := r.Memory; m != nil && m.Swap != nil {
		if _, err := os.Stat(filepath.Join(v1Root, "memory", "memory.memsw.limit_in_bytes")); err != nil {
			// Kernels booted without swap accounting have no memsw files.
			slog.Warn("kernel has no swap accounting (memory.memsw.*): memory+swap limit discarded")
			cp := *r
			mem := *m
			mem.Swap = nil
			cp.Memory = &mem
			r = &cp
		}
	}
	if r.BlockIO == nil {
		return r
	}
	if r.BlockIO.Weight == nil && r.BlockIO.LeafWeight == nil && len(r.BlockIO.WeightDevice) == 0 {
		return r
	}
	if _, err := os.Stat(filepath.Join(v1Root, "blkio", "blkio.weight")); err == nil {
		return r
	}
	slog.Warn("kernel has no blkio.weight (no CFQ/BFQ): block I/O weight discarded")
	cp := *r
	bio := *r.BlockIO
	bio.Weight, bio.LeafWeight, bio.WeightDevice = nil, nil, nil
	cp.BlockIO = &bio
	return &cp
}
