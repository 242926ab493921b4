package snapshotter

// The metadata database, <root>/metadata.db, holds one tree of buckets.
// Strings are stored as raw bytes, integers as 8-byte big-endian, times with
// time.Time.MarshalBinary.
//
//	v1                              schema version 1; a new layout gets a new
//	│                               top-level bucket and a migration
//	├── snapshots                   sequence: last allocated snapshot ID
//	│   └── <key>                   one bucket per snapshot, named by its key
//	│       ├── id        uint64    names the directory <root>/snapshots/<id>
//	│       ├── kind      1 byte    1 View, 2 Active, 3 Committed (Kind)
//	│       ├── parent    string    key of the Committed parent; absent for a base
//	│       ├── created   time
//	│       ├── updated   time
//	│       ├── size      int64     Committed only: Usage.Size measured at Commit
//	│       ├── inodes    int64     Committed only: Usage.Inodes measured at Commit
//	│       └── labels              bucket: label name → value
//	├── children                    index so Remove can refuse a parent cheaply
//	│   └── <parent key> NUL <child key> → empty
//	└── unsynced                    Committed snapshots whose files may not be
//	    └── <key> → boot ID         on disk yet (CommitUnsynced), with the boot
//	                                ID of the kernel that holds their pages
//
// Keys cannot contain NUL (ValidateKey), so a prefix scan for "<parent>\x00"
// finds exactly the children of parent.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/berth-dev/berth/errdefs"
)

var (
	bucketV1        = []byte("v1")
	bucketSnapshots = []byte("snapshots")
	bucketChildren  = []byte("children")
	bucketLabels    = []byte("labels")
	bucketUnsynced  = []byte("unsynced")

	keyID      = []byte("id")
	keyKind    = []byte("kind")
	keyParent  = []byte("parent")
	keyCreated = []byte("created")
	keyUpdated = []byte("updated")
	keySize    = []byte("size")
	keyInodes  = []byte("inodes")
)

// record is one snapshot as stored.
type record struct {
	Info
	id    uint64
	usage Usage // Committed only
}

// initBuckets creates the top-level buckets of an empty database.
func initBuckets(tx *bolt.Tx) error {
	v1, err := tx.CreateBucketIfNotExists(bucketV1)
	if err != nil {
		return err
	}
	if _, err := v1.CreateBucketIfNotExists(bucketSnapshots); err != nil {
		return err
	}
	if _, err := v1.CreateBucketIfNotExists(bucketChildren); err != nil {
		return err
	}
	_, err = v1.CreateBucketIfNotExists(bucketUnsynced)
	return err
}

func unsyncedBucket(tx *bolt.Tx) *bolt.Bucket {
	return tx.Bucket(bucketV1).Bucket(bucketUnsynced)
}

func snapshotsBucket(tx *bolt.Tx) *bolt.Bucket {
	return tx.Bucket(bucketV1).Bucket(bucketSnapshots)
}

func childrenBucket(tx *bolt.Tx) *bolt.Bucket {
	return tx.Bucket(bucketV1).Bucket(bucketChildren)
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func readU64(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// getRecord reads the snapshot key; ErrNotFound if it does not exist.
func getRecord(tx *bolt.Tx, key string) (record, error) {
	b := snapshotsBucket(tx).Bucket([]byte(key))
	if b == nil {
		return record{}, fmt.Errorf("snapshot %q: %w", key, errdefs.ErrNotFound)
	}
	r := record{Info: Info{Name: key}}
	r.id = readU64(b, keyID)
	if kind := b.Get(keyKind); len(kind) == 1 {
		r.Kind = Kind(kind[0])
	}
	if r.id == 0 || r.Kind < KindView || r.Kind > KindCommitted {
		return record{}, fmt.Errorf("snapshot %q: metadata has id %d and kind %d; the database is damaged, remove the snapshot: %w", key, r.id, r.Kind, errdefs.ErrDataLoss)
	}
	r.Parent = string(b.Get(keyParent))
	if err := r.Created.UnmarshalBinary(b.Get(keyCreated)); err != nil {
		return record{}, fmt.Errorf("snapshot %q: created time: %w", key, err)
	}
	if err := r.Updated.UnmarshalBinary(b.Get(keyUpdated)); err != nil {
		return record{}, fmt.Errorf("snapshot %q: updated time: %w", key, err)
	}
	r.usage.Size = int64(readU64(b, keySize))
	r.usage.Inodes = int64(readU64(b, keyInodes))
	if lb := b.Bucket(bucketLabels); lb != nil {
		r.Labels = make(map[string]string)
		if err := lb.ForEach(func(k, v []byte) error {
			r.Labels[string(k)] = string(v)
			return nil
		}); err != nil {
			return record{}, err
		}
	}
	return r, nil
}

// putRecord writes a new snapshot and its entry in the children index. It
// fails with ErrAlreadyExists if the key is taken.
func putRecord(tx *bolt.Tx, r record) error {
	b, err := snapshotsBucket(tx).CreateBucket([]byte(r.Name))
	if err == bolt.ErrBucketExists {
		return fmt.Errorf("snapshot %q: %w", r.Name, errdefs.ErrAlreadyExists)
	}
	if err != nil {
		return err
	}
	created, err := r.Created.MarshalBinary()
	if err != nil {
		return err
	}
	updated, err := r.Updated.MarshalBinary()
	if err != nil {
		return err
	}
	puts := [][2][]byte{
		{keyID, u64(r.id)},
		{keyKind, {byte(r.Kind)}},
		{keyCreated, created},
		{keyUpdated, updated},
	}
	if r.Parent != "" {
		puts = append(puts, [2][]byte{keyParent, []byte(r.Parent)})
	}
	if r.Kind == KindCommitted {
		puts = append(puts, [2][]byte{keySize, u64(uint64(r.usage.Size))}, [2][]byte{keyInodes, u64(uint64(r.usage.Inodes))})
	}
	for _, kv := range puts {
		if err := b.Put(kv[0], kv[1]); err != nil {
			return err
		}
	}
	if len(r.Labels) > 0 {
		lb, err := b.CreateBucket(bucketLabels)
		if err != nil {
			return err
		}
		for k, v := range r.Labels {
			if err := lb.Put([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
	}
	if r.Parent != "" {
		return childrenBucket(tx).Put(childKey(r.Parent, r.Name), nil)
	}
	return nil
}

// deleteRecord removes a snapshot and its entry in the children index.
func deleteRecord(tx *bolt.Tx, r record) error {
	if err := snapshotsBucket(tx).DeleteBucket([]byte(r.Name)); err != nil {
		return fmt.Errorf("snapshot %q: delete metadata: %w", r.Name, err)
	}
	if r.Parent != "" {
		return childrenBucket(tx).Delete(childKey(r.Parent, r.Name))
	}
	return nil
}

func childKey(parent, child string) []byte {
	k := make([]byte, 0, len(parent)+1+len(child))
	k = append(k, parent...)
	k = append(k, 0)
	return append(k, child...)
}

// firstChild returns a child of key, or "" if it has none.
func firstChild(tx *bolt.Tx, key string) string {
	prefix := childKey(key, "")
	k, _ := childrenBucket(tx).Cursor().Seek(prefix)
	if k == nil || !bytes.HasPrefix(k, prefix) {
		return ""
	}
	return string(k[len(prefix):])
}

// chain returns the IDs of key's ancestors, nearest first (the order of
// overlay's lowerdir).
func chain(tx *bolt.Tx, parent string) ([]uint64, error) {
	var ids []uint64
	for parent != "" {
		r, err := getRecord(tx, parent)
		if err != nil {
			return nil, fmt.Errorf("parent chain: %w", err)
		}
		ids = append(ids, r.id)
		parent = r.Parent
		if len(ids) > 10000 {
			return nil, fmt.Errorf("parent chain of %q loops: %w", parent, errdefs.ErrDataLoss)
		}
	}
	return ids, nil
}

// now is the time stamp written to metadata; UTC so stored times compare
// and print the same on every host.
func now() time.Time { return time.Now().UTC() }
