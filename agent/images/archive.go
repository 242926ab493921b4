package images

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/content"
	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
	"github.com/berth-dev/berth/snapshotter/layer"
)

// Annotations an archive's index.json carries per image.
const (
	// AnnotationImageName is the full reference, as containerd writes it.
	AnnotationImageName = "io.containerd.image.name"
	// AnnotationRefName is the OCI ref name; Berth writes the tag, as
	// skopeo and containerd do.
	AnnotationRefName = ocispec.AnnotationRefName
)

// dockerManifestEntry is one element of a `docker save` manifest.json.
type dockerManifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// Export writes the named images to w as one tar that is both an OCI
// image layout (oci-layout, index.json, blobs/sha256/...) and a `docker
// save` archive (manifest.json naming the same blob files), so skopeo,
// containerd and docker load all read it. Each image is exported as the
// platform manifest Berth holds.
func (s *Service) Export(ctx context.Context, w io.Writer, names []string) error {
	if len(names) == 0 {
		return fmt.Errorf("save: name at least one image: %w", errdefs.ErrInvalidArgument)
	}
	l := s.newLease()
	defer s.release(l)
	var imgs []*berthv1.Image
	for _, n := range names {
		img, err := s.findImage(ctx, n)
		if err != nil {
			return err
		}
		imgs = append(imgs, img)
	}
	tw := tar.NewWriter(w)
	mtime := time.Unix(0, 0)
	writeFile := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "blobs/", Mode: 0o755, ModTime: mtime, Typeflag: tar.TypeDir}); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "blobs/sha256/", Mode: 0o755, ModTime: mtime, Typeflag: tar.TypeDir}); err != nil {
		return err
	}
	written := map[digest.Digest]bool{}
	writeBlob := func(d ocispec.Descriptor) error {
		if written[d.Digest] {
			return nil
		}
		if err := d.Digest.Validate(); err != nil {
			return fmt.Errorf("digest %q: %v: %w", d.Digest, err, errdefs.ErrInvalidArgument)
		}
		s.addBlob(l, d.Digest.String())
		ra, err := s.opts.Content.ReaderAt(ctx, d)
		if err != nil {
			return fmt.Errorf("blob %s is not in the content store (pull the image again): %w", d.Digest, err)
		}
		defer ra.Close()
		if err := tw.WriteHeader(&tar.Header{Name: "blobs/sha256/" + d.Digest.Encoded(), Mode: 0o644, Size: ra.Size(), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := io.Copy(tw, io.NewSectionReader(ra, 0, ra.Size())); err != nil {
			return err
		}
		written[d.Digest] = true
		return ctx.Err()
	}
	index := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	index.SchemaVersion = 2
	var dockerManifest []dockerManifestEntry
	for _, img := range imgs {
		m := fromProto(img.GetManifest())
		if m.Digest == "" {
			m = fromProto(img.GetTarget())
		}
		entry := dockerManifestEntry{Config: "blobs/sha256/" + digest.Digest(img.GetConfigDescriptor().GetDigest()).Encoded()}
		for _, ld := range img.GetLayers() {
			if err := writeBlob(fromProto(ld)); err != nil {
				return err
			}
			entry.Layers = append(entry.Layers, "blobs/sha256/"+digest.Digest(ld.GetDigest()).Encoded())
		}
		if err := writeBlob(fromProto(img.GetConfigDescriptor())); err != nil {
			return err
		}
		if err := writeBlob(m); err != nil {
			return err
		}
		ref, err := ParseRef(img.Name)
		if err != nil {
			return err
		}
		m.Annotations = map[string]string{AnnotationImageName: img.Name}
		if ref.Tag != "" {
			m.Annotations[AnnotationRefName] = ref.Tag
			entry.RepoTags = []string{ref.Familiar()}
		}
		if p := img.GetPlatform(); p.GetOs() != "" {
			m.Platform = &ocispec.Platform{OS: p.GetOs(), Architecture: p.GetArchitecture(), Variant: p.GetVariant()}
		}
		index.Manifests = append(index.Manifests, m)
		dockerManifest = append(dockerManifest, entry)
	}
	idx, _ := json.Marshal(index)
	dm, _ := json.Marshal(dockerManifest)
	if err := writeFile("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := writeFile("index.json", idx); err != nil {
		return err
	}
	if err := writeFile("manifest.json", dm); err != nil {
		return err
	}
	return tw.Close()
}

// findImage finds a record by name, or by a unique prefix of its manifest
// or config digest.
func (s *Service) findImage(ctx context.Context, n string) (*berthv1.Image, error) {
	if h := strings.TrimPrefix(n, "sha256:"); len(h) >= 4 && len(h) <= 64 && strings.Trim(h, "0123456789abcdef") == "" {
		list, err := s.opts.DB.Images().List(ctx, func(img *berthv1.Image) bool {
			return strings.HasPrefix(digest.Digest(img.GetTarget().GetDigest()).Encoded(), h) ||
				strings.HasPrefix(digest.Digest(img.GetConfigDescriptor().GetDigest()).Encoded(), h)
		})
		if err != nil {
			return nil, err
		}
		if len(list) > 0 {
			return list[0], nil
		}
	}
	ref, err := ParseRef(n)
	if err != nil {
		return nil, err
	}
	img, err := s.opts.DB.Images().Get(ctx, ref.Name)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("no such image: %s: %w", n, errdefs.ErrNotFound)
	}
	return img, err
}

// maxArchiveMeta bounds the JSON files of an archive read into memory.
const maxArchiveMeta = 16 << 20

// ImportOptions configures Import.
type ImportOptions struct {
	// Name is given to an image the archive does not name.
	Name string
	// Platform chooses from multi-platform indexes; zero is the host's.
	Platform ocispec.Platform
}

// Import reads an OCI image layout tar or a `docker save` tar (old layout
// with <id>/layer.tar, or the OCI-based one of Docker 25+) from r, stores
// every file in the content store (each blob verified against its
// digest), unpacks the images' layers and records them last. Files the
// archive's manifests do not reference are collected at the end.
func (s *Service) Import(ctx context.Context, r io.Reader, opts ImportOptions) (_ []*berthv1.Image, retErr error) {
	l := s.newLease()
	defer func() {
		s.release(l)
		if _, err := s.GarbageCollect(context.WithoutCancel(ctx), GCOptions{}); err != nil {
			s.log.Warn("collect garbage after load", "error", err)
		}
	}()
	files := map[string]ocispec.Descriptor{} // path in the archive → stored blob
	meta := map[string][]byte{}
	tr := tar.NewReader(r)
	var rnd [6]byte
	rand.Read(rnd[:])
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("load: the archive is not a valid tar: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		switch name {
		case "index.json", "manifest.json", "oci-layout", "repositories":
			b, err := io.ReadAll(io.LimitReader(tr, maxArchiveMeta+1))
			if err != nil {
				return nil, fmt.Errorf("load: %s: %w", name, err)
			}
			if len(b) > maxArchiveMeta {
				return nil, fmt.Errorf("load: %s is larger than %d bytes: %w", name, maxArchiveMeta, errdefs.ErrInvalidArgument)
			}
			meta[name] = b
			continue
		}
		desc := ocispec.Descriptor{Size: hdr.Size}
		if h, ok := strings.CutPrefix(name, "blobs/sha256/"); ok {
			desc.Digest = digest.NewDigestFromEncoded(digest.SHA256, h)
			if err := desc.Digest.Validate(); err != nil {
				return nil, fmt.Errorf("load: %s is not named by a sha256 digest: %w", name, errdefs.ErrInvalidArgument)
			}
			s.addBlob(l, desc.Digest.String())
		}
		d, err := s.storeFile(ctx, l, fmt.Sprintf("import-%s-%d", hex.EncodeToString(rnd[:]), n), desc, tr)
		if err != nil {
			return nil, fmt.Errorf("load: %s: %w", name, err)
		}
		desc.Digest = d
		files[name] = desc
	}
	type entry struct {
		name     string
		target   ocispec.Descriptor
		manifest ocispec.Descriptor
	}
	var entries []entry
	platform := opts.Platform
	if platform.OS == "" {
		platform = HostPlatform()
	}
	if b, ok := meta["index.json"]; ok {
		var idx ocispec.Index
		if err := json.Unmarshal(b, &idx); err != nil {
			return nil, fmt.Errorf("load: index.json: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		// Docker's manifest.json names images where index.json may not.
		tags := map[string]string{}
		var dm []dockerManifestEntry
		if json.Unmarshal(meta["manifest.json"], &dm) == nil {
			for _, e := range dm {
				if len(e.RepoTags) > 0 {
					tags[path.Base(e.Config)] = e.RepoTags[0]
				}
			}
		}
		for _, d := range idx.Manifests {
			if err := d.Digest.Validate(); err != nil {
				return nil, fmt.Errorf("load: index.json: digest %q: %w", d.Digest, errdefs.ErrInvalidArgument)
			}
			m := d
			if isIndex(d.MediaType) {
				var child ocispec.Index
				if err := s.readJSON(ctx, d, &child); err != nil {
					return nil, fmt.Errorf("load: %w", err)
				}
				var err error
				if m, err = pickPlatform(child, platform); err != nil {
					return nil, fmt.Errorf("load: %w", err)
				}
			}
			name := d.Annotations[AnnotationImageName]
			if name == "" {
				if rn := d.Annotations[AnnotationRefName]; strings.ContainsAny(rn, "/:") {
					name = rn
				}
			}
			if name == "" {
				var mf ocispec.Manifest
				if err := s.readJSON(ctx, m, &mf); err == nil {
					name = tags[mf.Config.Digest.Encoded()]
				}
			}
			if name == "" {
				name = opts.Name
			}
			if name == "" {
				return nil, fmt.Errorf("load: the archive does not name image %s: give a name: %w", d.Digest, errdefs.ErrInvalidArgument)
			}
			entries = append(entries, entry{name: name, target: d, manifest: m})
		}
	} else if b, ok := meta["manifest.json"]; ok {
		var dm []dockerManifestEntry
		if err := json.Unmarshal(b, &dm); err != nil {
			return nil, fmt.Errorf("load: manifest.json: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		for _, e := range dm {
			md, err := s.dockerManifest(ctx, l, files, e)
			if err != nil {
				return nil, fmt.Errorf("load: %w", err)
			}
			names := e.RepoTags
			if len(names) == 0 && opts.Name != "" {
				names = []string{opts.Name}
			}
			if len(names) == 0 {
				return nil, fmt.Errorf("load: the archive does not name image %s: give a name: %w", e.Config, errdefs.ErrInvalidArgument)
			}
			for _, n := range names {
				entries = append(entries, entry{name: n, target: md, manifest: md})
			}
		}
	} else {
		return nil, fmt.Errorf("load: the archive has neither index.json (OCI layout) nor manifest.json (docker save): %w", errdefs.ErrInvalidArgument)
	}
	var out []*berthv1.Image
	for _, e := range entries {
		ref, err := ParseRef(e.name)
		if err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		if e.manifest.MediaType == "" {
			e.manifest.MediaType = ocispec.MediaTypeImageManifest
		}
		var m ocispec.Manifest
		if err := s.readJSON(ctx, e.manifest, &m); err != nil {
			return nil, fmt.Errorf("load %s: %w", ref.Familiar(), err)
		}
		if err := validateManifest(e.manifest, &m); err != nil {
			return nil, fmt.Errorf("load %s: %w", ref.Familiar(), err)
		}
		var cfg ocispec.Image
		if err := s.readJSON(ctx, m.Config, &cfg); err != nil {
			return nil, fmt.Errorf("load %s: %w", ref.Familiar(), err)
		}
		if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
			return nil, fmt.Errorf("load %s: config lists %d diff IDs for %d layers: %w", ref.Familiar(), len(cfg.RootFS.DiffIDs), len(m.Layers), errdefs.ErrInvalidArgument)
		}
		for _, b := range append([]ocispec.Descriptor{e.target, e.manifest, m.Config}, m.Layers...) {
			s.addBlob(l, b.Digest.String())
		}
		if _, err := s.fetchAndUnpack(ctx, l, nil, m.Layers, cfg.RootFS.DiffIDs, func(*berthv1.Progress) {}); err != nil {
			return nil, fmt.Errorf("load %s: %w", ref.Familiar(), err)
		}
		img := s.imageRecord(ctx, ref.Name, e.target, e.manifest, &m, &cfg)
		saved, err := s.opts.DB.Images().Create(ctx, img)
		if errdefs.IsAlreadyExists(err) {
			saved, err = s.opts.DB.Images().Update(ctx, img)
		}
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", ref.Familiar(), err)
		}
		out = append(out, saved)
	}
	return out, nil
}

// storeFile writes one archive member into the content store, verified
// against desc.Digest when the archive names it, and returns its digest.
func (s *Service) storeFile(ctx context.Context, l *lease, ref string, desc ocispec.Descriptor, r io.Reader) (digest.Digest, error) {
	if desc.Digest != "" {
		if _, err := s.opts.Content.Info(ctx, desc.Digest); err == nil {
			return desc.Digest, nil
		}
	}
	w, err := content.OpenWriter(ctx, s.opts.Content, ref, desc)
	if errdefs.IsAlreadyExists(err) {
		return desc.Digest, nil
	}
	if err != nil {
		return "", err
	}
	defer w.Close()
	if _, err := io.Copy(w, r); err != nil {
		return "", err
	}
	d := w.Digest()
	s.addBlob(l, d.String())
	if err := w.Commit(ctx); err != nil && !errdefs.IsAlreadyExists(err) {
		return "", err
	}
	return d, nil
}

// dockerManifest builds (and stores) a Docker schema 2 manifest for an
// image of an old-style `docker save` archive, whose layers are plain or
// compressed tars named <id>/layer.tar.
func (s *Service) dockerManifest(ctx context.Context, l *lease, files map[string]ocispec.Descriptor, e dockerManifestEntry) (ocispec.Descriptor, error) {
	cfg, ok := files[path.Clean(e.Config)]
	if !ok {
		return ocispec.Descriptor{}, fmt.Errorf("manifest.json names config %s, which the archive lacks: %w", e.Config, errdefs.ErrInvalidArgument)
	}
	m := struct {
		SchemaVersion int                  `json:"schemaVersion"`
		MediaType     string               `json:"mediaType"`
		Config        ocispec.Descriptor   `json:"config"`
		Layers        []ocispec.Descriptor `json:"layers"`
	}{SchemaVersion: 2, MediaType: MediaTypeDockerManifest}
	cfg.MediaType = MediaTypeDockerConfig
	m.Config = cfg
	for _, lp := range e.Layers {
		ld, ok := files[path.Clean(lp)]
		if !ok {
			return ocispec.Descriptor{}, fmt.Errorf("manifest.json names layer %s, which the archive lacks: %w", lp, errdefs.ErrInvalidArgument)
		}
		ld.MediaType = layer.MediaTypeDockerLayer
		if ra, err := s.opts.Content.ReaderAt(ctx, ld); err == nil {
			head := make([]byte, 8)
			n, _ := ra.ReadAt(head, 0)
			ra.Close()
			switch layer.DetectCompression(head[:n]) {
			case layer.Gzip:
				ld.MediaType = layer.MediaTypeDockerLayerGzip
			case layer.Zstd:
				ld.MediaType = layer.MediaTypeOCILayerZstd
			}
		}
		m.Layers = append(m.Layers, ld)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: MediaTypeDockerManifest, Digest: digest.FromBytes(b), Size: int64(len(b))}
	s.addBlob(l, desc.Digest.String())
	if _, err := s.storeFile(ctx, l, "import-manifest-"+desc.Digest.Encoded(), desc, bytes.NewReader(b)); err != nil {
		return ocispec.Descriptor{}, err
	}
	return desc, nil
}
