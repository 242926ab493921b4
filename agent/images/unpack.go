package images

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/snapshotter"
	"github.com/berth-dev/berth/snapshotter/layer"
)

// extractPrefix starts the keys of the temporary Active snapshots layers
// are unpacked into; GC removes those no lease holds (a crash's leftovers).
const extractPrefix = "extract-"

func sortStrings(s []string) { sort.Strings(s) }

// unpack makes the committed snapshot chainID exist: it prepares a
// temporary Active snapshot on parent, applies the layer blob into it with
// the expected diff ID, and commits it under the chain ID, without a flush
// when the snapshotter can defer it: the caller runs syncSnapshots before
// it relies on the snapshot. It reports
// whether it unpacked (false when the snapshot appeared meanwhile).
func (s *Service) unpack(ctx context.Context, l *lease, desc ocispec.Descriptor, diffID digest.Digest, chainID, parent string) (bool, error) {
	s.addSnapshot(l, chainID)
	// One unpack per chain ID in this process; others wait for it.
	for {
		s.unpackMu.Lock()
		ch, busy := s.unpacking[chainID]
		if !busy {
			ch = make(chan struct{})
			s.unpacking[chainID] = ch
			s.unpackMu.Unlock()
			defer func() {
				s.unpackMu.Lock()
				delete(s.unpacking, chainID)
				close(ch)
				s.unpackMu.Unlock()
			}()
			break
		}
		s.unpackMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	if _, err := s.opts.Snapshots.Stat(ctx, chainID); err == nil {
		return false, nil
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	key := extractPrefix + hex.EncodeToString(rnd[:]) + "-" + chainID
	s.addSnapshot(l, key)
	err := s.apply(ctx, key, parent, desc, diffID, false)
	if err != nil && errors.Is(err, errdefs.ErrFailedPrecondition) && !errors.Is(err, errdefs.ErrDataLoss) {
		// A path through a symlink of a lower layer cannot be written
		// straight into the upper dir: apply through the mounted overlay.
		s.log.Debug("applying through a mounted overlay", "layer", desc.Digest, "reason", err)
		if rmErr := s.opts.Snapshots.Remove(context.WithoutCancel(ctx), key); rmErr != nil {
			return false, fmt.Errorf("layer %s: remove snapshot %s: %w", desc.Digest, key, rmErr)
		}
		err = s.apply(ctx, key, parent, desc, diffID, true)
	}
	if err != nil {
		if rmErr := s.opts.Snapshots.Remove(context.WithoutCancel(ctx), key); rmErr != nil && !errdefs.IsNotFound(rmErr) {
			s.log.Warn("remove failed unpack", "key", key, "error", rmErr)
		}
		return false, fmt.Errorf("layer %s: %w", desc.Digest, err)
	}
	commit := s.opts.Snapshots.Commit
	if ds, ok := s.opts.Snapshots.(snapshotter.DeferredSyncer); ok {
		// One flush for the whole pull, in syncSnapshots, instead of one
		// per layer.
		commit = ds.CommitUnsynced
	}
	if err := commit(ctx, chainID, key); err != nil {
		s.opts.Snapshots.Remove(context.WithoutCancel(ctx), key)
		if errdefs.IsAlreadyExists(err) {
			// Another berthd client (or process) committed the same
			// chain first: same content, nothing lost.
			return false, nil
		}
		return false, fmt.Errorf("layer %s: commit snapshot %s: %w", desc.Digest, chainID, err)
	}
	return true, nil
}

// syncSnapshots makes the snapshots unpacked so far durable (see
// snapshotter.DeferredSyncer). Callers run it before they write an image
// record, which must never name a layer that a power loss could lose.
func (s *Service) syncSnapshots(ctx context.Context) error {
	ds, ok := s.opts.Snapshots.(snapshotter.DeferredSyncer)
	if !ok {
		return nil
	}
	if err := ds.Sync(ctx); err != nil {
		return fmt.Errorf("flush unpacked layers: %w", err)
	}
	return nil
}

// apply prepares key on parent and extracts the layer into it. Overlay
// snapshots get the layer written straight into their upper dir with
// overlay whiteouts; native ones a full copy with whiteouts deleted;
// viaMount mounts the snapshot and applies through the mount.
func (s *Service) apply(ctx context.Context, key, parent string, desc ocispec.Descriptor, diffID digest.Digest, viaMount bool) error {
	mounts, err := s.opts.Snapshots.Prepare(ctx, key, parent)
	if err != nil {
		return fmt.Errorf("prepare snapshot on %q: %w", parent, err)
	}
	r, err := s.openLayer(ctx, desc)
	if err != nil {
		return err
	}
	defer r.Close()
	opts := []layer.Option{layer.WithExpectedDiffID(diffID), layer.WithMediaType(desc.MediaType), layer.WithLogger(s.log)}
	_, overlay := s.opts.Snapshots.(*snapshotter.Overlay)
	if viaMount {
		dir, err := os.MkdirTemp(s.opts.TempDir, "berth-unpack-")
		if err != nil {
			return err
		}
		defer os.Remove(dir)
		if err := snapshotter.MountAll(mounts, dir); err != nil {
			return fmt.Errorf("mount snapshot %s: %w", key, err)
		}
		_, err = layer.Apply(ctx, dir, r, append(opts, layer.WithWhiteoutMode(layer.WhiteoutDelete))...)
		if uerr := snapshotter.Unmount(dir); uerr != nil && err == nil {
			err = uerr
		}
		return err
	}
	dir, err := snapshotter.WritableDir(ctx, s.opts.Snapshots, key)
	if err != nil {
		return err
	}
	if overlay {
		opts = append(opts, layer.WithWhiteoutMode(layer.WhiteoutOverlay), layer.WithParents(lowerDirs(mounts)...))
	} else {
		opts = append(opts, layer.WithWhiteoutMode(layer.WhiteoutDelete))
	}
	_, err = layer.Apply(ctx, dir, r, opts...)
	return err
}

// openLayer opens a layer blob for one read from start to end, past the
// page cache (see content.StreamProvider).
func (s *Service) openLayer(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	return s.opts.Content.Stream(ctx, desc)
}

// lowerDirs reads the lower directories, topmost first, from an overlay
// mount; a bind mount (a first layer) has none.
func lowerDirs(mounts []snapshotter.Mount) []string {
	for _, m := range mounts {
		for _, o := range m.Options {
			if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
				return strings.Split(v, ":")
			}
		}
	}
	return nil
}
