package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

const v2Root = "/sys/fs/cgroup"

// v2 drives the unified hierarchy. The resource files are translated and
// written here (v2Files) rather than by cgroup2.ToResources, because that
// helper turns an unlimited swap (-1) into a negative memory.swap.max and
// its output cannot be inspected in a unit test; the library still does
// directory creation, controller enabling, the device eBPF filter, stats and
// freezing.
type v2 struct {
	root string // mount point of the unified hierarchy
	path string
	m    *cgroup2.Manager
}

// v2File is one write into the group directory. Alt, when set, is written
// instead if File does not exist (e.g. io.weight where io.bfq.weight is
// missing).
type v2File struct {
	File, Value string
	Alt, AltVal string
}

// v2Files translates OCI resources into the unified hierarchy's files, in
// the order they are to be written, plus the controllers they need enabled.
func v2Files(r *specs.LinuxResources) ([]v2File, []string, error) {
	var out []v2File
	ctrl := map[string]bool{}
	if r == nil {
		return nil, nil, nil
	}
	if c := r.CPU; c != nil {
		if c.Shares != nil && *c.Shares > 0 {
			ctrl["cpu"] = true
			out = append(out, v2File{File: "cpu.weight", Value: strconv.FormatUint(cgroup2.ConvertCPUSharesToCgroupV2Value(*c.Shares), 10)})
		}
		if c.Quota != nil || c.Period != nil {
			ctrl["cpu"] = true
			quota := "max"
			if c.Quota != nil && *c.Quota > 0 {
				quota = strconv.FormatInt(*c.Quota, 10)
			}
			period := uint64(100000)
			if c.Period != nil && *c.Period > 0 {
				period = *c.Period
			}
			out = append(out, v2File{File: "cpu.max", Value: quota + " " + strconv.FormatUint(period, 10)})
		}
		if c.Cpus != "" {
			ctrl["cpuset"] = true
			out = append(out, v2File{File: "cpuset.cpus", Value: c.Cpus})
		}
		if c.Mems != "" {
			ctrl["cpuset"] = true
			out = append(out, v2File{File: "cpuset.mems", Value: c.Mems})
		}
	}
	if m := r.Memory; m != nil {
		limitStr := func(v int64) string {
			if v < 0 {
				return "max"
			}
			return strconv.FormatInt(v, 10)
		}
		if m.Reservation != nil {
			ctrl["memory"] = true
			out = append(out, v2File{File: "memory.low", Value: limitStr(*m.Reservation)})
		}
		if m.Swap != nil {
			// OCI's swap is memory+swap (the v1 memsw meaning); v2 limits
			// swap alone.
			ctrl["memory"] = true
			switch {
			case *m.Swap == -1:
				out = append(out, v2File{File: "memory.swap.max", Value: "max"})
			case m.Limit == nil || *m.Limit < 0:
				return nil, nil, fmt.Errorf("memory+swap limit %d without a memory limit: %w", *m.Swap, errdefs.ErrInvalidArgument)
			case *m.Swap < *m.Limit:
				return nil, nil, fmt.Errorf("memory+swap limit %d below memory limit %d: %w", *m.Swap, *m.Limit, errdefs.ErrInvalidArgument)
			default:
				out = append(out, v2File{File: "memory.swap.max", Value: strconv.FormatInt(*m.Swap-*m.Limit, 10)})
			}
		}
		if m.Limit != nil {
			ctrl["memory"] = true
			out = append(out, v2File{File: "memory.max", Value: limitStr(*m.Limit)})
		}
	}
	if p := r.Pids; p != nil && p.Limit != nil {
		ctrl["pids"] = true
		v := "max"
		if *p.Limit > 0 {
			v = strconv.FormatInt(*p.Limit, 10)
		}
		out = append(out, v2File{File: "pids.max", Value: v})
	}
	if b := r.BlockIO; b != nil {
		if b.Weight != nil && *b.Weight > 0 {
			ctrl["io"] = true
			// io.bfq.weight takes blkio's 10..1000 scale as is; io.weight
			// has 1..10000.
			w := uint64(*b.Weight)
			out = append(out, v2File{
				File: "io.bfq.weight", Value: strconv.FormatUint(w, 10),
				Alt: "io.weight", AltVal: "default " + strconv.FormatUint(1+(w-10)*9999/990, 10),
			})
		}
		for _, t := range []struct {
			key  string
			devs []specs.LinuxThrottleDevice
		}{
			{"rbps", b.ThrottleReadBpsDevice}, {"wbps", b.ThrottleWriteBpsDevice},
			{"riops", b.ThrottleReadIOPSDevice}, {"wiops", b.ThrottleWriteIOPSDevice},
		} {
			for _, d := range t.devs {
				ctrl["io"] = true
				out = append(out, v2File{File: "io.max", Value: fmt.Sprintf("%d:%d %s=%d", d.Major, d.Minor, t.key, d.Rate)})
			}
		}
	}
	for _, h := range r.HugepageLimits {
		ctrl["hugetlb"] = true
		out = append(out, v2File{File: "hugetlb." + h.Pagesize + ".max", Value: strconv.FormatUint(h.Limit, 10)})
	}
	keys := make([]string, 0, len(r.Unified))
	for k := range r.Unified {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "" || strings.ContainsAny(k, "/") || k == "." || k == ".." {
			return nil, nil, fmt.Errorf("unified cgroup key %q: %w", k, errdefs.ErrInvalidArgument)
		}
		if c, _, ok := strings.Cut(k, "."); ok && c != "cgroup" {
			ctrl[c] = true
		}
		out = append(out, v2File{File: k, Value: r.Unified[k]})
	}
	controllers := make([]string, 0, len(ctrl))
	for c := range ctrl {
		controllers = append(controllers, c)
	}
	sort.Strings(controllers)
	return out, controllers, nil
}

func newV2(path string, r *specs.LinuxResources) (Manager, error) {
	return newV2At(v2Root, path, r)
}

// newV2At creates the group under a unified hierarchy mounted at root; the
// conformance tests use it on a hybrid host's /sys/fs/cgroup/unified.
func newV2At(root, path string, r *specs.LinuxResources) (Manager, error) {
	if r == nil {
		r = &specs.LinuxResources{}
	}
	files, controllers, err := v2Files(r)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", path, err)
	}
	m, err := cgroup2.NewManager(root, path, &cgroup2.Resources{Devices: r.Devices})
	if err != nil {
		return nil, fmt.Errorf("create cgroup v2 %s: %w", path, err)
	}
	c := &v2{root: root, path: path, m: m}
	if len(controllers) > 0 {
		if err := m.ToggleControllers(controllers, cgroup2.Enable); err != nil {
			_ = m.Delete()
			return nil, fmt.Errorf("cgroup %s: enable controllers %v: %w", path, controllers, err)
		}
	}
	if err := c.write(files); err != nil {
		_ = m.Delete()
		return nil, err
	}
	return c, nil
}

func loadV2(path string) (Manager, error) { return loadV2At(v2Root, path) }

func loadV2At(root, path string) (Manager, error) {
	if _, err := os.Stat(filepath.Join(root, path)); err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("cgroup v2 %s: %w", path, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("cgroup v2 %s: %w", path, err)
	}
	m, err := cgroup2.Load(path, cgroup2.WithMountpoint(root))
	if err != nil {
		return nil, fmt.Errorf("load cgroup v2 %s: %w", path, err)
	}
	return &v2{root: root, path: path, m: m}, nil
}

func (c *v2) Rename(newPath string) error {
	return fmt.Errorf("rename cgroup %s to %s: the unified hierarchy (cgroup v2) cannot rename groups: %w", c.path, newPath, errdefs.ErrNotImplemented)
}

func (c *v2) dir() string { return filepath.Join(c.root, c.path) }

func (c *v2) write(files []v2File) error {
	for _, f := range files {
		name, val := f.File, f.Value
		if f.Alt != "" {
			if _, err := os.Stat(filepath.Join(c.dir(), name)); errors.Is(err, os.ErrNotExist) {
				name, val = f.Alt, f.AltVal
			}
		}
		if err := os.WriteFile(filepath.Join(c.dir(), name), []byte(val), 0); err != nil {
			return fmt.Errorf("cgroup %s: write %s=%q: %w", c.path, name, val, err)
		}
	}
	return nil
}

func (c *v2) Path() string { return c.path }

func (c *v2) Add(pid int) error {
	if err := c.m.AddProc(uint64(pid)); err != nil {
		return fmt.Errorf("add pid %d to cgroup %s: %w", pid, c.path, err)
	}
	return nil
}

func (c *v2) Update(r *specs.LinuxResources) error {
	files, controllers, err := v2Files(r)
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", c.path, err)
	}
	if len(controllers) > 0 {
		if err := c.m.ToggleControllers(controllers, cgroup2.Enable); err != nil {
			return fmt.Errorf("cgroup %s: enable controllers %v: %w", c.path, controllers, err)
		}
	}
	return c.write(files)
}

func (c *v2) Freeze() error {
	if err := c.m.Freeze(); err != nil {
		return fmt.Errorf("freeze cgroup %s: %w", c.path, err)
	}
	return nil
}

func (c *v2) Thaw() error {
	if err := c.m.Thaw(); err != nil {
		return fmt.Errorf("thaw cgroup %s: %w", c.path, err)
	}
	return nil
}

func (c *v2) Frozen() (bool, error) {
	b, err := os.ReadFile(filepath.Join(c.dir(), "cgroup.freeze"))
	if err != nil {
		return false, fmt.Errorf("freezer state of cgroup %s: %w", c.path, err)
	}
	return strings.TrimSpace(string(b)) == "1", nil
}

func (c *v2) Pids() ([]int, error) {
	procs, err := c.m.Procs(true)
	if err != nil {
		return nil, fmt.Errorf("list processes of cgroup %s: %w", c.path, err)
	}
	pids := make([]int, len(procs))
	for i, p := range procs {
		pids[i] = int(p)
	}
	return pids, nil
}

func (c *v2) Stats() (*Stats, error) {
	m, err := c.m.Stat()
	if err != nil {
		return nil, fmt.Errorf("stats of cgroup %s: %w", c.path, err)
	}
	s := &Stats{}
	if cpu := m.GetCPU(); cpu != nil {
		s.CPUUsageNanos = cpu.UsageUsec * 1000
		s.CPUUserNanos = cpu.UserUsec * 1000
		s.CPUSystemNanos = cpu.SystemUsec * 1000
		s.CPUThrottledNanos = cpu.ThrottledUsec * 1000
		s.CPUThrottledCount = cpu.NrThrottled
	}
	if mem := m.GetMemory(); mem != nil {
		s.MemoryUsage, s.MemoryMaxUsage, s.MemoryLimit = mem.Usage, mem.MaxUsage, mem.UsageLimit
		s.SwapUsage = mem.SwapUsage
	}
	if p := m.GetPids(); p != nil {
		s.PidsCurrent, s.PidsLimit = p.Current, p.Limit
	}
	if io := m.GetIo(); io != nil {
		for _, e := range io.Usage {
			s.IOReadBytes += e.Rbytes
			s.IOWriteBytes += e.Wbytes
		}
	}
	if ev := m.GetMemoryEvents(); ev != nil {
		s.OOMKills = ev.OomKill
	}
	return s, nil
}

func (c *v2) OOMKillCount() (uint64, error) {
	f, err := os.Open(filepath.Join(c.dir(), "memory.events"))
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
	return 0, sc.Err()
}

func (c *v2) OOMEventFD() (int, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return -1, fmt.Errorf("oom inotify of cgroup %s: %w", c.path, err)
	}
	for _, f := range []string{"memory.events", "cgroup.events"} {
		if _, err := unix.InotifyAddWatch(fd, filepath.Join(c.dir(), f), unix.IN_MODIFY); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("oom inotify of cgroup %s: watch %s: %w", c.path, f, err)
		}
	}
	return fd, nil
}

func (c *v2) Delete() error {
	if pids, err := c.Pids(); err == nil && len(pids) > 0 {
		return fmt.Errorf("delete cgroup %s: %w (%d left): %w", c.path, errNotEmpty, len(pids), errdefs.ErrFailedPrecondition)
	}
	if err := c.m.Delete(); err != nil {
		return fmt.Errorf("delete cgroup %s: %w", c.path, err)
	}
	return nil
}
