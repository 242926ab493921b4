package agent

import (
	"bufio"
	"context"
	"fmt"
	"path"
	"runtime/debug"
	"strings"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/authn"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/proto"

	"github.com/berth-dev/berth/agent/images"
	"github.com/berth-dev/berth/internal/hugebuf"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

type imagesService struct {
	berthv1.UnimplementedImagesServiceServer
	a *Agent
}

func (s *imagesService) ListImages(ctx context.Context, req *berthv1.ListImagesRequest) (*berthv1.ListImagesResponse, error) {
	f := req.GetFilter()
	if f.GetReference() != "" {
		if _, err := path.Match(f.GetReference(), ""); err != nil {
			return nil, fmt.Errorf("filter.reference %q: %v: %w", f.GetReference(), err, errdefs.ErrInvalidArgument)
		}
	}
	list, err := s.a.db.Images().List(ctx, func(img *berthv1.Image) bool {
		if r := f.GetReference(); r != "" {
			full, _ := path.Match(r, img.Name)
			short, _ := path.Match(r, familiarRef(img.Name))
			repo, _ := path.Match(r, strings.SplitN(familiarRef(img.Name), ":", 2)[0])
			if !full && !short && !repo {
				return false
			}
		}
		for _, l := range f.GetLabels() {
			k, v, hasValue := strings.Cut(l, "=")
			got, ok := img.Labels[k]
			if !ok || (hasValue && got != v) {
				return false
			}
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return &berthv1.ListImagesResponse{Images: list}, nil
}

// findImage finds an image by name (normalised as Docker does), by full
// manifest digest, or by a unique prefix of its digest.
func (s *imagesService) findImage(ctx context.Context, ref string) (*berthv1.Image, error) {
	if ref == "" {
		return nil, fmt.Errorf("name must not be empty: %w", errdefs.ErrInvalidArgument)
	}
	hexRef := strings.TrimPrefix(ref, "sha256:")
	if isHex(hexRef) && len(hexRef) <= 64 {
		list, err := s.a.db.Images().List(ctx, func(img *berthv1.Image) bool {
			return strings.HasPrefix(strings.TrimPrefix(img.GetTarget().GetDigest(), "sha256:"), hexRef) ||
				strings.HasPrefix(strings.TrimPrefix(img.GetConfigDescriptor().GetDigest(), "sha256:"), hexRef)
		})
		if err != nil {
			return nil, err
		}
		if len(list) > 0 {
			return list[0], nil
		}
	}
	name, err := normalizeRef("name", ref)
	if err != nil {
		return nil, err
	}
	img, err := s.a.db.Images().Get(ctx, name)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("no such image: %s: %w", ref, errdefs.ErrNotFound)
	}
	return img, err
}

func isHex(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

func (s *imagesService) GetImage(ctx context.Context, req *berthv1.GetImageRequest) (*berthv1.GetImageResponse, error) {
	img, err := s.findImage(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &berthv1.GetImageResponse{Image: img}, nil
}

func (s *imagesService) TagImage(ctx context.Context, req *berthv1.TagImageRequest) (*berthv1.TagImageResponse, error) {
	src, err := s.findImage(ctx, req.GetSource())
	if err != nil {
		return nil, err
	}
	target, err := normalizeRef("target", req.GetTarget())
	if err != nil {
		return nil, err
	}
	img := proto.Clone(src).(*berthv1.Image)
	img.Name = target
	out, err := s.a.db.Images().Create(ctx, img)
	if errdefs.IsAlreadyExists(err) {
		out, err = s.a.db.Images().Update(ctx, img)
	}
	if err != nil {
		return nil, err
	}
	s.a.events.Publish(ctx, "/images/tag", target, map[string]string{"digest": img.GetTarget().GetDigest()})
	return &berthv1.TagImageResponse{Image: out}, nil
}

// RemoveImage untags an image. When no other name points to the same
// manifest, the image is deleted: its blobs and snapshots are collected
// at once unless something else uses them. An image still used by a
// container is refused unless force; a digest or ID that several names
// share is refused unless force, which then removes every name.
func (s *imagesService) RemoveImage(ctx context.Context, req *berthv1.RemoveImageRequest) (*berthv1.RemoveImageResponse, error) {
	img, err := s.findImage(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	target := img.GetTarget().GetDigest()
	same, err := s.a.db.Images().List(ctx, func(o *berthv1.Image) bool { return o.GetTarget().GetDigest() == target })
	if err != nil {
		return nil, err
	}
	// Given by digest or ID rather than by its own name?
	n, nerr := normalizeRef("name", req.GetName())
	byID := nerr != nil || n != img.Name
	remove := []*berthv1.Image{img}
	if byID && len(same) > 1 {
		if !req.GetForce() {
			return nil, fmt.Errorf("unable to delete %s (must be forced): the image is referenced by %d names (%s, ...): remove them by name or use force: %w",
				imageID(img), len(same), familiarRef(same[0].Name), errdefs.ErrFailedPrecondition)
		}
		remove = same
	}
	if !req.GetForce() {
		users, err := s.a.db.Containers().List(ctx, func(c *berthv1.Container) bool {
			if c.GetImageDigest() != "" {
				return c.GetImageDigest() == target && len(same) == len(remove)
			}
			for _, r := range remove {
				if n, err := normalizeRef("image", c.GetSpec().GetImage()); err == nil && n == r.Name {
					return true
				}
			}
			return false
		})
		if err != nil {
			return nil, err
		}
		if len(users) > 0 {
			return nil, fmt.Errorf("image %s is used by container %s (%s): remove the container first, or use force: %w",
				familiarRef(img.Name), users[0].Id[:min(12, len(users[0].Id))], users[0].Name, errdefs.ErrFailedPrecondition)
		}
	}
	resp := &berthv1.RemoveImageResponse{}
	for _, r := range remove {
		if err := s.a.db.Images().Delete(ctx, r.Name); err != nil {
			return nil, err
		}
		resp.Untagged = append(resp.Untagged, familiarRef(r.Name))
		if named, err := reference.ParseNormalizedNamed(r.Name); err == nil && target != "" {
			resp.Untagged = append(resp.Untagged, reference.FamiliarName(named)+"@"+target)
		}
		s.a.events.Publish(ctx, "/images/delete", r.Name, map[string]string{"digest": target})
	}
	if len(same) == len(remove) {
		resp.Deleted = append(resp.Deleted, img.GetConfigDescriptor().GetDigest())
		if _, err := s.a.images.GarbageCollect(ctx, images.GCOptions{}); err != nil {
			s.a.log.Warn("garbage collection after rmi", "error", err)
		}
	}
	return resp, nil
}

// imageID is the ID Docker shows: the config digest.
func imageID(img *berthv1.Image) string {
	if d := img.GetConfigDescriptor().GetDigest(); d != "" {
		return d
	}
	return img.GetTarget().GetDigest()
}

func platformOf(p *berthv1.Platform) ocispec.Platform {
	return ocispec.Platform{OS: p.GetOs(), Architecture: p.GetArchitecture(), Variant: p.GetVariant(), OSVersion: p.GetOsVersion()}
}

func authOf(a *berthv1.RegistryAuth) authn.Authenticator {
	return images.AuthFrom(a.GetUsername(), a.GetPassword(), a.GetIdentityToken(), a.GetRegistryToken())
}

func (s *imagesService) Pull(req *berthv1.PullRequest, stream berthv1.ImagesService_PullServer) error {
	ctx := stream.Context()
	res, err := s.a.images.Pull(ctx, req.GetReference(), images.PullOptions{
		Platform: platformOf(req.GetPlatform()),
		Auth:     authOf(req.GetAuth()),
		Resolved: func(r *berthv1.PullResolved) {
			stream.Send(&berthv1.PullResponse{Update: &berthv1.PullResponse_Resolved{Resolved: r}})
		},
		Progress: func(p *berthv1.Progress) {
			stream.Send(&berthv1.PullResponse{Update: &berthv1.PullResponse_Progress{Progress: p}})
		},
	})
	if err == nil {
		if !res.UpToDate {
			s.a.events.Publish(ctx, "/images/pull", res.Image.Name, map[string]string{"digest": res.Image.GetTarget().GetDigest()})
		}
		err = stream.Send(&berthv1.PullResponse{Update: &berthv1.PullResponse_Done{Done: &berthv1.PullDone{Image: res.Image, UpToDate: res.UpToDate}}})
	}
	if res == nil || !res.UpToDate {
		// The download rings and unpack buffers of a large pull are tens
		// of MiB, unused now: the huge-page buffers (internal/hugebuf)
		// go back to the kernel, and the heap's garbage with a full
		// collection, without which berthd's RSS stays at its peak until
		// the runtime's next forced GC, minutes later. In the background,
		// once the client has its answer.
		s.a.bg.Add(1)
		go func() {
			defer s.a.bg.Done()
			hugebuf.Release()
			debug.FreeOSMemory()
		}()
	}
	return err
}

func (s *imagesService) Push(req *berthv1.PushRequest, stream berthv1.ImagesService_PushServer) error {
	res, err := s.a.images.Push(stream.Context(), req.GetReference(), images.PushOptions{
		Auth: authOf(req.GetAuth()),
		Progress: func(p *berthv1.Progress) {
			stream.Send(&berthv1.PushResponse{Update: &berthv1.PushResponse_Progress{Progress: p}})
		},
	})
	if err != nil {
		return err
	}
	s.a.events.Publish(stream.Context(), "/images/push", res.Name, map[string]string{"digest": res.Digest})
	return stream.Send(&berthv1.PushResponse{Update: &berthv1.PushResponse_Done{Done: &berthv1.PushDone{Name: res.Name, Digest: res.Digest, Size: res.Size}}})
}

// importReader turns the chunks of an Import stream into an io.Reader.
type importReader struct {
	stream berthv1.ImagesService_ImportServer
	buf    []byte
}

func (r *importReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		req, err := r.stream.Recv()
		if err != nil {
			return 0, err // io.EOF when the client is done
		}
		if req.GetOptions() != nil {
			return 0, fmt.Errorf("import: options may only come first: %w", errdefs.ErrInvalidArgument)
		}
		r.buf = req.GetChunk()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (s *imagesService) Import(stream berthv1.ImagesService_ImportServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	opts := images.ImportOptions{}
	r := &importReader{stream: stream}
	if o := first.GetOptions(); o != nil {
		opts.Name = o.GetName()
		opts.Platform = platformOf(o.GetPlatform())
	} else {
		r.buf = first.GetChunk()
	}
	list, err := s.a.images.Import(stream.Context(), r, opts)
	if err != nil {
		return err
	}
	for _, img := range list {
		s.a.events.Publish(stream.Context(), "/images/load", img.Name, map[string]string{"digest": img.GetTarget().GetDigest()})
	}
	return stream.SendAndClose(&berthv1.ImportResponse{Images: list})
}

// exportWriter sends what it is given as ExportResponse chunks.
type exportWriter struct {
	stream berthv1.ImagesService_ExportServer
}

func (w exportWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += exportChunk {
		end := min(off+exportChunk, len(p))
		if err := w.stream.Send(&berthv1.ExportResponse{Chunk: p[off:end]}); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

// exportChunk keeps messages well under gRPC's default 4 MiB limit.
const exportChunk = 1 << 20

func (s *imagesService) Export(req *berthv1.ExportRequest, stream berthv1.ImagesService_ExportServer) error {
	bw := bufio.NewWriterSize(exportWriter{stream: stream}, exportChunk)
	if err := s.a.images.Export(stream.Context(), bw, req.GetNames()); err != nil {
		return err
	}
	return bw.Flush()
}

func (s *imagesService) Authenticate(ctx context.Context, req *berthv1.AuthenticateRequest) (*berthv1.AuthenticateResponse, error) {
	if err := s.a.images.Authenticate(ctx, req.GetRegistry(), authOf(req.GetAuth())); err != nil {
		return nil, err
	}
	return &berthv1.AuthenticateResponse{Status: "Login Succeeded"}, nil
}
