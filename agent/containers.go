package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata/identifiers"
	"github.com/berth-dev/berth/metadata/namespaces"
	shimv1 "github.com/berth-dev/berth/proto/berth/shim/v1"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

type containersService struct {
	berthv1.UnimplementedContainersServiceServer
	a *Agent
}

func (s *containersService) CreateContainer(ctx context.Context, req *berthv1.CreateContainerRequest) (*berthv1.CreateContainerResponse, error) {
	spec := req.GetSpec()
	if spec == nil {
		return nil, fmt.Errorf("spec is required (at least spec.image): %w", errdefs.ErrInvalidArgument)
	}
	spec = proto.Clone(spec).(*berthv1.ContainerSpec)
	image, err := normalizeRef("spec.image", spec.GetImage())
	if err != nil {
		return nil, err
	}
	spec.Image = image
	if err := validateRestartPolicy(spec.GetRestartPolicy()); err != nil {
		return nil, err
	}
	if err := validateBindSources(spec); err != nil {
		return nil, err
	}
	c := &berthv1.Container{
		Id:     req.GetId(),
		Name:   req.GetName(),
		Spec:   spec,
		Labels: req.GetLabels(),
		Status: &berthv1.ContainerStatus{State: berthv1.ContainerState_CONTAINER_STATE_CREATED},
	}
	if c.Id == "" {
		c.Id = newID()
	} else if err := identifiers.Validate("id", c.Id); err != nil {
		return nil, err
	}
	if c.Name != "" {
		if err := identifiers.Validate("name", c.Name); err != nil {
			return nil, err
		}
	}
	// The image must be here: its top layer is the rootfs's parent.
	img, err := s.a.db.Images().Get(ctx, image)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("no such image: %s: pull it first: %w", familiarRef(image), errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	ns := namespaces.FromContext(ctx)
	c.Snapshotter, c.SnapshotKey, c.LogPath = s.a.snapshotter, c.Id, s.a.logPath(ns, c.Id)
	// The rootfs snapshot first, the record after: a crash in between
	// leaves an orphan snapshot for GC, never a record without a rootfs.
	if _, err := s.a.snapshots.Prepare(ctx, c.SnapshotKey, img.GetChainId()); err != nil {
		if errdefs.IsAlreadyExists(err) {
			return nil, fmt.Errorf("container id %s is in use (its rootfs snapshot exists): %w", c.Id, errdefs.ErrAlreadyExists)
		}
		return nil, fmt.Errorf("prepare the rootfs of %s from %s: %w", c.Id, familiarRef(image), err)
	}
	created := false
	defer func() {
		if !created {
			if err := s.a.snapshots.Remove(context.WithoutCancel(ctx), c.SnapshotKey); err != nil {
				s.a.log.Warn("remove rootfs of a container not created", "container", c.Id, "err", err)
			}
		}
	}()
	if c.Name != "" {
		if err := identifiers.Validate("name", c.Name); err != nil {
			return nil, err
		}
		created, err := s.a.db.Containers().Create(ctx, c)
		if err != nil {
			return nil, err
		}
		c = created
	} else {
		// Generated names can collide; try a few, as Docker does, with a
		// number appended after the first attempts.
		for attempt := 0; ; attempt++ {
			c.Name = randomName()
			if attempt >= 3 {
				c.Name += strconv.Itoa(attempt)
			}
			created, err := s.a.db.Containers().Create(ctx, c)
			if err == nil {
				c = created
				break
			}
			if !errors.Is(err, errdefs.ErrAlreadyExists) || attempt >= 10 || strings.Contains(err.Error(), "container "+c.Id) {
				return nil, err
			}
		}
	}
	created = true
	s.a.events.Publish(ctx, "/containers/create", c.Id, map[string]string{"name": c.Name, "image": familiarRef(c.Spec.Image)})
	return &berthv1.CreateContainerResponse{Container: c}, nil
}

func validateRestartPolicy(p *berthv1.RestartPolicy) error {
	switch p.GetName() {
	case "", "no", "always", "unless-stopped":
		if p.GetMaxRetries() != 0 {
			return fmt.Errorf("spec.restart_policy: max_retries applies only to on-failure: %w", errdefs.ErrInvalidArgument)
		}
	case "on-failure":
		if p.GetMaxRetries() < 0 {
			return fmt.Errorf("spec.restart_policy: max_retries %d is negative: %w", p.GetMaxRetries(), errdefs.ErrInvalidArgument)
		}
	default:
		return fmt.Errorf("spec.restart_policy %q: use no, on-failure[:N], always or unless-stopped: %w", p.GetName(), errdefs.ErrInvalidArgument)
	}
	return nil
}

func (s *containersService) GetContainer(ctx context.Context, req *berthv1.GetContainerRequest) (*berthv1.GetContainerResponse, error) {
	c, err := s.a.db.Containers().Resolve(ctx, req.GetId())
	if err != nil {
		return nil, fieldErr("id", err)
	}
	return &berthv1.GetContainerResponse{Container: c}, nil
}

func (s *containersService) ListContainers(ctx context.Context, req *berthv1.ListContainersRequest) (*berthv1.ListContainersResponse, error) {
	keep, err := containerFilter(req.GetFilter())
	if err != nil {
		return nil, err
	}
	list, err := s.a.db.Containers().List(ctx, keep)
	if err != nil {
		return nil, err
	}
	return &berthv1.ListContainersResponse{Containers: list}, nil
}

// containerFilter builds the predicate of a ListContainers filter: every
// set field must match; within a field any value may.
func containerFilter(f *berthv1.ContainerFilter) (func(*berthv1.Container) bool, error) {
	if f == nil {
		return nil, nil
	}
	var images []string
	for _, ref := range f.GetImages() {
		n, err := normalizeRef("filter.images", ref)
		if err != nil {
			return nil, err
		}
		images = append(images, n)
	}
	for _, n := range f.GetNames() {
		if _, err := path.Match(n, ""); err != nil {
			return nil, fmt.Errorf("filter.names %q: %v: %w", n, err, errdefs.ErrInvalidArgument)
		}
	}
	return func(c *berthv1.Container) bool {
		if len(f.GetIds()) > 0 && !anyMatch(f.GetIds(), func(p string) bool { return strings.HasPrefix(c.Id, p) }) {
			return false
		}
		if len(f.GetNames()) > 0 && !anyMatch(f.GetNames(), func(p string) bool {
			ok, _ := path.Match(p, c.Name)
			return ok || strings.Contains(c.Name, p)
		}) {
			return false
		}
		for _, l := range f.GetLabels() {
			k, v, hasValue := strings.Cut(l, "=")
			got, ok := c.Labels[k]
			if !ok || (hasValue && got != v) {
				return false
			}
		}
		if len(f.GetStates()) > 0 && !anyMatch(f.GetStates(), func(s berthv1.ContainerState) bool { return c.GetStatus().GetState() == s }) {
			return false
		}
		if len(images) > 0 && !anyMatch(images, func(i string) bool { return c.GetSpec().GetImage() == i }) {
			return false
		}
		return true
	}, nil
}

func anyMatch[T any](list []T, match func(T) bool) bool {
	for _, v := range list {
		if match(v) {
			return true
		}
	}
	return false
}

func (s *containersService) UpdateContainer(ctx context.Context, req *berthv1.UpdateContainerRequest) (*berthv1.UpdateContainerResponse, error) {
	in := req.GetContainer()
	if in == nil {
		return nil, fmt.Errorf("container is required: %w", errdefs.ErrInvalidArgument)
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		return nil, fmt.Errorf("update_mask names no field: give the fields to change (name, labels, spec.resources, spec.restart_policy): %w", errdefs.ErrInvalidArgument)
	}
	for _, p := range paths {
		switch p {
		case "name", "labels", "spec.resources", "spec.restart_policy":
		default:
			return nil, fmt.Errorf("update_mask: field %q cannot be updated (name, labels, spec.resources, spec.restart_policy can): %w", p, errdefs.ErrInvalidArgument)
		}
		if p == "spec.restart_policy" {
			if err := validateRestartPolicy(in.GetSpec().GetRestartPolicy()); err != nil {
				return nil, err
			}
		}
	}
	cur, err := s.a.db.Containers().Resolve(ctx, in.GetId())
	if err != nil {
		return nil, fieldErr("container.id", err)
	}
	upd := proto.Clone(in).(*berthv1.Container)
	upd.Id = cur.Id
	c, err := s.a.db.Containers().Update(ctx, upd, paths...)
	if err != nil {
		return nil, err
	}
	attrs := map[string]string{"name": c.Name}
	if cur.Name != c.Name {
		attrs["old_name"] = cur.Name
	}
	s.a.events.Publish(ctx, "/containers/update", c.Id, attrs)
	return &berthv1.UpdateContainerResponse{Container: c}, nil
}

func (s *containersService) DeleteContainer(ctx context.Context, req *berthv1.DeleteContainerRequest) (*berthv1.DeleteContainerResponse, error) {
	c, err := s.a.db.Containers().Resolve(ctx, req.GetId())
	if err != nil {
		return nil, fieldErr("id", err)
	}
	if err := s.a.removeContainer(ctx, c.Id, req.GetForce()); err != nil {
		return nil, err
	}
	return &berthv1.DeleteContainerResponse{}, nil
}

// removeContainer deletes a container: it refuses one with a live task
// unless force (which kills it), then removes the record first, then the
// task (shim, cgroup, rootfs mount, bundle), the snapshot and the logs. A
// crash part-way leaves files no record points to, for GC.
func (a *Agent) removeContainer(ctx context.Context, id string, force bool) error {
	rest, err := a.deleteContainerRecord(ctx, id, force)
	if err != nil {
		return err
	}
	rest()
	return nil
}

// deleteContainerRecord is a removal's first half: the container's
// record goes (and with it the container, for every API caller). The
// rest, which it returns, releases what the container held; it must be
// called, in any goroutine: until then the container's task lock is held
// and waitRemoved waits.
func (a *Agent) deleteContainerRecord(ctx context.Context, id string, force bool) (rest func(), err error) {
	ns := namespaces.FromContext(ctx)
	unlock := a.taskLocks.lock(ns, id)
	c, err := a.db.Containers().Get(ctx, id)
	if err != nil {
		unlock()
		return nil, err
	}
	// Marked before the record goes, cleared when all is gone: see
	// waitRemoved.
	rm, end := a.removals.begin(ns, id)
	fail := func(err error) (func(), error) {
		end()
		unlock()
		return nil, err
	}
	if t, err := a.runtime.Get(ns, id); err == nil && !force {
		st, serr := t.Shim.State(ctx, &shimv1.StateRequest{Id: id})
		if serr == nil && st.GetStatus() != shimv1.Status_STATUS_STOPPED {
			return fail(fmt.Errorf("container %s is running: stop it first, or remove it with force: %w", c.Name, errdefs.ErrFailedPrecondition))
		}
	}
	if err := a.db.Containers().Delete(ctx, id); err != nil {
		return fail(err)
	}
	rm.recordGone()
	return func() {
		defer unlock()
		defer end()
		// The network is released in the background, alongside the
		// rest: the container is gone for good, and CNI DEL is two
		// plugin execs the caller need not wait for. The record of the
		// attachment stays until it is done, so a crash meanwhile is
		// repaired at the next start.
		if err := a.network.DetachAsync(ns, id); err != nil {
			a.log.Warn("release the network of a removed container", "container", id, "err", err)
		}
		a.releaseRemoved(ctx, ns, id, c.GetSnapshotKey())
		a.events.Publish(ctx, "/containers/delete", id, map[string]string{"name": c.Name})
	}, nil
}

// releaseRemoved removes what a container whose record is gone leaves:
// its task (shim, cgroup, rootfs mount, bundle), its rootfs snapshot and
// its logs. Failures are logged; what stays is an orphan that the next
// start removes (removeOrphans) or GC does.
func (a *Agent) releaseRemoved(ctx context.Context, ns, id, snapshotKey string) {
	if _, err := a.runtime.Get(ns, id); err == nil {
		if _, err := a.runtime.Delete(ctx, ns, id, true); err != nil {
			a.log.Warn("delete the task of a removed container", "container", id, "err", err)
		}
	}
	if snapshotKey != "" {
		if err := a.snapshots.Remove(ctx, snapshotKey); err != nil && !errdefs.IsNotFound(err) {
			a.log.Warn("remove the rootfs of a removed container", "container", id, "err", err)
		}
	}
	if err := os.RemoveAll(filepath.Dir(a.logPath(ns, id))); err != nil {
		a.log.Warn("remove the logs of a removed container", "container", id, "err", err)
	}
}

// fieldErr prefixes an invalid-argument error with the request field it
// came from, so a client knows what to fix.
func fieldErr(field string, err error) error {
	if errors.Is(err, errdefs.ErrInvalidArgument) && !strings.HasPrefix(err.Error(), field) {
		return fmt.Errorf("%s: %w", field, err)
	}
	return err
}

// removals tracks the container removals in progress, for waitRemoved.
type removals struct {
	mu  sync.Mutex
	now map[string]*removal // ns/id → the removal under way
	// began is closed (and replaced) whenever a removal begins.
	began chan struct{}
}

// removal is one container removal under way. gone is closed once its
// record is deleted, or once the removal ends without deleting it.
type removal struct {
	gone     chan struct{}
	goneOnce sync.Once
}

func (r *removal) recordGone() { r.goneOnce.Do(func() { close(r.gone) }) }

// begin marks a removal of (ns, id) in progress; end ends it.
func (r *removals) begin(ns, id string) (rm *removal, end func()) {
	k := ns + "/" + id
	rm = &removal{gone: make(chan struct{})}
	r.mu.Lock()
	if r.now == nil {
		r.now = map[string]*removal{}
	}
	r.now[k] = rm
	if r.began != nil {
		close(r.began)
		r.began = nil
	}
	r.mu.Unlock()
	return rm, func() {
		r.mu.Lock()
		if r.now[k] == rm {
			delete(r.now, k)
		}
		r.mu.Unlock()
		rm.recordGone()
	}
}

// watch returns the channel closed when the removal of (ns, id) under way
// has deleted its record (nil if none is under way), and one closed when
// any removal begins next.
func (r *removals) watch(ns, id string) (gone, began <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.began == nil {
		r.began = make(chan struct{})
	}
	if rm := r.now[ns+"/"+id]; rm != nil {
		return rm.gone, r.began
	}
	return nil, r.began
}

// waitRemoved waits, up to timeout or ctx's end, until container id's
// record is gone: for docker run --rm, whose client hears of the exit only
// once the container is removed and its name free again. The removal's
// other steps (its task, rootfs, logs) go on after the record, in the
// background: a crash before they end leaves orphans that the next start
// removes, and nothing the user can see or name.
func (a *Agent) waitRemoved(ctx context.Context, id string, timeout time.Duration) {
	ns := namespaces.FromContext(ctx)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		// Watched before the record is read: a removal that begins after
		// the read closes began.
		gone, began := a.removals.watch(ns, id)
		if _, err := a.db.Containers().Get(ctx, id); errdefs.IsNotFound(err) {
			return
		}
		// Not removed yet: wait for a removal under way to delete the
		// record, or for one to begin (the exit handler starts it).
		if gone != nil {
			began = nil
		}
		select {
		case <-gone:
		case <-began:
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		}
	}
}
