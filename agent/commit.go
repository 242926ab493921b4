package agent

import (
	"context"
	"fmt"

	"github.com/berth-dev/berth/agent/images"
	"github.com/berth-dev/berth/agent/runtime"
	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata/namespaces"
	shimv1 "github.com/berth-dev/berth/proto/berth/shim/v1"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// CommitContainer makes an image of a container's filesystem changes (see
// images.Service.Commit). The container's task lock is held throughout, so
// the container is neither started nor removed mid-commit; with pause, a
// running container is frozen while its changes are read.
func (s *containersService) CommitContainer(ctx context.Context, req *berthv1.CommitContainerRequest) (*berthv1.CommitContainerResponse, error) {
	c, err := s.a.db.Containers().Resolve(ctx, req.GetId())
	if err != nil {
		return nil, fieldErr("id", err)
	}
	if req.GetReference() == "" {
		return nil, fmt.Errorf("reference: give the new image a name (REPOSITORY[:TAG]): %w", errdefs.ErrInvalidArgument)
	}
	name, err := normalizeRef("reference", req.GetReference())
	if err != nil {
		return nil, err
	}
	ns := namespaces.FromContext(ctx)
	defer s.a.taskLocks.lock(ns, c.Id)()
	base, err := s.a.db.Images().Get(ctx, c.GetSpec().GetImage())
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("commit %s: its image %s is gone: pull it again: %w", c.Name, familiarRef(c.GetSpec().GetImage()), errdefs.ErrFailedPrecondition)
		}
		return nil, err
	}
	if req.GetPause() {
		if t, err := s.a.runtime.Get(ns, c.Id); err == nil {
			st, err := t.Shim.State(ctx, &shimv1.StateRequest{Id: c.Id})
			if err == nil && st.GetStatus() == shimv1.Status_STATUS_RUNNING {
				if _, err := t.Shim.Pause(ctx, &shimv1.PauseRequest{Id: c.Id}); err != nil {
					return nil, runtime.FromShim(err, "pause container "+c.Id+" for commit")
				}
				defer func() {
					if _, err := t.Shim.Resume(context.WithoutCancel(ctx), &shimv1.ResumeRequest{Id: c.Id}); err != nil {
						s.a.log.Warn("resume container after commit", "container", c.Id, "err", err)
					}
				}()
			}
		}
	}
	img, err := s.a.images.Commit(ctx, images.CommitOptions{
		Name:        name,
		Base:        base,
		SnapshotKey: c.GetSnapshotKey(),
		Comment:     req.GetComment(),
		Author:      req.GetAuthor(),
		Config:      req.GetConfig(),
		ContainerID: c.Id,
	})
	if err != nil {
		return nil, err
	}
	s.a.events.Publish(ctx, "/images/create", img.GetName(), map[string]string{"container": c.Id})
	return &berthv1.CommitContainerResponse{ImageName: img.GetName(), Digest: img.GetConfigDescriptor().GetDigest()}, nil
}
