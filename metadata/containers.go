package metadata

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata/identifiers"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// ContainerStore keeps container records in the context's namespace.
type ContainerStore struct{ db *DB }

// Create records a new container. Both its ID and its name must be unused
// in the namespace.
func (s *ContainerStore) Create(ctx context.Context, c *berthv1.Container) (*berthv1.Container, error) {
	if err := validateContainer(c); err != nil {
		return nil, err
	}
	c = proto.Clone(c).(*berthv1.Container)
	now := timestamppb.New(time.Now().UTC())
	c.CreatedAt, c.UpdatedAt = now, now
	err := s.db.bolt.Update(func(tx *bolt.Tx) error {
		nsb, ns, err := namespaceForWrite(ctx, tx)
		if err != nil {
			return err
		}
		b, names := nsb.Bucket(bucketContainers), nsb.Bucket(bucketContainerNames)
		if b.Get([]byte(c.Id)) != nil {
			return fmt.Errorf("container %s in namespace %q: %w", c.Id, ns, errdefs.ErrAlreadyExists)
		}
		if owner := names.Get([]byte(c.Name)); owner != nil {
			return fmt.Errorf("container name %q is already in use by container %s: remove or rename that container, or choose another name: %w",
				c.Name, owner, errdefs.ErrAlreadyExists)
		}
		if err := names.Put([]byte(c.Name), []byte(c.Id)); err != nil {
			return err
		}
		return put(b, []byte(c.Id), c)
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Get returns the container with exactly this ID.
func (s *ContainerStore) Get(ctx context.Context, id string) (*berthv1.Container, error) {
	if err := identifiers.Validate("container id", id); err != nil {
		return nil, err
	}
	c := &berthv1.Container{}
	err := s.db.bolt.View(func(tx *bolt.Tx) error {
		nsb, ns, err := namespaceForRead(ctx, tx)
		if err != nil {
			return err
		}
		var data []byte
		if nsb != nil {
			data = nsb.Bucket(bucketContainers).Get([]byte(id))
		}
		if data == nil {
			return fmt.Errorf("container %s in namespace %q: %w", id, ns, errdefs.ErrNotFound)
		}
		return unmarshal(data, c, "container "+id)
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Resolve finds a container the way Docker users name one: its full ID,
// its name, or a unique prefix of its ID. An ambiguous prefix is an error
// that lists the matches.
func (s *ContainerStore) Resolve(ctx context.Context, ref string) (*berthv1.Container, error) {
	if err := identifiers.Validate("container", ref); err != nil {
		return nil, err
	}
	var found *berthv1.Container
	err := s.db.bolt.View(func(tx *bolt.Tx) error {
		nsb, ns, err := namespaceForRead(ctx, tx)
		if err != nil {
			return err
		}
		notFound := fmt.Errorf("no such container: %s (namespace %q): %w", ref, ns, errdefs.ErrNotFound)
		if nsb == nil {
			return notFound
		}
		b := nsb.Bucket(bucketContainers)
		id := []byte(ref)
		if b.Get(id) == nil {
			if owner := nsb.Bucket(bucketContainerNames).Get([]byte(ref)); owner != nil {
				id = owner
			} else {
				var matches []string
				cur := b.Cursor()
				for k, _ := cur.Seek([]byte(ref)); k != nil && strings.HasPrefix(string(k), ref); k, _ = cur.Next() {
					matches = append(matches, string(k))
				}
				switch len(matches) {
				case 0:
					return notFound
				case 1:
					id = []byte(matches[0])
				default:
					for i, m := range matches {
						matches[i] = shortID(m)
					}
					return fmt.Errorf("container prefix %q is ambiguous: it matches %s; give more characters: %w",
						ref, strings.Join(matches, ", "), errdefs.ErrInvalidArgument)
				}
			}
		}
		found = &berthv1.Container{}
		return unmarshal(b.Get(id), found, "container "+string(id))
	})
	if err != nil {
		return nil, err
	}
	return found, nil
}

// List returns the containers for which keep returns true (all when keep
// is nil), newest first, as `ps` shows them.
func (s *ContainerStore) List(ctx context.Context, keep func(*berthv1.Container) bool) ([]*berthv1.Container, error) {
	var out []*berthv1.Container
	err := s.db.bolt.View(func(tx *bolt.Tx) error {
		nsb, _, err := namespaceForRead(ctx, tx)
		if err != nil || nsb == nil {
			return err
		}
		return nsb.Bucket(bucketContainers).ForEach(func(k, v []byte) error {
			c := &berthv1.Container{}
			if err := unmarshal(v, c, "container "+string(k)); err != nil {
				return err
			}
			if keep == nil || keep(c) {
				out = append(out, c)
			}
			return nil
		})
	})
	sort.SliceStable(out, func(i, j int) bool {
		return out[i].CreatedAt.AsTime().After(out[j].CreatedAt.AsTime())
	})
	return out, err
}

// Update changes the fields of container c.Id named in paths: "name",
// "labels", "spec", "spec.resources", "spec.restart_policy", "status",
// "snapshot_key", "log_path". An empty paths list is refused: a caller
// must say what it changes, so that concurrent updaters of different
// fields do not overwrite each other.
func (s *ContainerStore) Update(ctx context.Context, c *berthv1.Container, paths ...string) (*berthv1.Container, error) {
	if c == nil {
		return nil, fmt.Errorf("container record missing: %w", errdefs.ErrInvalidArgument)
	}
	if err := identifiers.Validate("container id", c.Id); err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("container %s: update names no field (update_mask is empty): %w", c.Id, errdefs.ErrInvalidArgument)
	}
	var updated *berthv1.Container
	err := s.db.bolt.Update(func(tx *bolt.Tx) error {
		nsb, ns, err := namespaceForRead(ctx, tx)
		if err != nil {
			return err
		}
		var data []byte
		if nsb != nil {
			data = nsb.Bucket(bucketContainers).Get([]byte(c.Id))
		}
		if data == nil {
			return fmt.Errorf("container %s in namespace %q: %w", c.Id, ns, errdefs.ErrNotFound)
		}
		cur := &berthv1.Container{}
		if err := unmarshal(data, cur, "container "+c.Id); err != nil {
			return err
		}
		names := nsb.Bucket(bucketContainerNames)
		for _, p := range paths {
			switch p {
			case "name":
				if c.Name == cur.Name {
					continue
				}
				if err := identifiers.Validate("container name", c.Name); err != nil {
					return err
				}
				if owner := names.Get([]byte(c.Name)); owner != nil {
					return fmt.Errorf("container name %q is already in use by container %s: %w", c.Name, owner, errdefs.ErrAlreadyExists)
				}
				if err := names.Delete([]byte(cur.Name)); err != nil {
					return err
				}
				if err := names.Put([]byte(c.Name), []byte(c.Id)); err != nil {
					return err
				}
				cur.Name = c.Name
			case "labels":
				if err := validateLabels("container "+c.Id, c.Labels); err != nil {
					return err
				}
				cur.Labels = c.Labels
			case "spec":
				cur.Spec = c.Spec
			case "spec.resources":
				if cur.Spec == nil {
					cur.Spec = &berthv1.ContainerSpec{}
				}
				cur.Spec.Resources = c.GetSpec().GetResources()
			case "spec.restart_policy":
				if cur.Spec == nil {
					cur.Spec = &berthv1.ContainerSpec{}
				}
				cur.Spec.RestartPolicy = c.GetSpec().GetRestartPolicy()
			case "status":
				cur.Status = c.Status
			case "snapshot_key":
				cur.SnapshotKey = c.SnapshotKey
			case "log_path":
				cur.LogPath = c.LogPath
			default:
				return fmt.Errorf("container %s: field %q cannot be updated: %w", c.Id, p, errdefs.ErrInvalidArgument)
			}
		}
		cur.UpdatedAt = timestamppb.New(time.Now().UTC())
		updated = cur
		return put(nsb.Bucket(bucketContainers), []byte(c.Id), cur)
	})
	if err != nil {
		return nil, err
	}
	return updated, nil
}

// Delete removes the record of container id and frees its name. The
// caller removes the container's files after this returns, so a crash in
// between leaves only orphans for garbage collection.
func (s *ContainerStore) Delete(ctx context.Context, id string) error {
	if err := identifiers.Validate("container id", id); err != nil {
		return err
	}
	return s.db.bolt.Update(func(tx *bolt.Tx) error {
		nsb, ns, err := namespaceForRead(ctx, tx)
		if err != nil {
			return err
		}
		var data []byte
		if nsb != nil {
			data = nsb.Bucket(bucketContainers).Get([]byte(id))
		}
		if data == nil {
			return fmt.Errorf("container %s in namespace %q: %w", id, ns, errdefs.ErrNotFound)
		}
		c := &berthv1.Container{}
		if err := unmarshal(data, c, "container "+id); err != nil {
			return err
		}
		if err := nsb.Bucket(bucketContainerNames).Delete([]byte(c.Name)); err != nil {
			return err
		}
		return nsb.Bucket(bucketContainers).Delete([]byte(id))
	})
}

func validateContainer(c *berthv1.Container) error {
	if c == nil {
		return fmt.Errorf("container record missing: %w", errdefs.ErrInvalidArgument)
	}
	if err := identifiers.Validate("container id", c.Id); err != nil {
		return err
	}
	if err := identifiers.Validate("container name", c.Name); err != nil {
		return err
	}
	return validateLabels("container "+c.Id, c.Labels)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
