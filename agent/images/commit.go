package images

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/content"
	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
	"github.com/berth-dev/berth/snapshotter"
	"github.com/berth-dev/berth/snapshotter/layer"
)

// CommitOptions describe a commit of a container's filesystem.
type CommitOptions struct {
	// Name is the new image's reference (required).
	Name string
	// Base is the record of the container's image.
	Base *berthv1.Image
	// SnapshotKey is the container's rootfs snapshot, prepared on
	// Base.ChainId.
	SnapshotKey string
	// Comment and Author go into the config's history and author.
	Comment, Author string
	// Config overrides the base config field by field where set.
	Config *berthv1.ImageConfig
	// ContainerID is recorded in the config, as Docker's "container".
	ContainerID string
}

// Commit turns a container's filesystem changes into a new image: the
// diff of its snapshot becomes a gzip layer on top of Base's layers, a
// new config (diff ID appended, history entry, overrides) and a manifest
// of Base's media-type family are stored, the layer's snapshot is
// committed under its chain ID (so a container of the new image needs no
// unpack), and the image record is written last. The caller keeps the
// container still (paused or stopped) while Commit diffs.
func (s *Service) Commit(ctx context.Context, opts CommitOptions) (*berthv1.Image, error) {
	ref, err := ParseRef(opts.Name)
	if err != nil {
		return nil, err
	}
	base := opts.Base
	manifest := base.GetManifest()
	if manifest == nil && isManifest(base.GetTarget().GetMediaType()) {
		manifest = base.GetTarget()
	}
	if manifest == nil {
		return nil, fmt.Errorf("commit: the record of image %s names no manifest: pull the image again: %w", base.GetName(), errdefs.ErrFailedPrecondition)
	}
	if _, err := s.opts.Content.Info(ctx, digest.Digest(manifest.GetDigest())); err != nil {
		return nil, fmt.Errorf("commit: the manifest of image %s is not in the content store: pull the image again: %w", base.GetName(), errdefs.ErrFailedPrecondition)
	}
	l := s.newLease()
	defer s.release(l)

	var m ocispec.Manifest
	if err := s.readJSON(ctx, fromProto(manifest), &m); err != nil {
		return nil, fmt.Errorf("commit: manifest of %s: %w", base.GetName(), err)
	}
	// The config is kept as raw JSON too, so fields this version does not
	// model (docker's container_config, os.features...) survive.
	rawCfg, err := s.readBlob(ctx, m.Config)
	if err != nil {
		return nil, fmt.Errorf("commit: config of %s: %w", base.GetName(), err)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(rawCfg, &cfg); err != nil {
		return nil, fmt.Errorf("commit: config of %s: %v: %w", base.GetName(), err, errdefs.ErrDataLoss)
	}
	var extra map[string]json.RawMessage
	if err := json.Unmarshal(rawCfg, &extra); err != nil {
		return nil, fmt.Errorf("commit: config of %s: %v: %w", base.GetName(), err, errdefs.ErrDataLoss)
	}

	docker := manifest.GetMediaType() == MediaTypeDockerManifest
	layerDesc, diffID, err := s.diffLayer(ctx, l, opts.SnapshotKey, base.GetChainId(), docker)
	if err != nil {
		return nil, fmt.Errorf("commit: diff container %s: %w", opts.ContainerID, err)
	}

	now := time.Now().UTC()
	cfg.Created = &now
	if opts.Author != "" {
		cfg.Author = opts.Author
	}
	cfg.RootFS.Type = "layers"
	cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, diffID)
	cfg.History = append(cfg.History, ocispec.History{Created: &now, Author: opts.Author, Comment: opts.Comment, CreatedBy: "berthctl commit"})
	overrideConfig(&cfg.Config, opts.Config)
	cfgBytes, err := mergeJSON(extra, cfg)
	if err != nil {
		return nil, fmt.Errorf("commit: encode config: %w", err)
	}
	if opts.ContainerID != "" {
		// Docker's config names the container it was committed from.
		var mm map[string]json.RawMessage
		_ = json.Unmarshal(cfgBytes, &mm)
		mm["container"], _ = json.Marshal(opts.ContainerID)
		cfgBytes, _ = json.Marshal(mm)
	}
	cfgDesc := ocispec.Descriptor{MediaType: m.Config.MediaType, Digest: digest.FromBytes(cfgBytes), Size: int64(len(cfgBytes))}
	if err := s.storeBytes(ctx, l, cfgDesc, cfgBytes); err != nil {
		return nil, fmt.Errorf("commit: store config: %w", err)
	}

	m.Config = cfgDesc
	m.Layers = append(m.Layers, layerDesc)
	var rawManifest map[string]json.RawMessage
	mb, err := s.readBlob(ctx, fromProto(manifest))
	if err == nil {
		err = json.Unmarshal(mb, &rawManifest)
	}
	if err != nil {
		return nil, fmt.Errorf("commit: manifest of %s: %w", base.GetName(), err)
	}
	delete(rawManifest, "annotations")
	m.Annotations = nil
	manBytes, err := mergeJSON(rawManifest, m)
	if err != nil {
		return nil, fmt.Errorf("commit: encode manifest: %w", err)
	}
	manDesc := ocispec.Descriptor{MediaType: manifest.GetMediaType(), Digest: digest.FromBytes(manBytes), Size: int64(len(manBytes))}
	if err := s.storeBytes(ctx, l, manDesc, manBytes); err != nil {
		return nil, fmt.Errorf("commit: store manifest: %w", err)
	}

	// The new layer's snapshot, under its chain ID: the blob is applied
	// on the base chain as a pull would, so the layer and the snapshot
	// cannot disagree.
	chain := chainIDs(cfg.RootFS.DiffIDs)
	if _, err := s.unpack(ctx, l, layerUnpack{desc: layerDesc, diffID: diffID, chainID: chain[len(chain)-1], parent: base.GetChainId()}); err != nil {
		return nil, fmt.Errorf("commit: unpack the new layer: %w", err)
	}
	if err := s.syncSnapshots(ctx); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}

	img := s.imageRecord(ctx, ref.Name, manDesc, manDesc, &m, &cfg)
	saved, err := s.opts.DB.Images().Create(ctx, img)
	if errdefs.IsAlreadyExists(err) {
		saved, err = s.opts.DB.Images().Update(ctx, img)
	}
	if err != nil {
		return nil, fmt.Errorf("commit: record image %s: %w", ref.Familiar(), err)
	}
	return saved, nil
}

// diffLayer writes the gzip'd diff of the snapshot key against its parent
// into the content store and returns its descriptor and diff ID.
func (s *Service) diffLayer(ctx context.Context, l *lease, key, parent string, docker bool) (ocispec.Descriptor, digest.Digest, error) {
	tmp, err := os.CreateTemp(s.opts.TempDir, "berth-commit-*.tar.gz")
	if err != nil {
		return ocispec.Descriptor{}, "", err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	zw := gzip.NewWriter(tmp)
	res, err := s.diffSnapshot(ctx, key, parent, zw)
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		return ocispec.Descriptor{}, "", err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return ocispec.Descriptor{}, "", err
	}
	mt := ocispec.MediaTypeImageLayerGzip
	if docker {
		mt = layer.MediaTypeDockerLayerGzip
	}
	w, err := content.OpenWriter(ctx, s.opts.Content, "commit-"+key, ocispec.Descriptor{MediaType: mt})
	if err != nil {
		return ocispec.Descriptor{}, "", err
	}
	defer w.Close()
	if err := w.Truncate(0); err != nil {
		return ocispec.Descriptor{}, "", err
	}
	n, err := io.Copy(w, tmp)
	if err != nil {
		return ocispec.Descriptor{}, "", err
	}
	d := w.Digest()
	s.addBlob(l, d.String())
	if err := w.Commit(ctx); err != nil && !errdefs.IsAlreadyExists(err) {
		return ocispec.Descriptor{}, "", err
	}
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: n}, res.DiffID, nil
}

// diffSnapshot writes the uncompressed layer tar of key's changes: the
// overlay upper dir as it is, or (native) the tree compared with a view
// of the parent.
func (s *Service) diffSnapshot(ctx context.Context, key, parent string, w io.Writer) (layer.Result, error) {
	upper, err := snapshotter.WritableDir(ctx, s.opts.Snapshots, key)
	if err != nil {
		return layer.Result{}, err
	}
	if _, overlay := s.opts.Snapshots.(*snapshotter.Overlay); overlay {
		return layer.Diff(ctx, upper, w, layer.WithDiffLogger(s.log))
	}
	lower, err := os.MkdirTemp(s.opts.TempDir, "berth-commit-lower-")
	if err != nil {
		return layer.Result{}, err
	}
	defer os.Remove(lower)
	if parent == "" {
		return layer.DiffDirs(ctx, lower, upper, w, layer.WithDiffLogger(s.log))
	}
	viewKey := "commit-view-" + key
	mounts, err := s.opts.Snapshots.View(ctx, viewKey, parent)
	if err != nil {
		return layer.Result{}, fmt.Errorf("view %s: %w", parent, err)
	}
	defer func() {
		if err := s.opts.Snapshots.Remove(context.WithoutCancel(ctx), viewKey); err != nil {
			s.log.Warn("remove commit view", "key", viewKey, "error", err)
		}
	}()
	if err := snapshotter.MountAll(mounts, lower); err != nil {
		return layer.Result{}, fmt.Errorf("mount view of %s: %w", parent, err)
	}
	defer func() {
		if err := snapshotter.Unmount(lower); err != nil {
			s.log.Warn("unmount commit view", "dir", lower, "error", err)
		}
	}()
	return layer.DiffDirs(ctx, lower, upper, w, layer.WithDiffLogger(s.log))
}

// storeBytes stores a small blob (config, manifest) under its digest.
func (s *Service) storeBytes(ctx context.Context, l *lease, desc ocispec.Descriptor, b []byte) error {
	s.addBlob(l, desc.Digest.String())
	if _, err := s.opts.Content.Info(ctx, desc.Digest); err == nil {
		return nil
	}
	w, err := content.OpenWriter(ctx, s.opts.Content, desc.Digest.String(), desc)
	if errdefs.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Truncate(0); err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	if err := w.Commit(ctx); err != nil && !errdefs.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// overrideConfig applies the set fields of o to c.
func overrideConfig(c *ocispec.ImageConfig, o *berthv1.ImageConfig) {
	if o == nil {
		return
	}
	if o.User != "" {
		c.User = o.User
	}
	for _, e := range o.Env {
		k, _, _ := cutEnv(e)
		replaced := false
		for i, old := range c.Env {
			if ok, _, _ := cutEnv(old); ok == k {
				c.Env[i], replaced = e, true
			}
		}
		if !replaced {
			c.Env = append(c.Env, e)
		}
	}
	if len(o.Entrypoint) > 0 {
		c.Entrypoint = o.Entrypoint
		// Docker: a new ENTRYPOINT resets an inherited CMD.
		if len(o.Cmd) == 0 {
			c.Cmd = nil
		}
	}
	if len(o.Cmd) > 0 {
		c.Cmd = o.Cmd
	}
	if o.WorkingDir != "" {
		c.WorkingDir = o.WorkingDir
	}
	if o.StopSignal != "" {
		c.StopSignal = o.StopSignal
	}
	for k, v := range o.Labels {
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		c.Labels[k] = v
	}
	for _, p := range o.ExposedPorts {
		if c.ExposedPorts == nil {
			c.ExposedPorts = map[string]struct{}{}
		}
		c.ExposedPorts[p] = struct{}{}
	}
	for _, v := range o.Volumes {
		if c.Volumes == nil {
			c.Volumes = map[string]struct{}{}
		}
		c.Volumes[v] = struct{}{}
	}
}

func cutEnv(e string) (string, string, bool) {
	for i := 0; i < len(e); i++ {
		if e[i] == '=' {
			return e[:i], e[i+1:], true
		}
	}
	return e, "", false
}

// mergeJSON encodes v over the fields of extra, so that unmodelled fields
// of the original document are kept.
func mergeJSON(extra map[string]json.RawMessage, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var known map[string]json.RawMessage
	if err := json.Unmarshal(b, &known); err != nil {
		return nil, err
	}
	out := map[string]json.RawMessage{}
	for k, val := range extra {
		out[k] = val
	}
	for k, val := range known {
		out[k] = val
	}
	return json.Marshal(out)
}
