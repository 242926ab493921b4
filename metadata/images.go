package metadata

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/distribution/reference"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// maxImageName bounds an image name; distribution allows 255 for the
// repository, plus a tag or a digest.
const maxImageName = 512

// ImageStore keeps image records in the context's namespace.
type ImageStore struct{ db *DB }

// ValidateImageName checks that name is a normalised reference
// ("docker.io/library/busybox:latest"): normalisation is the API edge's
// job, so that one image never has two keys.
func ValidateImageName(name string) error {
	if name == "" || len(name) > maxImageName {
		return fmt.Errorf("image name %.40q must be 1 to %d characters: %w", name, maxImageName, errdefs.ErrInvalidArgument)
	}
	named, err := reference.ParseNamed(name)
	if err != nil {
		return fmt.Errorf("image name %q: %v: %w", name, err, errdefs.ErrInvalidArgument)
	}
	if named.String() != name {
		return fmt.Errorf("image name %q is not normalised (want %q): %w", name, named.String(), errdefs.ErrInvalidArgument)
	}
	return nil
}

// Create records a new image.
func (s *ImageStore) Create(ctx context.Context, img *berthv1.Image) (*berthv1.Image, error) {
	if err := s.validate(img); err != nil {
		return nil, err
	}
	img = proto.Clone(img).(*berthv1.Image)
	now := timestamppb.New(time.Now().UTC())
	img.CreatedAt, img.UpdatedAt = now, now
	err := s.db.bolt.Update(func(tx *bolt.Tx) error {
		nsb, ns, err := namespaceForWrite(ctx, tx)
		if err != nil {
			return err
		}
		b := nsb.Bucket(bucketImages)
		if b.Get([]byte(img.Name)) != nil {
			return fmt.Errorf("image %q in namespace %q: %w", img.Name, ns, errdefs.ErrAlreadyExists)
		}
		return put(b, []byte(img.Name), img)
	})
	if err != nil {
		return nil, err
	}
	return img, nil
}

// Update replaces an existing image record, keeping its creation time.
func (s *ImageStore) Update(ctx context.Context, img *berthv1.Image) (*berthv1.Image, error) {
	if err := s.validate(img); err != nil {
		return nil, err
	}
	img = proto.Clone(img).(*berthv1.Image)
	err := s.db.bolt.Update(func(tx *bolt.Tx) error {
		nsb, ns, err := namespaceForWrite(ctx, tx)
		if err != nil {
			return err
		}
		b := nsb.Bucket(bucketImages)
		old := &berthv1.Image{}
		data := b.Get([]byte(img.Name))
		if data == nil {
			return fmt.Errorf("image %q in namespace %q: %w", img.Name, ns, errdefs.ErrNotFound)
		}
		if err := unmarshal(data, old, "image "+img.Name); err != nil {
			return err
		}
		img.CreatedAt = old.CreatedAt
		img.UpdatedAt = timestamppb.New(time.Now().UTC())
		return put(b, []byte(img.Name), img)
	})
	if err != nil {
		return nil, err
	}
	return img, nil
}

// Get returns the image called name.
func (s *ImageStore) Get(ctx context.Context, name string) (*berthv1.Image, error) {
	if err := ValidateImageName(name); err != nil {
		return nil, err
	}
	img := &berthv1.Image{}
	err := s.db.bolt.View(func(tx *bolt.Tx) error {
		nsb, ns, err := namespaceForRead(ctx, tx)
		if err != nil {
			return err
		}
		var data []byte
		if nsb != nil {
			data = nsb.Bucket(bucketImages).Get([]byte(name))
		}
		if data == nil {
			return fmt.Errorf("image %q in namespace %q: %w", name, ns, errdefs.ErrNotFound)
		}
		return unmarshal(data, img, "image "+name)
	})
	if err != nil {
		return nil, err
	}
	return img, nil
}

// List returns the images for which keep returns true (all when keep is
// nil), sorted by name.
func (s *ImageStore) List(ctx context.Context, keep func(*berthv1.Image) bool) ([]*berthv1.Image, error) {
	var out []*berthv1.Image
	err := s.db.bolt.View(func(tx *bolt.Tx) error {
		nsb, _, err := namespaceForRead(ctx, tx)
		if err != nil || nsb == nil {
			return err
		}
		return nsb.Bucket(bucketImages).ForEach(func(k, v []byte) error {
			img := &berthv1.Image{}
			if err := unmarshal(v, img, "image "+string(k)); err != nil {
				return err
			}
			if keep == nil || keep(img) {
				out = append(out, img)
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// Delete removes the image record called name. Blobs and snapshots it
// referenced become garbage for the next collection.
func (s *ImageStore) Delete(ctx context.Context, name string) error {
	if err := ValidateImageName(name); err != nil {
		return err
	}
	return s.db.bolt.Update(func(tx *bolt.Tx) error {
		nsb, ns, err := namespaceForRead(ctx, tx)
		if err != nil {
			return err
		}
		if nsb == nil || nsb.Bucket(bucketImages).Get([]byte(name)) == nil {
			return fmt.Errorf("image %q in namespace %q: %w", name, ns, errdefs.ErrNotFound)
		}
		return nsb.Bucket(bucketImages).Delete([]byte(name))
	})
}

func (s *ImageStore) validate(img *berthv1.Image) error {
	if img == nil {
		return fmt.Errorf("image record missing: %w", errdefs.ErrInvalidArgument)
	}
	if err := ValidateImageName(img.Name); err != nil {
		return err
	}
	if img.Target == nil || img.Target.Digest == "" {
		return fmt.Errorf("image %q: target digest missing: %w", img.Name, errdefs.ErrInvalidArgument)
	}
	return validateLabels("image "+img.Name, img.Labels)
}
