// Package cgroup is the container's control group, behind one interface
// with a cgroup v1 and a cgroup v2 implementation (both on
// github.com/containerd/cgroups/v3).
//
// Lifecycle: New creates the group (path <parent>/<id>, parent defaulting to
// /berth) and applies the spec's resources; the caller then Adds the init
// pid before that process runs any user code; Delete removes the group once
// it is empty. A Manager never kills or reaps processes itself except
// through Freeze/Thaw: killing is the container's job, reaping the shim's.
package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/cgroups/v3"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

// DefaultParent is the cgroup under which containers go when the caller
// names no parent.
const DefaultParent = "/berth"

// Manager is one container's cgroup.
type Manager interface {
	// Path is the group's path relative to the hierarchy root, e.g.
	// /berth/web; it is what /proc/<pid>/cgroup shows for a member.
	Path() string
	// Add moves a process (all its threads) into the group.
	Add(pid int) error
	// Update applies new resource limits.
	Update(r *specs.LinuxResources) error
	// Freeze stops every process in the group; Thaw resumes them.
	Freeze() error
	Thaw() error
	// Frozen reports whether the group is frozen (paused).
	Frozen() (bool, error)
	// Pids lists the processes in the group, recursively.
	Pids() ([]int, error)
	// Stats reads usage counters.
	Stats() (*Stats, error)
	// OOMKillCount is the number of processes the kernel's OOM killer has
	// killed in the group so far.
	OOMKillCount() (uint64, error)
	// OOMEventFD returns a file descriptor that becomes readable when the
	// group may have hit an OOM (v1: an eventfd registered on
	// memory.oom_control; v2: an inotify fd on memory.events). The caller
	// owns and closes it, and confirms with OOMKillCount after each wakeup:
	// the fd also fires on group removal (v1) and on other events (v2).
	OOMEventFD() (int, error)
	// Delete removes the group. It fails with ErrFailedPrecondition while
	// processes remain.
	Delete() error
	// Rename moves the group, with its processes and settings, to newPath
	// under the same parent. Only cgroup v1 can: the kernel refuses to
	// rename on the unified hierarchy, so v2 returns ErrNotImplemented
	// and the caller makes a new group instead.
	Rename(newPath string) error
}

// Stats is a version-independent view of a group's counters.
type Stats struct {
	CPUUsageNanos     uint64 // total CPU time consumed
	CPUUserNanos      uint64
	CPUSystemNanos    uint64
	CPUThrottledNanos uint64
	CPUThrottledCount uint64 // periods in which the group was throttled
	MemoryUsage       uint64 // bytes, page cache included
	MemoryMaxUsage    uint64 // high-water mark (v1; 0 where the kernel has none)
	MemoryLimit       uint64
	SwapUsage         uint64
	PidsCurrent       uint64
	PidsLimit         uint64 // 0 = unlimited
	IOReadBytes       uint64
	IOWriteBytes      uint64
	OOMKills          uint64
}

// Mode tells which cgroup layout the host uses.
type Mode int

const (
	// Unavailable means no usable cgroup hierarchy was found.
	Unavailable Mode = iota
	// V1 is the legacy per-controller hierarchies, possibly with an empty
	// cgroup2 mount beside them (hybrid); Berth drives v1 there.
	V1
	// V2 is the unified hierarchy.
	V2
)

func (m Mode) String() string {
	switch m {
	case V1:
		return "v1"
	case V2:
		return "v2"
	}
	return "unavailable"
}

// HostMode reports the host's cgroup layout.
func HostMode() Mode {
	switch cgroups.Mode() {
	case cgroups.Legacy, cgroups.Hybrid:
		return V1
	case cgroups.Unified:
		return V2
	}
	return Unavailable
}

// GroupPath joins parent (DefaultParent when empty) and id into an absolute
// cgroup path, refusing ids that would escape the parent.
func GroupPath(parent, id string) (string, error) {
	if id == "" || strings.Contains(id, "/") || id == "." || id == ".." {
		return "", fmt.Errorf("cgroup name %q: %w", id, errdefs.ErrInvalidArgument)
	}
	if parent == "" {
		parent = DefaultParent
	}
	if !strings.HasPrefix(parent, "/") {
		parent = "/" + parent
	}
	return path.Join(path.Clean(parent), id), nil
}

// New creates the cgroup at path (see GroupPath) with resources r (nil for
// none) on the host's hierarchy.
func New(path string, r *specs.LinuxResources) (Manager, error) {
	if r == nil {
		r = &specs.LinuxResources{}
	}
	// Two containers must never share a group: Destroy of one would kill
	// the other.
	if old, err := Load(path); err == nil {
		if pids, err := old.Pids(); err == nil && len(pids) > 0 {
			return nil, fmt.Errorf("cgroup %s has %d processes: %w", path, len(pids), errdefs.ErrAlreadyExists)
		}
	}
	switch HostMode() {
	case V1:
		return newV1(path, r)
	case V2:
		return newV2(path, r)
	}
	return nil, fmt.Errorf("cgroup %s: no cgroup hierarchy on this host: %w", path, errdefs.ErrUnavailable)
}

// Load opens an existing cgroup, e.g. after a shim restart.
func Load(path string) (Manager, error) {
	switch HostMode() {
	case V1:
		return loadV1(path)
	case V2:
		return loadV2(path)
	}
	return nil, fmt.Errorf("cgroup %s: no cgroup hierarchy on this host: %w", path, errdefs.ErrUnavailable)
}

var errNotEmpty = errors.New("cgroup still has processes")

// WarmPrefix starts the name of a group a warm shim makes ahead of its
// container (shim/container.WarmCgroup). No container ID starts with a
// dot, so it never meets a container's group; berthd's start removes the
// empty ones a killed warm shim left (RemoveEmpty).
const WarmPrefix = ".warm-"

// CanRename reports whether this host's groups can be renamed (v1).
func CanRename() bool { return HostMode() == V1 }

// RemoveEmpty removes parent's child groups whose names start with
// prefix and that hold no process, in every hierarchy; groups in use
// stay. It is for leftovers: groups made ahead of time by a process that
// was killed before it could remove them.
func RemoveEmpty(parent, prefix string) error {
	if parent == "" {
		parent = DefaultParent
	}
	if prefix == "" || strings.Contains(prefix, "/") {
		return fmt.Errorf("remove empty cgroups: prefix %q: %w", prefix, errdefs.ErrInvalidArgument)
	}
	var dirs []string
	switch HostMode() {
	case V1:
		roots, err := v1Dirs(path.Clean("/" + parent))
		if err != nil {
			return err
		}
		dirs = roots
	case V2:
		dirs = []string{filepath.Join(v2Root, path.Clean("/"+parent))}
	default:
		return nil
	}
	var errs []error
	for _, dir := range dirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			if !os.IsNotExist(err) {
				errs = append(errs, err)
			}
			continue
		}
		for _, e := range ents {
			if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
				continue
			}
			// rmdir fails (EBUSY) on a group with processes or children:
			// exactly the ones to keep.
			if err := unix.Rmdir(filepath.Join(dir, e.Name())); err != nil && err != unix.EBUSY && err != unix.ENOENT {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", filepath.Join(dir, e.Name()), err))
			}
		}
	}
	return errors.Join(errs...)
}
