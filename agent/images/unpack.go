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

	"github.com/berth-dev/berth/content"
	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/snapshotter"
	"github.com/berth-dev/berth/snapshotter/layer"
)

// extractPrefix starts the keys of the temporary Active snapshots layers
// are unpacked into; GC removes those no lease holds (a crash's leftovers).
const extractPrefix = "extract-"

func sortStrings(s []string) { sort.Strings(s) }

// layerUnpack is one layer to unpack into the snapshot chainID.
type layerUnpack struct {
	desc    ocispec.Descriptor
	diffID  digest.Digest
	chainID string
	// parent is the chain ID of the layer below, "" for a base layer.
	parent string
	// parentReady, when set, is closed once parent is committed; nil
	// means it is already.
	parentReady <-chan struct{}
	// cpu, when set, bounds the layers applied at once: it is held while
	// the layer is decompressed and written, never while waiting.
	cpu func(context.Context) (release func(), err error)
	// stream, when set, is the layer blob while it downloads (see
	// content.LocalStore.Follow), for the first attempt to read; a second
	// attempt reads the stored blob.
	stream io.ReadCloser
	// fetched, when set, waits for the download of the blob and returns
	// its result: the layer is committed only after it succeeded.
	fetched func() error
}

// open returns the layer's bytes: the stream the first time, if there is
// one, then the stored blob.
func (s *Service) openUnpack(ctx context.Context, u *layerUnpack) (io.ReadCloser, error) {
	if r := u.stream; r != nil {
		u.stream = nil
		return r, nil
	}
	return s.openLayer(ctx, u.desc)
}

// unpack makes the committed snapshot u.chainID exist: it prepares a
// temporary Active snapshot, applies the layer blob into it with the
// expected diff ID, and commits it under the chain ID, without a flush
// when the snapshotter can defer it: the caller runs syncSnapshots before
// it relies on the snapshot. It reports whether it unpacked (false when
// the snapshot appeared meanwhile).
//
// When the parent is not committed yet and the snapshotter is a Rebaser
// (overlay), the layer does not wait for it: it is applied into a base
// snapshot at once, and once the parent is committed, the directories the
// layer left implicit get the lower layers' metadata and the snapshot is
// committed onto the parent. So the layers of a pull unpack side by side,
// as fast as they arrive, and the result is the same as one after the
// other. Otherwise the layer waits for its parent first.
func (s *Service) unpack(ctx context.Context, l *lease, u layerUnpack) (bool, error) {
	desc, chainID, parent := u.desc, u.chainID, u.parent
	s.addSnapshot(l, chainID)
	// One unpack per chain ID in this process; others wait for it. A
	// layer holding its lock waits only for layers below it, whose locks
	// are other chain IDs of lower depth: no cycle.
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
	waitParent := func() error {
		if u.parentReady == nil {
			return nil
		}
		select {
		case <-u.parentReady:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	rb, canRebase := s.opts.Snapshots.(snapshotter.Rebaser)
	early := canRebase && parent != "" && u.parentReady != nil && !closed(u.parentReady)
	if !early {
		if err := waitParent(); err != nil {
			return false, err
		}
	}
	release := func() {}
	if u.cpu != nil {
		var err error
		if release, err = u.cpu(ctx); err != nil {
			return false, err
		}
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	key := extractPrefix + hex.EncodeToString(rnd[:]) + "-" + chainID
	s.addSnapshot(l, key)
	var err error
	if early {
		var implicit []string
		implicit, err = s.applyDeferred(ctx, key, &u)
		release()
		if err == nil {
			err = waitParent()
		}
		if err == nil {
			err = s.resolveImplicit(ctx, rb, key, parent, implicit)
		}
	} else {
		err = s.apply(ctx, key, parent, &u, false)
		release()
	}
	if err == nil && u.fetched != nil {
		if ferr := u.fetched(); ferr != nil {
			err = &content.DownloadError{Err: ferr}
		}
	}
	// A failed download is the download's error, not the layer's.
	var failedDownload *content.DownloadError
	isDownload := errors.As(err, &failedDownload)
	based := early // key has no parent: it is committed onto parent
	if err != nil && !isDownload && errors.Is(err, errdefs.ErrFailedPrecondition) && !errors.Is(err, errdefs.ErrDataLoss) {
		// A path through a symlink of a lower layer cannot be written
		// straight into the upper dir: apply through the mounted overlay.
		s.log.Debug("applying through a mounted overlay", "layer", desc.Digest, "reason", err)
		if rmErr := s.opts.Snapshots.Remove(context.WithoutCancel(ctx), key); rmErr != nil {
			return false, fmt.Errorf("layer %s: remove snapshot %s: %w", desc.Digest, key, rmErr)
		}
		based = false
		err = nil
		if u.fetched != nil {
			// The stored blob is read again: it must be complete.
			if ferr := u.fetched(); ferr != nil {
				err = &content.DownloadError{Err: ferr}
				isDownload = errors.As(err, &failedDownload)
			}
		}
		if err == nil {
			err = s.apply(ctx, key, parent, &u, true)
		}
	}
	if err != nil {
		if rmErr := s.opts.Snapshots.Remove(context.WithoutCancel(ctx), key); rmErr != nil && !errdefs.IsNotFound(rmErr) {
			s.log.Warn("remove failed unpack", "key", key, "error", rmErr)
		}
		if isDownload {
			err = failedDownload.Err
		}
		return false, fmt.Errorf("layer %s: %w", desc.Digest, err)
	}
	// One flush for the whole pull, in syncSnapshots, instead of one per
	// layer, where the snapshotter can defer it.
	ds, deferSync := s.opts.Snapshots.(snapshotter.DeferredSyncer)
	switch {
	case based:
		err = rb.CommitOnto(ctx, chainID, key, parent, !deferSync)
	case deferSync:
		err = ds.CommitUnsynced(ctx, chainID, key)
	default:
		err = s.opts.Snapshots.Commit(ctx, chainID, key)
	}
	if err != nil {
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

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// applyDeferred prepares key as a base snapshot and extracts the layer
// into it before its lower layers exist (see layer.WithDeferredParents).
// It returns the directories the layer left implicit.
func (s *Service) applyDeferred(ctx context.Context, key string, u *layerUnpack) ([]string, error) {
	desc := u.desc
	if _, err := s.opts.Snapshots.Prepare(ctx, key, ""); err != nil {
		return nil, fmt.Errorf("prepare snapshot: %w", err)
	}
	dir, err := snapshotter.WritableDir(ctx, s.opts.Snapshots, key)
	if err != nil {
		return nil, err
	}
	r, err := s.openUnpack(ctx, u)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	res, err := layer.Apply(ctx, dir, r, layer.WithExpectedDiffID(u.diffID), layer.WithMediaType(desc.MediaType), layer.WithLogger(s.log),
		layer.WithWhiteoutMode(layer.WhiteoutOverlay), layer.WithDeferredParents())
	return res.Implicit, err
}

// resolveImplicit completes a layer applied by applyDeferred once its
// parent is committed.
func (s *Service) resolveImplicit(ctx context.Context, rb snapshotter.Rebaser, key, parent string, implicit []string) error {
	if len(implicit) == 0 {
		return nil
	}
	lowers, err := rb.LowerDirs(ctx, parent)
	if err != nil {
		return err
	}
	dir, err := snapshotter.WritableDir(ctx, s.opts.Snapshots, key)
	if err != nil {
		return err
	}
	return layer.ResolveImplicit(dir, implicit, lowers)
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
func (s *Service) apply(ctx context.Context, key, parent string, u *layerUnpack, viaMount bool) error {
	desc := u.desc
	mounts, err := s.opts.Snapshots.Prepare(ctx, key, parent)
	if err != nil {
		return fmt.Errorf("prepare snapshot on %q: %w", parent, err)
	}
	r, err := s.openUnpack(ctx, u)
	if err != nil {
		return err
	}
	defer r.Close()
	opts := []layer.Option{layer.WithExpectedDiffID(u.diffID), layer.WithMediaType(desc.MediaType), layer.WithLogger(s.log)}
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
