package images

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/content"
	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
	"github.com/berth-dev/berth/snapshotter"
)

// LabelGCRoot on a snapshot keeps it (and its parents) through every
// collection, whoever created it.
const LabelGCRoot = "berth.dev/gc.root"

func namespacesWith(ctx context.Context, ns string) context.Context {
	return namespaces.WithNamespace(ctx, ns)
}

// GCOptions configures a collection.
type GCOptions struct {
	// AllIngests removes every unfinished download nobody is writing, not
	// only those older than Options.IngestExpiry.
	AllIngests bool
}

// GCResult counts what a collection removed.
type GCResult struct {
	BlobsRemoved, SnapshotsRemoved, IngestsRemoved, BytesFreed int64
}

// GarbageCollect removes blobs, snapshots and ingests that nothing
// references.
//
// Roots: every image record of every namespace (its target, manifest,
// config and layer blobs, and its chain ID snapshot), every container
// (its snapshot_key, and any snapshot whose key is its ID), every live
// lease (in-flight pulls, pushes and loads), and snapshots labelled
// LabelGCRoot. A snapshot's parents are kept with it.
//
// The sweep deletes metadata before files: the snapshotter's Remove drops
// the record in one bbolt transaction before the directory, and the
// content store's Delete is a single unlink. A crash mid-sweep therefore
// leaves only unreferenced files, which the next collection (Cleanup)
// removes. Ingests younger than IngestExpiry are kept so an interrupted
// pull can resume, unless opts.AllIngests.
func (s *Service) GarbageCollect(ctx context.Context, opts GCOptions) (GCResult, error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	var res GCResult
	blobs, snaps := s.leased()
	err := s.forEachNamespace(ctx, func(ctx context.Context) error {
		imgs, err := s.opts.DB.Images().List(ctx, nil)
		if err != nil {
			return err
		}
		for _, img := range imgs {
			for _, d := range append([]*berthv1.Descriptor{img.GetTarget(), img.GetManifest(), img.GetConfigDescriptor()}, img.GetLayers()...) {
				if d.GetDigest() != "" {
					blobs[d.GetDigest()] = struct{}{}
				}
			}
			if img.GetChainId() != "" {
				snaps[img.GetChainId()] = struct{}{}
			}
		}
		ctrs, err := s.opts.DB.Containers().List(ctx, nil)
		if err != nil {
			return err
		}
		for _, c := range ctrs {
			snaps[c.GetId()] = struct{}{}
			if c.GetSnapshotKey() != "" {
				snaps[c.GetSnapshotKey()] = struct{}{}
			}
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("garbage collection: mark: %w", err)
	}

	// Snapshots: mark parents of roots, then remove the rest leaves first.
	infos, err := s.opts.Snapshots.List(ctx)
	if err != nil {
		return res, fmt.Errorf("garbage collection: list snapshots: %w", err)
	}
	byKey := map[string]snapshotter.Info{}
	for _, in := range infos {
		byKey[in.Name] = in
		if _, ok := in.Labels[LabelGCRoot]; ok {
			snaps[in.Name] = struct{}{}
		}
	}
	keep := map[string]bool{}
	for k := range snaps {
		for k != "" && !keep[k] {
			in, ok := byKey[k]
			if !ok {
				break
			}
			keep[k] = true
			k = in.Parent
		}
	}
	children := map[string]int{}
	for _, in := range infos {
		if in.Parent != "" {
			children[in.Parent]++
		}
	}
	for progress := true; progress; {
		progress = false
		for _, in := range infos {
			if keep[in.Name] || children[in.Name] > 0 {
				continue
			}
			if _, gone := byKey[in.Name]; !gone {
				continue
			}
			u, _ := s.opts.Snapshots.Usage(ctx, in.Name)
			if err := s.opts.Snapshots.Remove(ctx, in.Name); err != nil && !errdefs.IsNotFound(err) {
				s.log.Warn("garbage collection: remove snapshot", "key", in.Name, "error", err)
				keep[in.Name] = true
				continue
			}
			delete(byKey, in.Name)
			if in.Parent != "" {
				children[in.Parent]--
			}
			res.SnapshotsRemoved++
			res.BytesFreed += u.Size
			progress = true
		}
	}

	// Blobs.
	var dead []digest.Digest
	var deadSize []int64
	err = s.opts.Content.Walk(ctx, func(in content.Info) error {
		if _, ok := blobs[in.Digest.String()]; !ok {
			dead = append(dead, in.Digest)
			deadSize = append(deadSize, in.Size)
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("garbage collection: walk blobs: %w", err)
	}
	for i, d := range dead {
		if err := s.opts.Content.Delete(ctx, d); err != nil && !errdefs.IsNotFound(err) {
			s.log.Warn("garbage collection: delete blob", "digest", d, "error", err)
			continue
		}
		res.BlobsRemoved++
		res.BytesFreed += deadSize[i]
	}

	// Ingests: unfinished downloads nobody writes (Abort refuses locked
	// ones) that are not leased and too old to resume, or all with
	// AllIngests.
	sts, err := s.opts.Content.ListStatuses(ctx)
	if err != nil {
		return res, fmt.Errorf("garbage collection: list ingests: %w", err)
	}
	for _, st := range sts {
		if _, ok := blobs[st.Expected.String()]; ok && st.Expected != "" {
			continue
		}
		if !opts.AllIngests && time.Since(st.UpdatedAt) < s.opts.IngestExpiry {
			continue
		}
		if err := s.opts.Content.Abort(ctx, st.Ref); err != nil {
			if !errors.Is(err, errdefs.ErrUnavailable) && !errdefs.IsNotFound(err) {
				s.log.Warn("garbage collection: abort ingest", "ref", st.Ref, "error", err)
			}
			continue
		}
		res.IngestsRemoved++
		res.BytesFreed += st.Offset
	}

	if err := s.opts.Snapshots.Cleanup(ctx); err != nil {
		s.log.Warn("garbage collection: snapshot cleanup", "error", err)
	}
	if err := s.opts.Content.Cleanup(ctx); err != nil {
		s.log.Warn("garbage collection: content cleanup", "error", err)
	}
	if res != (GCResult{}) {
		s.log.Info("garbage collected", "blobs", res.BlobsRemoved, "snapshots", res.SnapshotsRemoved,
			"ingests", res.IngestsRemoved, "bytes", res.BytesFreed)
	}
	return res, nil
}

// Usage is one line of `system df`.
type Usage struct {
	Kind                             string
	Total, Active, Size, Reclaimable int64
}

// DiskUsage reports the images of the context's namespace (size: their
// compressed blobs plus unpacked snapshots, each image counted once per
// manifest), and the content store and snapshots of the whole agent.
func (s *Service) DiskUsage(ctx context.Context) ([]Usage, error) {
	imgs, err := s.opts.DB.Images().List(ctx, nil)
	if err != nil {
		return nil, err
	}
	ctrs, err := s.opts.DB.Containers().List(ctx, nil)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, c := range ctrs {
		used[c.GetImageDigest()] = true
		if n, err := ParseRef(c.GetSpec().GetImage()); err == nil {
			used[n.Name] = true
		}
	}
	iu := Usage{Kind: "images", Total: int64(len(imgs))}
	seen := map[string]bool{}
	for _, img := range imgs {
		inUse := used[img.Name] || used[img.GetTarget().GetDigest()]
		if inUse {
			iu.Active++
		}
		if seen[img.GetTarget().GetDigest()] {
			continue
		}
		seen[img.GetTarget().GetDigest()] = true
		iu.Size += img.GetSize() + img.GetUnpackedSize()
		if !inUse {
			iu.Reclaimable += img.GetSize() + img.GetUnpackedSize()
		}
	}
	cu := Usage{Kind: "containers", Total: int64(len(ctrs))}
	for _, c := range ctrs {
		if st := c.GetStatus().GetState(); st == berthv1.ContainerState_CONTAINER_STATE_RUNNING || st == berthv1.ContainerState_CONTAINER_STATE_PAUSED {
			cu.Active++
		}
		if u, err := s.opts.Snapshots.Usage(ctx, c.GetSnapshotKey()); c.GetSnapshotKey() != "" && err == nil {
			cu.Size += u.Size
		}
	}
	bu := Usage{Kind: "content"}
	if err := s.opts.Content.Walk(ctx, func(in content.Info) error {
		bu.Total++
		bu.Size += in.Size
		return nil
	}); err != nil {
		return nil, err
	}
	if sts, err := s.opts.Content.ListStatuses(ctx); err == nil {
		for _, st := range sts {
			bu.Size += st.Offset
			bu.Reclaimable += st.Offset
		}
	}
	su := Usage{Kind: "snapshots"}
	infos, err := s.opts.Snapshots.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, in := range infos {
		su.Total++
		if u, err := s.opts.Snapshots.Usage(ctx, in.Name); err == nil {
			su.Size += u.Size
		}
	}
	return []Usage{iu, cu, bu, su}, nil
}
