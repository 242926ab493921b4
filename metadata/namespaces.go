package metadata

import (
	"context"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// Label limits, so that records stay small enough to read on every List.
const (
	maxLabelKey   = 256
	maxLabelBytes = 4096  // one key plus its value
	maxLabelsSize = 65536 // all labels of one object
)

// NamespaceStore keeps namespaces.
type NamespaceStore struct{ db *DB }

// Create records a new namespace.
func (s *NamespaceStore) Create(ctx context.Context, name string, labels map[string]string) (*berthv1.Namespace, error) {
	if err := namespaces.Validate(name); err != nil {
		return nil, err
	}
	if err := validateLabels("namespace "+name, labels); err != nil {
		return nil, err
	}
	now := timestamppb.New(time.Now().UTC())
	ns := &berthv1.Namespace{Name: name, Labels: labels, CreatedAt: now, UpdatedAt: now}
	err := s.db.bolt.Update(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketNamespaces)
		if root.Bucket([]byte(name)) != nil {
			return fmt.Errorf("namespace %q: %w", name, errdefs.ErrAlreadyExists)
		}
		_, err := createNamespaceBucket(root, ns)
		return err
	})
	if err != nil {
		return nil, err
	}
	return ns, nil
}

// Get returns one namespace.
func (s *NamespaceStore) Get(ctx context.Context, name string) (*berthv1.Namespace, error) {
	if err := namespaces.Validate(name); err != nil {
		return nil, err
	}
	ns := &berthv1.Namespace{}
	err := s.db.bolt.View(func(tx *bolt.Tx) error {
		b, err := namespaceBucket(tx, name)
		if err != nil {
			return err
		}
		return unmarshal(b.Get(keyRecord), ns, "namespace "+name)
	})
	if err != nil {
		return nil, err
	}
	return ns, nil
}

// List returns every namespace, sorted by name.
func (s *NamespaceStore) List(ctx context.Context) ([]*berthv1.Namespace, error) {
	var out []*berthv1.Namespace
	err := s.db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNamespaces).ForEachBucket(func(k []byte) error {
			ns := &berthv1.Namespace{}
			if err := unmarshal(tx.Bucket(bucketNamespaces).Bucket(k).Get(keyRecord), ns, "namespace "+string(k)); err != nil {
				return err
			}
			out = append(out, ns)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// Update replaces a namespace's labels.
func (s *NamespaceStore) Update(ctx context.Context, name string, labels map[string]string) (*berthv1.Namespace, error) {
	if err := namespaces.Validate(name); err != nil {
		return nil, err
	}
	if err := validateLabels("namespace "+name, labels); err != nil {
		return nil, err
	}
	ns := &berthv1.Namespace{}
	err := s.db.bolt.Update(func(tx *bolt.Tx) error {
		b, err := namespaceBucket(tx, name)
		if err != nil {
			return err
		}
		if err := unmarshal(b.Get(keyRecord), ns, "namespace "+name); err != nil {
			return err
		}
		ns.Labels = labels
		ns.UpdatedAt = timestamppb.New(time.Now().UTC())
		return put(b, keyRecord, ns)
	})
	if err != nil {
		return nil, err
	}
	return ns, nil
}

// Delete removes an empty namespace. One that still holds images or
// containers is refused with ErrFailedPrecondition: deleting it would lose
// records whose files (snapshots, logs) would then leak.
func (s *NamespaceStore) Delete(ctx context.Context, name string) error {
	if err := namespaces.Validate(name); err != nil {
		return err
	}
	return s.db.bolt.Update(func(tx *bolt.Tx) error {
		b, err := namespaceBucket(tx, name)
		if err != nil {
			return err
		}
		images, containers := b.Bucket(bucketImages).Stats().KeyN, b.Bucket(bucketContainers).Stats().KeyN
		if images > 0 || containers > 0 {
			return fmt.Errorf("namespace %q is not empty: it holds %d containers and %d images; remove them first: %w",
				name, containers, images, errdefs.ErrFailedPrecondition)
		}
		return tx.Bucket(bucketNamespaces).DeleteBucket([]byte(name))
	})
}

// Count reports how many namespaces exist.
func (s *NamespaceStore) Count(ctx context.Context) (int, error) {
	n := 0
	err := s.db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNamespaces).ForEachBucket(func([]byte) error { n++; return nil })
	})
	return n, err
}

func createNamespaceBucket(root *bolt.Bucket, ns *berthv1.Namespace) (*bolt.Bucket, error) {
	b, err := root.CreateBucket([]byte(ns.Name))
	if err != nil {
		return nil, err
	}
	for _, name := range [][]byte{bucketImages, bucketContainers, bucketContainerNames} {
		if _, err := b.CreateBucket(name); err != nil {
			return nil, err
		}
	}
	return b, put(b, keyRecord, ns)
}

// namespaceBucket finds the bucket of namespace ns.
func namespaceBucket(tx *bolt.Tx, ns string) (*bolt.Bucket, error) {
	b := tx.Bucket(bucketNamespaces).Bucket([]byte(ns))
	if b == nil {
		return nil, fmt.Errorf("namespace %q not found: create it with 'berthctl namespace create %s': %w", ns, ns, errdefs.ErrNotFound)
	}
	return b, nil
}

// namespaceForWrite finds the bucket of the context's namespace for a
// write. The default namespace springs into existence on first use, as
// Docker users expect; any other must have been created.
func namespaceForWrite(ctx context.Context, tx *bolt.Tx) (*bolt.Bucket, string, error) {
	ns := namespaces.FromContext(ctx)
	if err := namespaces.Validate(ns); err != nil {
		return nil, ns, err
	}
	b, err := namespaceBucket(tx, ns)
	if err != nil && ns == namespaces.Default {
		now := timestamppb.New(time.Now().UTC())
		b, err = createNamespaceBucket(tx.Bucket(bucketNamespaces), &berthv1.Namespace{Name: ns, CreatedAt: now, UpdatedAt: now})
	}
	return b, ns, err
}

// namespaceForRead finds the bucket of the context's namespace for a read.
// A default namespace that does not exist yet reads as empty (nil bucket).
func namespaceForRead(ctx context.Context, tx *bolt.Tx) (*bolt.Bucket, string, error) {
	ns := namespaces.FromContext(ctx)
	if err := namespaces.Validate(ns); err != nil {
		return nil, ns, err
	}
	b, err := namespaceBucket(tx, ns)
	if err != nil && ns == namespaces.Default {
		return nil, ns, nil
	}
	return b, ns, err
}

func validateLabels(object string, labels map[string]string) error {
	total := 0
	for k, v := range labels {
		if k == "" || len(k) > maxLabelKey {
			return fmt.Errorf("%s: label key %.40q must be 1 to %d bytes: %w", object, k, maxLabelKey, errdefs.ErrInvalidArgument)
		}
		if len(k)+len(v) > maxLabelBytes {
			return fmt.Errorf("%s: label %q is longer than %d bytes: %w", object, k, maxLabelBytes, errdefs.ErrInvalidArgument)
		}
		total += len(k) + len(v)
	}
	if total > maxLabelsSize {
		return fmt.Errorf("%s: labels total %d bytes, more than %d: %w", object, total, maxLabelsSize, errdefs.ErrInvalidArgument)
	}
	return nil
}

func put(b *bolt.Bucket, key []byte, m proto.Message) error {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

func unmarshal(data []byte, m proto.Message, what string) error {
	if data == nil {
		return fmt.Errorf("%s: record missing: %w", what, ErrCorrupt)
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return fmt.Errorf("%s: %w: %v", what, ErrCorrupt, err)
	}
	return nil
}
