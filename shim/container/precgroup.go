package container

import (
	"encoding/json"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/shim/container/cgroup"
)

// PreparedCgroup is a container's cgroup made ahead of its Create, with
// the container's preforked init already in it.
//
// Why: a warm shim is adopted (its container's bundle, config.json
// included, is written by then) a few milliseconds before berthd's Create
// call reaches it; on cgroup v1 making the cgroup is 2-6 ms of
// directories and file writes in a dozen hierarchies, which the init
// otherwise waits out inside Create. Made during the adoption, it is
// ready, or nearly, when Create needs it.
type PreparedCgroup struct {
	done   chan struct{}
	loaded chan struct{} // closed once spec is read (nil on error)
	spec   *Spec
	path   string
	res    []byte // the resources it was made with, as JSON
	pid    int    // the process put in it, 0 for none
	cg     cgroup.Manager
	err    error
	// warm is the warm shim's group (nil: none). Renamed into the
	// container's, it is empty; if it could not be, it is removed once
	// the init has left it.
	warm *WarmCgroup
}

// WarmCgroupPrefix starts the name of a warm shim's group.
const WarmCgroupPrefix = cgroup.WarmPrefix

// WarmCgroup is the group a warm shim makes before it is adopted, under
// berthd's default cgroup parent with the resources of a container run
// with no options, its preforked init in it.
//
// Why: making a container's group on cgroup v1 is a directory in each of
// a dozen hierarchies and a score of writes (the device allow-list is a
// write per rule), 3-5 ms on the start path even when done during the
// adoption. A warm shim has idle time to do it ahead; adoption renames
// the group to the container's path (a rename per hierarchy, well under
// a millisecond) and rewrites only the resources that differ. v2 cannot
// rename groups, so a v2 warm shim makes none (NewWarmCgroup fails) and
// its adoption makes the group as before.
type WarmCgroup struct {
	cg  cgroup.Manager
	res []byte // the resources it was made with, as PrepareCgroup marshals them
	pid int
}

// NewWarmCgroup makes the warm group parent/WarmCgroupPrefix+name with
// resources res and moves pre's init into it.
func NewWarmCgroup(parent, name string, res *specs.LinuxResources, pre *Preforked) (*WarmCgroup, error) {
	if pre == nil || pre.pid <= 0 {
		return nil, fmt.Errorf("warm cgroup: no preforked init: %w", errdefs.ErrInvalidArgument)
	}
	if !cgroup.CanRename() {
		return nil, fmt.Errorf("warm cgroup: this host's groups cannot be renamed (cgroup v2): %w", errdefs.ErrNotImplemented)
	}
	path, err := cgroup.GroupPath(parent, WarmCgroupPrefix+name)
	if err != nil {
		return nil, err
	}
	res, _ = splitPidsLimit(res)
	raw, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	cg, err := cgroup.New(path, res)
	if err != nil {
		return nil, err
	}
	if err := cg.Add(pre.pid); err != nil {
		_ = cg.Delete()
		return nil, err
	}
	return &WarmCgroup{cg: cg, res: raw, pid: pre.pid}, nil
}

// Close removes the group; its init must be gone (Preforked.Close).
func (w *WarmCgroup) Close() error {
	if w == nil || w.cg == nil {
		return nil
	}
	err := w.cg.Delete()
	if err == nil {
		w.cg = nil
	}
	return err
}

// adopt renames the group to path and hands it over, nil if it cannot.
func (w *WarmCgroup) adopt(path string) cgroup.Manager {
	if w == nil || w.cg == nil || w.cg.Rename(path) != nil {
		return nil
	}
	cg := w.cg
	w.cg = nil
	return cg
}

// PrepareCgroup starts making, in the background, the cgroup that Create
// would make for the spec that load returns (the bundle's config.json)
// under cgroupParent, and puts pre's init in it: warm's group renamed when
// there is one (nil: none), else a new one. The result goes to Create
// through Config.Cgroup; what Create does not take (another path, an
// error) it removes. A container that is never created leaves the cgroup
// to its bundle's cleanup, as a failed Create does.
func PrepareCgroup(load func() (*Spec, error), cgroupParent, id string, pre *Preforked, warm *WarmCgroup) *PreparedCgroup {
	p := &PreparedCgroup{done: make(chan struct{}), loaded: make(chan struct{}), warm: warm}
	pid := 0
	if pre != nil {
		pid = pre.pid
	}
	go func() {
		defer close(p.done)
		spec, err := load()
		if err == nil {
			p.spec = spec
		}
		close(p.loaded)
		if p.err = err; err != nil {
			return
		}
		if spec == nil || spec.view.Linux == nil {
			p.err = fmt.Errorf("prepare cgroup of %s: spec without linux section", id)
			return
		}
		if p.path, p.err = cgroup.GroupPath(cgroupParent, id); p.err != nil {
			return
		}
		if cg := warm.adopt(p.path); cg != nil {
			// take rewrites the resources if the spec's differ.
			p.cg, p.res, p.pid = cg, warm.res, warm.pid
			return
		}
		res, _ := splitPidsLimit(spec.view.Linux.Resources)
		if p.res, p.err = json.Marshal(res); p.err != nil {
			return
		}
		if p.cg, p.err = cgroup.New(p.path, res); p.err != nil {
			return
		}
		if pid > 0 && p.cg.Add(pid) == nil {
			p.pid = pid
			_ = warm.Close() // the init has left it
		}
	}()
	return p
}

// Spec returns the spec the preparation read (the bundle's config.json),
// nil if it could not: Create's caller uses it rather than read and parse
// the same file again.
func (p *PreparedCgroup) Spec() *Spec {
	if p == nil {
		return nil
	}
	<-p.loaded
	return p.spec
}

// take waits for the preparation and returns its cgroup if it is the one
// at path, updated to res if those differ, with pid (0: none) in it; nil
// when Create is to make the cgroup itself (the preparation failed, or
// made another one: Create then calls discard once pid has moved out).
func (p *PreparedCgroup) take(path string, res *specs.LinuxResources, pid int) cgroup.Manager {
	if p == nil {
		return nil
	}
	<-p.done
	if p.err != nil || p.cg == nil || p.path != path {
		return nil
	}
	if want, err := json.Marshal(res); err != nil || string(want) != string(p.res) {
		if err != nil || p.cg.Update(res) != nil {
			return nil // Create's New writes them all again
		}
	}
	if pid > 0 && pid != p.pid {
		if p.cg.Add(pid) != nil {
			return nil
		}
	}
	cg := p.cg
	p.cg = nil // Create's now
	return cg
}

// ReleaseWarm removes the warm shim's group if it was not renamed into
// the container's, once the preparation is over; for a shim that stops
// without Create, after its prefork is gone (Preforked.Close). The
// container's own group goes with its bundle.
func (p *PreparedCgroup) ReleaseWarm() {
	if p == nil {
		return
	}
	<-p.done
	_ = p.warm.Close() // nothing to do once renamed or removed
}

// discard removes a prepared cgroup that Create did not take, and a warm
// one not renamed, once the init has moved to the one Create made (or is
// gone).
func (p *PreparedCgroup) discard() {
	if p == nil {
		return
	}
	<-p.done
	if p.cg != nil {
		_ = p.cg.Delete()
		p.cg = nil
	}
	p.ReleaseWarm()
}
