// Package snapshotter stores container and image filesystems as a tree of
// snapshots and hands out the mounts that assemble them.
//
// Two implementations share one interface and one conformance suite
// (package snaptest): Overlay, which stacks directories with overlayfs, and
// Native, which gives every snapshot a full copy of its parent and is used
// where overlayfs cannot mount (overlay on overlay, some network or FUSE
// filesystems, old kernels). Both keep their metadata in a bbolt database
// beside the snapshot directories, so a snapshot's identity never depends on
// a path.
//
// # Lifecycle
//
// A snapshot has one of three kinds:
//
//   - Active: read-write, created by Prepare. Its mounts may be written to;
//     this is where a layer is unpacked or where a container runs.
//   - View: read-only, created by View. Its mounts show the parent's content
//     and refuse writes. A View cannot be committed.
//   - Committed: immutable, created by Commit from an Active. Only a
//     Committed snapshot may be the parent of another snapshot, and a
//     Committed snapshot has no mounts of its own: create a View on it.
//
// Every snapshot is known by a key, unique across all kinds. Commit(name, key)
// removes the Active key and creates a Committed snapshot named name with the
// same content; for image layers the name is the layer's chain ID
// ("sha256:<hex>"), so the snapshot tree of an image is the chain of its
// layers and a second image that shares a prefix of layers shares the
// snapshots.
//
// A snapshot may not be removed while another snapshot names it as parent
// (ErrFailedPrecondition): the tree is always removed from the leaves. The
// snapshotter does not track who has a snapshot mounted; callers unmount
// before Remove.
//
// # Crash safety
//
// A snapshot's directory is built under a temporary name and renamed to its
// numeric ID inside the bbolt transaction that records it; Remove deletes the
// metadata in one transaction before it deletes the directory. A crash at any
// point therefore leaves at worst a directory that no metadata references,
// never metadata that points to a missing or half-built directory. Commit
// flushes the snapshot's filesystem (syncfs) before recording it as
// Committed, so a committed layer survives a power loss complete; an Active
// snapshot's content carries no such promise. Cleanup
// deletes such orphans; garbage collection calls it after its sweep.
//
// # On disk
//
//	<root>/metadata.db            bbolt, schema in metadata.go
//	<root>/snapshots/<id>/fs      the snapshot's own files (upper dir, or full copy)
//	<root>/snapshots/<id>/work    overlay work dir (Overlay only)
//	<root>/snapshots/new-*        a snapshot being built (orphan after a crash)
//	<root>/snapshots/rm-*         a snapshot being deleted (orphan after a crash)
//
// <id> is a decimal number allocated by bbolt; keys never become paths, so
// any key that passes ValidateKey is safe, including "sha256:<hex>" and keys
// containing "/" or "..".
package snapshotter

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/berth-dev/berth/errdefs"
)

// Kind is the kind of a snapshot: View, Active or Committed.
type Kind uint8

// The kinds of snapshot. The zero value is deliberately not a kind so that a
// missing field in stored metadata is caught rather than read as a kind.
const (
	// KindUnknown is the zero Kind, never stored.
	KindUnknown Kind = iota
	// KindView is read-only and cannot be committed.
	KindView
	// KindActive is read-write and can be committed once.
	KindActive
	// KindCommitted is immutable and can be a parent.
	KindCommitted
)

// String returns the lower-case name of the kind, as shown by berthctl.
func (k Kind) String() string {
	switch k {
	case KindView:
		return "view"
	case KindActive:
		return "active"
	case KindCommitted:
		return "committed"
	default:
		return "unknown"
	}
}

// Info describes a snapshot.
type Info struct {
	// Kind is View, Active or Committed.
	Kind Kind
	// Name is the snapshot's key (for a Committed snapshot, the name given to
	// Commit, usually a chain ID).
	Name string
	// Parent is the key of the Committed parent, empty for a base snapshot.
	Parent string
	// Labels are free-form metadata, set at creation with WithLabels.
	Labels map[string]string
	// Created is when the snapshot was created; Commit resets it to the
	// commit time since that is when the committed snapshot came to be.
	Created time.Time
	// Updated is when the snapshot's metadata last changed.
	Updated time.Time
}

// Usage is the disk space a snapshot uses on its own, without its parents.
type Usage struct {
	// Size is the disk usage in bytes (allocated blocks × 512, each inode
	// counted once even if hard-linked), which is what a full disk cares
	// about; sparse files count only what they allocate.
	Size int64
	// Inodes is the number of distinct inodes, directories included.
	Inodes int64
}

// Add accumulates another usage into u.
func (u *Usage) Add(o Usage) {
	u.Size += o.Size
	u.Inodes += o.Inodes
}

// WalkFunc is called by Walk for each snapshot. Returning an error stops the
// walk and Walk returns that error.
type WalkFunc func(ctx context.Context, info Info) error

// Opt changes how a snapshot is created.
type Opt func(*Info) error

// WithLabels sets labels on the snapshot created by Prepare, View or Commit.
// It may be given more than once; later values win.
func WithLabels(labels map[string]string) Opt {
	return func(info *Info) error {
		if info.Labels == nil {
			info.Labels = make(map[string]string, len(labels))
		}
		for k, v := range labels {
			if k == "" {
				return fmt.Errorf("label with empty name: %w", errdefs.ErrInvalidArgument)
			}
			info.Labels[k] = v
		}
		return nil
	}
}

// Snapshotter stores snapshots and returns the mounts that assemble them.
//
// Invariants every implementation keeps (checked by package snaptest):
//
//   - Keys are unique across kinds; Prepare, View and Commit with a key that
//     exists fail with ErrAlreadyExists and change nothing.
//   - A parent, if given, exists and is Committed (else ErrNotFound or
//     ErrFailedPrecondition).
//   - Mounts returned for an Active snapshot show the parent chain's content
//     and take writes; writes are the snapshot's own and never change a parent.
//   - Mounts returned for a View are read-only and show the parent's content.
//   - Commit turns an Active into a Committed snapshot with the same content;
//     afterwards the Active key is gone and the content cannot change.
//   - Remove refuses a snapshot that is the parent of another
//     (ErrFailedPrecondition); a missing key gives ErrNotFound.
//   - Metadata survives Close and reopening on the same root.
//   - All methods are safe for concurrent use.
type Snapshotter interface {
	// Stat returns the snapshot's metadata.
	Stat(ctx context.Context, key string) (Info, error)

	// Usage returns the space used by the snapshot itself, excluding its
	// parents. For an Active snapshot it walks the directory, so it costs
	// time proportional to the snapshot's file count; for a Committed one it
	// returns the figure measured at Commit.
	Usage(ctx context.Context, key string) (Usage, error)

	// Mounts returns the mounts of an Active or View snapshot again, e.g.
	// after an agent restart. A Committed snapshot has no mounts
	// (ErrFailedPrecondition): create a View on it.
	Mounts(ctx context.Context, key string) ([]Mount, error)

	// Prepare creates an Active snapshot key on top of the Committed parent
	// (empty for an empty base) and returns the mounts to write to it.
	Prepare(ctx context.Context, key, parent string, opts ...Opt) ([]Mount, error)

	// View creates a read-only snapshot key showing the Committed parent
	// (empty for an empty directory) and returns its mounts.
	View(ctx context.Context, key, parent string, opts ...Opt) ([]Mount, error)

	// Commit turns the Active snapshot key into a Committed snapshot called
	// name. The caller must have unmounted the Active snapshot: content
	// written after Commit is undefined. For an image layer, name is its
	// chain ID.
	Commit(ctx context.Context, name, key string, opts ...Opt) error

	// Remove deletes the snapshot and its content. It fails with
	// ErrFailedPrecondition while the snapshot has children. The caller must
	// have unmounted it.
	Remove(ctx context.Context, key string) error

	// Walk calls fn for every snapshot, in key order. fn runs outside any
	// database transaction, so it may call the snapshotter (e.g. Remove).
	Walk(ctx context.Context, fn WalkFunc) error

	// List returns every snapshot's Info, in key order.
	List(ctx context.Context) ([]Info, error)

	// Cleanup deletes snapshot directories that no metadata references:
	// leftovers of a crash during Prepare, View or Remove. Snapshots being
	// created concurrently are not touched.
	Cleanup(ctx context.Context) error

	// Close releases the metadata database. Other methods fail after Close;
	// Close may be called more than once.
	Close() error
}

// WritableDirer is implemented by snapshotters that can name the directory
// holding an Active snapshot's own writes, so that a layer applier can unpack
// into it without mounting: for Overlay the upper dir (entries the applier
// writes there become the layer, and whiteouts must be written in overlay's
// format: 0:0 character devices and the trusted.overlay.opaque xattr); for
// Native the snapshot's full copy (whiteouts are applied by deleting).
//
// Use the function WritableDir, which falls back to reading the mounts.
type WritableDirer interface {
	// WritableDir returns the absolute path of the Active snapshot's own
	// directory. It fails with ErrFailedPrecondition for a View or
	// Committed snapshot.
	WritableDir(ctx context.Context, key string) (string, error)
}

// MaxKeyLen bounds key length. A chain ID ("sha256:" + 64 hex) is 71 bytes;
// 255 leaves room for human keys while keeping bbolt keys and log lines small.
const MaxKeyLen = 255

// ValidateKey reports whether key can name a snapshot: non-empty, at most
// MaxKeyLen bytes, valid UTF-8 and without NUL (NUL separates keys in the
// parent index). Keys never become paths, so "/" and ".." are allowed.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("snapshot key is empty: %w", errdefs.ErrInvalidArgument)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("snapshot key %.32q...: %d bytes, at most %d allowed: %w", key, len(key), MaxKeyLen, errdefs.ErrInvalidArgument)
	case strings.IndexByte(key, 0) >= 0:
		return fmt.Errorf("snapshot key %q contains NUL: %w", key, errdefs.ErrInvalidArgument)
	case !utf8.ValidString(key):
		return fmt.Errorf("snapshot key %q is not valid UTF-8: %w", key, errdefs.ErrInvalidArgument)
	}
	return nil
}
