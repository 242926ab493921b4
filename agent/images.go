package agent

import (
	"context"
	"fmt"
	"path"
	"strings"

	"google.golang.org/protobuf/proto"

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
			return strings.HasPrefix(strings.TrimPrefix(img.GetTarget().GetDigest(), "sha256:"), hexRef)
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

// RemoveImage removes the record; the blobs and snapshots it referenced
// become garbage for the next collection. Refusing removal while containers
// use the image, and untagging by digest, come with the image issue.
func (s *imagesService) RemoveImage(ctx context.Context, req *berthv1.RemoveImageRequest) (*berthv1.RemoveImageResponse, error) {
	img, err := s.findImage(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	if !req.GetForce() {
		users, err := s.a.db.Containers().List(ctx, func(c *berthv1.Container) bool { return c.GetSpec().GetImage() == img.Name })
		if err != nil {
			return nil, err
		}
		if len(users) > 0 {
			return nil, fmt.Errorf("image %s is used by container %s (%s): remove the container first, or use force: %w",
				familiarRef(img.Name), users[0].Id[:min(12, len(users[0].Id))], users[0].Name, errdefs.ErrFailedPrecondition)
		}
	}
	if err := s.a.db.Images().Delete(ctx, img.Name); err != nil {
		return nil, err
	}
	s.a.events.Publish(ctx, "/images/delete", img.Name, map[string]string{"digest": img.GetTarget().GetDigest()})
	return &berthv1.RemoveImageResponse{Untagged: []string{familiarRef(img.Name)}}, nil
}

func (s *imagesService) Pull(*berthv1.PullRequest, berthv1.ImagesService_PullServer) error {
	return notYet("pull", "the image issue")
}

func (s *imagesService) Push(*berthv1.PushRequest, berthv1.ImagesService_PushServer) error {
	return notYet("push", "the image issue")
}

func (s *imagesService) Import(berthv1.ImagesService_ImportServer) error {
	return notYet("import (load)", "the image issue")
}

func (s *imagesService) Export(*berthv1.ExportRequest, berthv1.ImagesService_ExportServer) error {
	return notYet("export (save)", "the image issue")
}

func (s *imagesService) Authenticate(context.Context, *berthv1.AuthenticateRequest) (*berthv1.AuthenticateResponse, error) {
	return nil, notYet("registry login", "the image issue")
}
