// Package metadata keeps Berth's records in one bbolt file, meta.db:
// namespaces, images and containers, each as a protobuf-encoded record of
// the public API's message type.
//
// # Schema
//
// The bucket layout is the contract between berthd versions; change it only
// with a schema version bump and a migration (see migrations below).
//
//	meta/                         bucket
//	  schema_version  → decimal string, the SchemaVersion that wrote the file
//	namespaces/                   bucket
//	  <namespace>/                bucket, one per namespace
//	    record        → berth.v1.Namespace
//	    images/                   bucket
//	      <image name> → berth.v1.Image; the key is the normalised reference
//	    containers/               bucket
//	      <id>        → berth.v1.Container (status included: it is what
//	                    survives a reboot, which wipes the state dir)
//	    container_names/          bucket; the unique name index
//	      <name>      → <id>
//
// Keys are validated before use: namespaces, container IDs and names with
// package identifiers, image names as normalised references.
//
// Timestamps (created_at, updated_at) are set by the stores, never taken
// from callers.
package metadata

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/berth-dev/berth/errdefs"
)

// SchemaVersion is the version of the bucket layout this code reads and writes.
const SchemaVersion = 1

var (
	bucketMeta           = []byte("meta")
	keySchemaVersion     = []byte("schema_version")
	bucketNamespaces     = []byte("namespaces")
	keyRecord            = []byte("record")
	bucketImages         = []byte("images")
	bucketContainers     = []byte("containers")
	bucketContainerNames = []byte("container_names")
)

// migration upgrades a database from version to-1 to version to. It runs in
// the same transaction as the version bump, so a crash leaves the old
// version intact.
type migration struct {
	to int
	fn func(tx *bolt.Tx) error
}

// migrations lists every upgrade in order. Version 1 is the first layout,
// so there is nothing to migrate yet; a future layout appends here.
var migrations []migration

// DB is the metadata database.
type DB struct {
	bolt *bolt.DB
	path string
}

// ErrCorrupt is wrapped by Open when meta.db exists but cannot be read.
var ErrCorrupt = errors.New("metadata database is unreadable")

// Open opens (or, when the file does not exist or is empty, creates) the
// metadata database at path and brings its schema up to date.
//
// An existing file that bbolt cannot read is never recreated or modified:
// Open fails with an error that names the file, so that the operator
// decides what to do with data berthd cannot read.
func Open(path string) (db *DB, err error) {
	st, statErr := os.Stat(path)
	switch {
	case statErr == nil && !st.Mode().IsRegular():
		return nil, fmt.Errorf("%s is not a regular file: %w", path, ErrCorrupt)
	case statErr != nil && !errors.Is(statErr, fs.ErrNotExist):
		return nil, fmt.Errorf("%s: %w: %v", path, ErrCorrupt, statErr)
	}
	// bbolt panics on some kinds of page corruption; a bad file is bad
	// input, never a crash.
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%s: %w: %v; berthd does not recreate it: move it aside to start empty, or restore it from a backup", path, ErrCorrupt, r)
		}
	}()
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, errdefs.ErrUnavailable) || errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("%s is locked by another process: %w", path, errdefs.ErrUnavailable)
		}
		return nil, fmt.Errorf("%s: %w: %v; berthd does not recreate it: move it aside to start empty, or restore it from a backup", path, ErrCorrupt, err)
	}
	d := &DB{bolt: b, path: path}
	if err := d.migrate(); err != nil {
		b.Close()
		return nil, err
	}
	return d, nil
}

// migrate creates the schema of a new database or upgrades an old one.
func (d *DB) migrate() error {
	return d.bolt.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		version := 0
		if meta != nil {
			v, err := strconv.Atoi(string(meta.Get(keySchemaVersion)))
			if err != nil {
				return fmt.Errorf("%s: schema version %q: %w", d.path, meta.Get(keySchemaVersion), ErrCorrupt)
			}
			version = v
		} else if tx.Bucket(bucketNamespaces) != nil {
			return fmt.Errorf("%s: namespaces without a schema version: %w", d.path, ErrCorrupt)
		}
		if version > SchemaVersion {
			return fmt.Errorf("%s has schema version %d, newer than the %d this berthd knows: run a newer berthd: %w",
				d.path, version, SchemaVersion, errdefs.ErrFailedPrecondition)
		}
		if version == 0 {
			// A new database gets the current layout directly.
			var err error
			if meta, err = tx.CreateBucket(bucketMeta); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(bucketNamespaces); err != nil {
				return err
			}
			return meta.Put(keySchemaVersion, []byte(strconv.Itoa(SchemaVersion)))
		}
		for _, m := range migrations {
			if m.to <= version {
				continue
			}
			if err := m.fn(tx); err != nil {
				return fmt.Errorf("%s: migrating schema to version %d: %w", d.path, m.to, err)
			}
			version = m.to
		}
		return meta.Put(keySchemaVersion, []byte(strconv.Itoa(version)))
	})
}

// SchemaVersion reports the schema version recorded in the file.
func (d *DB) SchemaVersion() (int, error) {
	var v int
	err := d.bolt.View(func(tx *bolt.Tx) error {
		var err error
		v, err = strconv.Atoi(string(tx.Bucket(bucketMeta).Get(keySchemaVersion)))
		return err
	})
	return v, err
}

// Path is the database file.
func (d *DB) Path() string { return d.path }

// Close closes the database; pending transactions finish first.
func (d *DB) Close() error { return d.bolt.Close() }

// Namespaces returns the namespace store.
func (d *DB) Namespaces() *NamespaceStore { return &NamespaceStore{db: d} }

// Images returns the image store.
func (d *DB) Images() *ImageStore { return &ImageStore{db: d} }

// Containers returns the container store.
func (d *DB) Containers() *ContainerStore { return &ContainerStore{db: d} }
