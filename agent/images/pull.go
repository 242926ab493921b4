package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
	"github.com/berth-dev/berth/snapshotter"
)

// PullOptions configures Pull.
type PullOptions struct {
	// Platform selects the manifest of a multi-platform image; the zero
	// value is the host's.
	Platform ocispec.Platform
	// Auth authenticates to the registry; nil is anonymous.
	Auth authn.Authenticator
	// Resolved, if set, is called once the reference is resolved.
	Resolved func(*berthv1.PullResolved)
	// Progress, if set, receives per-layer progress. Calls are serialised.
	Progress func(*berthv1.Progress)
}

// PullResult is what a pull recorded.
type PullResult struct {
	Image *berthv1.Image
	// UpToDate is true when the name already pointed to this image and
	// nothing had to be fetched or unpacked.
	UpToDate bool
}

// HostPlatform is the platform images are pulled for by default.
func HostPlatform() ocispec.Platform {
	p := ocispec.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	if runtime.GOARCH == "arm" {
		p.Variant = "v7"
	}
	return p
}

// ShortID is the 12 hex digits Docker shows for a digest.
func ShortID(d string) string {
	h := digest.Digest(d).Encoded()
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

// Pull resolves ref, fetches what is missing, unpacks each layer as soon
// as it and its parent are ready, and records the image last.
//
// Layers are downloaded in parallel, at most MaxConcurrentDownloads at a
// time, through the content store's Fetch: a download interrupted for any
// reason (even a killed berthd) resumes with a Range request, and
// concurrent pulls of one blob share one download. Blobs are kept even for
// layers whose snapshot already exists, so that push and save work; such
// layers are reported "Already exists" and not unpacked again.
//
// On failure no image record is written. When the content failed
// verification a collection removes everything the pull wrote (partial
// downloads of other blobs excepted); after other failures the blobs and
// snapshots stay, unreferenced, until the next collection.
func (s *Service) Pull(ctx context.Context, refStr string, opts PullOptions) (_ *PullResult, retErr error) {
	ref, err := ParseRef(refStr)
	if err != nil {
		return nil, err
	}
	var progressMu sync.Mutex
	progress := func(p *berthv1.Progress) {
		if opts.Progress == nil {
			return
		}
		p.UpdatedAt = timestamppb.Now()
		progressMu.Lock()
		defer progressMu.Unlock()
		opts.Progress(p)
	}
	platform := opts.Platform
	explicitPlatform := platform.OS != "" || platform.Architecture != ""
	if !explicitPlatform {
		platform = HostPlatform()
	}
	if opts.Auth == nil {
		opts.Auth = authn.Anonymous
	}

	l := s.newLease()
	defer func() {
		s.release(l)
		if retErr != nil && badContent(retErr) {
			// Nothing of an image whose content failed verification
			// stays. After other failures (network, registry, a
			// cancelled client) what was written stays, unreferenced,
			// until the next collection, so a retry soon after
			// fetches only the rest.
			if _, err := s.GarbageCollect(context.WithoutCancel(ctx), GCOptions{}); err != nil {
				s.log.Warn("collect garbage after a failed pull", "ref", ref.Name, "error", err)
			}
		}
	}()

	rc, target, err := s.resolve(ctx, ref, opts.Auth)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref.Familiar(), err)
	}
	if err := s.fetchSmall(ctx, l, rc, "manifests", target); err != nil {
		return nil, fmt.Errorf("pull %s: manifest: %w", ref.Familiar(), err)
	}
	if !isIndex(target.MediaType) && !isManifest(target.MediaType) {
		// Some registries send no or a generic Content-Type: the
		// document says what it is.
		if mt := s.sniffMediaType(ctx, target); mt != "" {
			target.MediaType = mt
		}
	}
	manifestDesc := target
	if isIndex(target.MediaType) {
		var idx ocispec.Index
		if err := s.readJSON(ctx, target, &idx); err != nil {
			return nil, fmt.Errorf("pull %s: %w", ref.Familiar(), err)
		}
		if manifestDesc, err = pickPlatform(idx, platform); err != nil {
			return nil, fmt.Errorf("pull %s: %w", ref.Familiar(), err)
		}
		if err := s.fetchSmall(ctx, l, rc, "manifests", manifestDesc); err != nil {
			return nil, fmt.Errorf("pull %s: manifest for %s: %w", ref.Familiar(), platformString(platform), err)
		}
	} else if !isManifest(target.MediaType) {
		return nil, fmt.Errorf("pull %s: manifest media type %q is not supported (Docker schema 2 and OCI are): %w",
			ref.Familiar(), target.MediaType, errdefs.ErrNotImplemented)
	}
	var m ocispec.Manifest
	if err := s.readJSON(ctx, manifestDesc, &m); err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref.Familiar(), err)
	}
	if err := validateManifest(manifestDesc, &m); err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref.Familiar(), err)
	}
	if err := s.fetchSmall(ctx, l, rc, "blobs", m.Config); err != nil {
		return nil, fmt.Errorf("pull %s: config: %w", ref.Familiar(), err)
	}
	var cfg ocispec.Image
	if err := s.readJSON(ctx, m.Config, &cfg); err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref.Familiar(), err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("pull %s: config %s lists %d diff IDs for %d layers: %w",
			ref.Familiar(), m.Config.Digest, len(cfg.RootFS.DiffIDs), len(m.Layers), errdefs.ErrInvalidArgument)
	}
	for _, d := range cfg.RootFS.DiffIDs {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("pull %s: config %s: diff ID %q: %v: %w", ref.Familiar(), m.Config.Digest, d, err, errdefs.ErrInvalidArgument)
		}
	}
	if explicitPlatform && !isIndex(target.MediaType) && (cfg.OS != platform.OS || cfg.Architecture != platform.Architecture) {
		return nil, fmt.Errorf("pull %s: the image is for %s/%s, not the requested %s: %w",
			ref.Familiar(), cfg.OS, cfg.Architecture, platformString(platform), errdefs.ErrNotFound)
	}
	if opts.Resolved != nil {
		r := &berthv1.PullResolved{Name: ref.Name, Digest: target.Digest.String()}
		for _, ld := range m.Layers {
			r.Layers = append(r.Layers, toProto(ld))
		}
		opts.Resolved(r)
	}

	previous, _ := s.opts.DB.Images().Get(ctx, ref.Name)
	changed, err := s.fetchAndUnpack(ctx, l, rc, m.Layers, cfg.RootFS.DiffIDs, progress)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref.Familiar(), err)
	}

	img := s.imageRecord(ctx, ref.Name, target, manifestDesc, &m, &cfg)
	saved, err := s.opts.DB.Images().Create(ctx, img)
	if errdefs.IsAlreadyExists(err) {
		saved, err = s.opts.DB.Images().Update(ctx, img)
	}
	if err != nil {
		return nil, fmt.Errorf("pull %s: record the image: %w", ref.Familiar(), err)
	}
	upToDate := !changed && previous != nil && previous.GetTarget().GetDigest() == target.Digest.String()
	return &PullResult{Image: saved, UpToDate: upToDate}, nil
}

// badContent reports whether a pull failed because what the registry sent
// is wrong: a digest, size or diff ID mismatch, or malformed content.
func badContent(err error) bool {
	return errors.Is(err, errdefs.ErrFailedPrecondition) || errors.Is(err, errdefs.ErrDataLoss) || errors.Is(err, errdefs.ErrInvalidArgument)
}

// resolve finds the manifest of ref on the first endpoint that answers:
// the mirrors, then the registry. The error is the first endpoint's, the
// one the operator configured to be used.
func (s *Service) resolve(ctx context.Context, ref Ref, auth authn.Authenticator) (*repoClient, ocispec.Descriptor, error) {
	eps, err := endpoints(ref.Domain, s.host(ref.Domain))
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	var first error
	for _, ep := range eps {
		rc, err := newRepoClient(ctx, ep, ref.Path, auth, "pull")
		var desc ocispec.Descriptor
		if err == nil {
			desc, err = rc.resolve(ctx, ref.object())
		}
		if err == nil {
			if ref.Digest != "" && desc.Digest != ref.Digest {
				err = fmt.Errorf("%s answered digest %s for %s: %w", ep, desc.Digest, ref.Digest, errdefs.ErrDataLoss)
			} else {
				return rc, desc, nil
			}
		}
		if ctx.Err() != nil {
			return nil, ocispec.Descriptor{}, ctx.Err()
		}
		s.log.Debug("registry endpoint failed", "endpoint", ep.String(), "repository", ref.Path, "error", err)
		if first == nil {
			first = err
		}
	}
	return nil, ocispec.Descriptor{}, first
}

// fetchSmall fetches a manifest or config blob under the lease.
func (s *Service) fetchSmall(ctx context.Context, l *lease, rc *repoClient, kind string, desc ocispec.Descriptor) error {
	if err := desc.Digest.Validate(); err != nil {
		return fmt.Errorf("digest %q: %v: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	if desc.Size <= 0 || desc.Size > maxManifestSize {
		return fmt.Errorf("%s %s: size %d out of range (1 to %d): %w", kind, desc.Digest, desc.Size, maxManifestSize, errdefs.ErrInvalidArgument)
	}
	s.addBlob(l, desc.Digest.String())
	return s.opts.Content.Fetch(ctx, desc, rc.open(kind, desc), nil)
}

// sniffMediaType reads a manifest's own mediaType field, or guesses from
// its shape (an index lists manifests, a manifest has a config).
func (s *Service) sniffMediaType(ctx context.Context, desc ocispec.Descriptor) string {
	var doc struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
		Config    json.RawMessage   `json:"config"`
	}
	if err := s.readJSON(ctx, desc, &doc); err != nil {
		return ""
	}
	switch {
	case doc.MediaType != "":
		return doc.MediaType
	case doc.Manifests != nil:
		return ocispec.MediaTypeImageIndex
	case doc.Config != nil:
		return ocispec.MediaTypeImageManifest
	}
	return ""
}

// readJSON decodes a small blob from the content store.
func (s *Service) readJSON(ctx context.Context, desc ocispec.Descriptor, v any) error {
	b, err := s.readBlob(ctx, desc)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s %s is not valid JSON: %v: %w", desc.MediaType, desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	return nil
}

func (s *Service) readBlob(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	ra, err := s.opts.Content.ReaderAt(ctx, desc)
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	if ra.Size() > maxManifestSize {
		return nil, fmt.Errorf("blob %s is larger than %d bytes: %w", desc.Digest, maxManifestSize, errdefs.ErrInvalidArgument)
	}
	b := make([]byte, ra.Size())
	if _, err := ra.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read blob %s: %w", desc.Digest, err)
	}
	return b, nil
}

func isIndex(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == MediaTypeDockerManifestList
}

func isManifest(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == MediaTypeDockerManifest
}

func platformString(p ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// pickPlatform chooses the manifest for p from an index, as Docker does:
// OS and architecture must match; a variant, when asked for, too (arm64's
// "v8" is the same as none).
func pickPlatform(idx ocispec.Index, p ocispec.Platform) (ocispec.Descriptor, error) {
	norm := func(arch, variant string) string {
		if arch == "arm64" && variant == "v8" {
			return ""
		}
		return variant
	}
	var fallback *ocispec.Descriptor
	for i, d := range idx.Manifests {
		if d.Platform == nil || !isManifest(d.MediaType) && d.MediaType != "" {
			continue
		}
		if d.Platform.OS != p.OS || d.Platform.Architecture != p.Architecture {
			continue
		}
		if norm(p.Architecture, p.Variant) == norm(d.Platform.Architecture, d.Platform.Variant) {
			return d, nil
		}
		if p.Variant == "" && fallback == nil {
			fallback = &idx.Manifests[i]
		}
	}
	if fallback != nil {
		return *fallback, nil
	}
	return ocispec.Descriptor{}, fmt.Errorf("no matching manifest for %s in the manifest list entries (choose another with --platform): %w",
		platformString(p), errdefs.ErrNotFound)
}

// validateManifest checks every digest and size before it becomes a key or
// a path.
func validateManifest(desc ocispec.Descriptor, m *ocispec.Manifest) error {
	check := func(what string, d ocispec.Descriptor) error {
		if err := d.Digest.Validate(); err != nil {
			return fmt.Errorf("manifest %s: %s digest %q: %v: %w", desc.Digest, what, d.Digest, err, errdefs.ErrInvalidArgument)
		}
		if d.Size < 0 {
			return fmt.Errorf("manifest %s: %s %s has negative size: %w", desc.Digest, what, d.Digest, errdefs.ErrInvalidArgument)
		}
		return nil
	}
	if err := check("config", m.Config); err != nil {
		return err
	}
	for _, ld := range m.Layers {
		if err := check("layer", ld); err != nil {
			return err
		}
	}
	return nil
}

// chainIDs are the OCI chain IDs of the diff IDs: the identity of each
// layer together with all below it, which names its snapshot.
func chainIDs(diffIDs []digest.Digest) []string {
	ids := identity.ChainIDs(append([]digest.Digest(nil), diffIDs...))
	out := make([]string, len(ids))
	for i, d := range ids {
		out[i] = d.String()
	}
	return out
}

func progressOf(d ocispec.Descriptor, st berthv1.ProgressStatus, current, total int64) *berthv1.Progress {
	return &berthv1.Progress{Id: ShortID(d.Digest.String()), Digest: d.Digest.String(), Status: st, Current: current, Total: total}
}

// firstLayerHeadStart bounds how long the other downloads wait for the
// first layer to unpack: on a fast link it arrives well within it, alone,
// and a link that needs parallel connections loses little.
const firstLayerHeadStart = 250 * time.Millisecond

// fetchAndUnpack downloads the layers in parallel (bounded) and unpacks
// them in parallel (bounded), each as soon as it has arrived, then flushes
// them all at once. It reports whether anything was downloaded or
// unpacked.
func (s *Service) fetchAndUnpack(ctx context.Context, l *lease, rc *repoClient, layers []ocispec.Descriptor, diffIDs []digest.Digest, progress func(*berthv1.Progress)) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chain := chainIDs(diffIDs)
	n := len(layers)
	var changed atomic.Bool
	exists := make([]bool, n)
	for i := range layers {
		// The leases come first: GC must keep what we are about to reuse.
		s.addSnapshot(l, chain[i])
		s.addBlob(l, layers[i].Digest.String())
		if _, err := s.opts.Snapshots.Stat(ctx, chain[i]); err == nil {
			exists[i] = true
		}
	}
	for i := range layers {
		if !exists[i] {
			progress(progressOf(layers[i], berthv1.ProgressStatus_PROGRESS_STATUS_WAITING, 0, layers[i].Size))
		}
	}
	sem := make(chan struct{}, s.opts.MaxConcurrentDownloads)
	done := make([]chan error, n)
	// Downloads start in layer order (turn[i] is closed once layer i-1
	// holds its slot): the unpack waits for layer 0 first, so a later
	// layer winning the race for a slot would only delay it.
	turn := make([]chan struct{}, n+1)
	for i := range turn {
		turn[i] = make(chan struct{})
	}
	close(turn[0])
	// Where layers unpack one after the other (the native snapshotter),
	// the first layer to unpack gets a head start: the next downloads wait
	// until it is complete, or for firstLayerHeadStart at most, so that
	// they do not share the link and the CPU with it while the unpack
	// waits for nothing else. On overlay every layer unpacks as it
	// arrives, so none waits.
	first := -1
	for i := range layers {
		if !exists[i] {
			first = i
			break
		}
	}
	if _, ok := s.opts.Snapshots.(snapshotter.Rebaser); ok {
		// Every layer unpacks as it arrives, none waits for the first.
		first = -1
	}
	var wg sync.WaitGroup
	for i := range layers {
		done[i] = make(chan error, 1)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			next := sync.OnceFunc(func() { close(turn[i+1]) })
			defer next() // whatever happens, the chain goes on
			<-turn[i]    // always closed: by the previous goroutine, whatever its fate
			select {
			case sem <- struct{}{}:
				if i != first {
					next()
				} else {
					defer time.AfterFunc(firstLayerHeadStart, next).Stop()
				}
			case <-ctx.Done():
				done[i] <- ctx.Err()
				return
			}
			defer func() { <-sem }()
			d := layers[i]
			if _, err := s.opts.Content.Info(ctx, d.Digest); err == nil {
				done[i] <- nil
				return
			}
			if rc == nil {
				done[i] <- fmt.Errorf("layer %s is missing (the archive lacks it): %w", d.Digest, errdefs.ErrNotFound)
				return
			}
			changed.Store(true)
			var report func(int64, int64)
			if !exists[i] {
				report = func(cur, total int64) {
					progress(progressOf(d, berthv1.ProgressStatus_PROGRESS_STATUS_DOWNLOADING, cur, total))
				}
			}
			err := s.opts.Content.Fetch(ctx, d, rc.open("blobs", d), report)
			if err == nil && !exists[i] {
				progress(progressOf(d, berthv1.ProgressStatus_PROGRESS_STATUS_VERIFYING, d.Size, d.Size))
				progress(progressOf(d, berthv1.ProgressStatus_PROGRESS_STATUS_DOWNLOAD_COMPLETE, d.Size, d.Size))
				// The unpack follows the download; what it has left is
				// the extraction.
				progress(progressOf(d, berthv1.ProgressStatus_PROGRESS_STATUS_EXTRACTING, 0, d.Size))
			}
			if err != nil {
				err = fmt.Errorf("layer %s: %w", d.Digest, err)
			}
			done[i] <- err
		}(i)
	}
	// The flush of the layers unpacked so far runs behind the unpack of
	// the next ones, so that the one before the image record finds little
	// left to write. The flusher is owned here: closing kick ends it, and
	// it is waited for before returning.
	kick := make(chan struct{}, 1)
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		for range kick {
			if err := s.syncSnapshots(ctx); err != nil {
				s.log.Debug("background flush of unpacked layers", "error", err)
			}
		}
	}()
	stopFlusher := sync.OnceFunc(func() { close(kick); <-flushed })
	defer stopFlusher()

	// Each layer unpacks as it arrives, side by side with the others (see
	// unpack), at most MaxConcurrentUnpacks at a time. ready[i] is closed
	// once chain[i] is committed. Results are taken in layer order, so a
	// failure cancels only the layers above the first one that failed:
	// those below finish, and what they fetched stays for a retry.
	cpu := make(chan struct{}, s.opts.MaxConcurrentUnpacks)
	acquire := func(ctx context.Context) (func(), error) {
		select {
		case cpu <- struct{}{}:
			return func() { <-cpu }, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	ready := make([]chan struct{}, n)
	results := make([]chan error, n)
	for i := range layers {
		ready[i] = make(chan struct{})
		results[i] = make(chan error, 1)
		if exists[i] {
			close(ready[i])
			progress(progressOf(layers[i], berthv1.ProgressStatus_PROGRESS_STATUS_ALREADY_EXISTS, 0, 0))
		}
	}
	var uwg sync.WaitGroup
	for i := range layers {
		if exists[i] {
			continue
		}
		uwg.Add(1)
		go func(i int) {
			defer uwg.Done()
			results[i] <- s.pullLayer(ctx, l, layerUnpack{desc: layers[i], diffID: diffIDs[i], chainID: chain[i], cpu: acquire},
				i, chain, ready, done[i], &changed, kick, progress)
		}(i)
	}
	var firstErr error
	for i := range layers {
		if exists[i] {
			// The blobs of layers whose snapshot exists are fetched too
			// (push and save need them); they are waited for below.
			continue
		}
		if err := <-results[i]; err != nil {
			firstErr = err
			break
		}
	}
	if firstErr != nil {
		cancel()
	}
	uwg.Wait()
	wg.Wait()
	for i := range layers {
		if exists[i] {
			if err := <-done[i]; err != nil && firstErr == nil {
				firstErr = err
			}
		}
	}
	stopFlusher()
	if firstErr == nil {
		// Layers another pull committed unflushed count too: Sync
		// flushes whenever any snapshot is still unsynced.
		firstErr = s.syncSnapshots(ctx)
	}
	return changed.Load(), firstErr
}

// pullLayer unpacks layer i of a pull as it downloads (done yields the
// download's result) and reports its progress; the layer below is
// chain[i-1], committed once ready[i-1] is closed.
func (s *Service) pullLayer(ctx context.Context, l *lease, u layerUnpack, i int, chain []string, ready []chan struct{},
	done <-chan error, changed *atomic.Bool, kick chan<- struct{}, progress func(*berthv1.Progress)) error {
	u.fetched = sync.OnceValue(func() error {
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if i > 0 {
		u.parent, u.parentReady = chain[i-1], ready[i-1]
	}
	// The layer is read while it downloads, not read back from the disk
	// once it is complete.
	stream, err := s.opts.Content.Follow(ctx, u.desc)
	if err != nil {
		return err
	}
	u.stream = stream
	did, err := s.unpack(ctx, l, u)
	stream.Close() // before waiting for the download, which it may hold back
	if err == nil {
		err = u.fetched()
	}
	if err != nil {
		return err
	}
	if did {
		changed.Store(true)
		select {
		case kick <- struct{}{}:
		default: // a flush is pending already; it will cover this layer
		}
	}
	progress(progressOf(u.desc, berthv1.ProgressStatus_PROGRESS_STATUS_PULL_COMPLETE, u.desc.Size, u.desc.Size))
	close(ready[i])
	return nil
}

// imageRecord builds the record of a pulled or loaded image.
func (s *Service) imageRecord(ctx context.Context, name string, target, manifest ocispec.Descriptor, m *ocispec.Manifest, cfg *ocispec.Image) *berthv1.Image {
	img := &berthv1.Image{
		Name:             name,
		Target:           toProto(target),
		Manifest:         toProto(manifest),
		ConfigDescriptor: toProto(m.Config),
		Platform:         &berthv1.Platform{Os: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant, OsVersion: cfg.OSVersion},
		Config: &berthv1.ImageConfig{
			User: cfg.Config.User, Env: cfg.Config.Env, Entrypoint: cfg.Config.Entrypoint, Cmd: cfg.Config.Cmd,
			WorkingDir: cfg.Config.WorkingDir, Labels: cfg.Config.Labels, StopSignal: cfg.Config.StopSignal,
		},
	}
	for p := range cfg.Config.ExposedPorts {
		img.Config.ExposedPorts = append(img.Config.ExposedPorts, p)
	}
	for v := range cfg.Config.Volumes {
		img.Config.Volumes = append(img.Config.Volumes, v)
	}
	sortStrings(img.Config.ExposedPorts)
	sortStrings(img.Config.Volumes)
	if cfg.Created != nil {
		img.ImageCreated = timestamppb.New(*cfg.Created)
	}
	chain := chainIDs(cfg.RootFS.DiffIDs)
	for i, ld := range m.Layers {
		img.Layers = append(img.Layers, toProto(ld))
		img.DiffIds = append(img.DiffIds, cfg.RootFS.DiffIDs[i].String())
		img.Size += ld.Size
		if u, err := s.opts.Snapshots.Usage(ctx, chain[i]); err == nil {
			img.UnpackedSize += u.Size
		}
	}
	if len(chain) > 0 {
		img.ChainId = chain[len(chain)-1]
	}
	return img
}

func toProto(d ocispec.Descriptor) *berthv1.Descriptor {
	out := &berthv1.Descriptor{MediaType: d.MediaType, Digest: d.Digest.String(), Size: d.Size, Annotations: d.Annotations}
	if d.Platform != nil {
		out.Platform = &berthv1.Platform{Os: d.Platform.OS, Architecture: d.Platform.Architecture, Variant: d.Platform.Variant, OsVersion: d.Platform.OSVersion}
	}
	return out
}

func fromProto(d *berthv1.Descriptor) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: d.GetMediaType(), Digest: digest.Digest(d.GetDigest()), Size: d.GetSize(), Annotations: d.GetAnnotations()}
}
