package container

import (
	"encoding/json"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"

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
}

// PrepareCgroup starts making, in the background, the cgroup that Create
// would make for the spec that load returns (the bundle's config.json)
// under cgroupParent, and puts pre's init in it. The result goes to
// Create through Config.Cgroup; what Create does not take (another path,
// an error) it removes. A container that is never created leaves the
// cgroup to its bundle's cleanup, as a failed Create does.
func PrepareCgroup(load func() (*Spec, error), cgroupParent, id string, pre *Preforked) *PreparedCgroup {
	p := &PreparedCgroup{done: make(chan struct{}), loaded: make(chan struct{})}
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
		res, _ := splitPidsLimit(spec.view.Linux.Resources)
		if p.res, p.err = json.Marshal(res); p.err != nil {
			return
		}
		if p.cg, p.err = cgroup.New(p.path, res); p.err != nil {
			return
		}
		if pid > 0 && p.cg.Add(pid) == nil {
			p.pid = pid
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

// discard removes a prepared cgroup that Create did not take, once the
// init has moved to the one Create made.
func (p *PreparedCgroup) discard() {
	if p == nil {
		return
	}
	<-p.done
	if p.cg != nil {
		_ = p.cg.Delete()
		p.cg = nil
	}
}
