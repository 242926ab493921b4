package snapshotter

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"github.com/berth-dev/berth/errdefs"
)

// DeferredSyncer is implemented by snapshotters whose Commit can leave the
// flush to a later Sync, so that a caller committing several snapshots in
// a row (the layers of one pull) pays for one flush instead of one each.
//
// The promise of Commit, that a Committed snapshot is complete after a
// power loss, is kept by recording which snapshots are not flushed yet:
//
//   - CommitUnsynced commits like Commit and marks the snapshot unsynced,
//     with the boot ID of the running kernel, in the same transaction.
//   - Sync (and any Commit) takes the set of marks, flushes the filesystem
//     (syncfs), then clears exactly those marks: everything they name was
//     written before the flush began.
//   - Opening the snapshotter handles the marks a crash left. Marks of
//     this boot name snapshots whose pages are still in the page cache (the
//     agent died, the kernel did not): a flush makes them durable. Marks
//     of an earlier boot name snapshots that may have lost data: they are
//     removed with everything built on them, and Cleanup deletes their
//     directories.
//
// A caller must therefore call Sync before it records anything that relies
// on the snapshots being complete (an image record). Another caller that
// finds an unsynced snapshot and uses it (a second pull of the same layer)
// calls Sync too before relying on it, and Sync flushes only when some
// snapshot is marked.
type DeferredSyncer interface {
	// CommitUnsynced is Commit without the flush.
	CommitUnsynced(ctx context.Context, name, key string, opts ...Opt) error
	// Sync makes every snapshot committed before the call durable.
	Sync(ctx context.Context) error
}

// Rebaser is implemented by snapshotters whose Active snapshot does not
// depend on its parent's content (overlay: the snapshot's directory is an
// upper dir, merged with the lowers only at mount time). A pull uses it to
// unpack a layer while the layer below is still being unpacked: into a
// base snapshot first, then committed on top of its parent once that is
// committed. The layer's directories that need the lower layers' metadata
// are completed in between (layer.ResolveImplicit, with LowerDirs).
type Rebaser interface {
	// CommitOnto is Commit (or CommitUnsynced, without sync) of the
	// Active base snapshot key as name, with the Committed parent as its
	// parent.
	CommitOnto(ctx context.Context, name, key, parent string, sync bool) error
	// LowerDirs returns the directories of parent's chain, topmost first:
	// what a snapshot on top of parent sees below its own.
	LowerDirs(ctx context.Context, parent string) ([]string, error)
}

// bootID identifies the running kernel; empty if it cannot be read, which
// makes every mark look like one of an earlier boot (the safe side).
func bootID() []byte {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return nil
	}
	return bytes.TrimSpace(b)
}

// unsyncedMark is what CommitUnsynced stores: the boot ID and the
// snapshot's directory ID, so that a mark cleared by a flush is the very
// one read before it, never a snapshot committed again under the name.
func unsyncedMark(boot []byte, id uint64) []byte {
	return append(append(append([]byte(nil), boot...), '/'), strconv.FormatUint(id, 10)...)
}

// markBoot returns the boot ID part of a mark.
func markBoot(mark []byte) []byte {
	if i := bytes.LastIndexByte(mark, '/'); i >= 0 {
		return mark[:i]
	}
	return mark
}

// unsyncedMarks reads the marks: key → mark.
func (c *core) unsyncedMarks() (map[string][]byte, error) {
	marks := map[string][]byte{}
	err := c.db.View(func(tx *bolt.Tx) error {
		return unsyncedBucket(tx).ForEach(func(k, v []byte) error {
			marks[string(k)] = bytes.Clone(v)
			return nil
		})
	})
	return marks, err
}

// clearUnsynced deletes the marks that still have the values read before
// a flush.
func clearUnsynced(tx *bolt.Tx, marks map[string][]byte) error {
	b := unsyncedBucket(tx)
	for k, v := range marks {
		if bytes.Equal(b.Get([]byte(k)), v) {
			if err := b.Delete([]byte(k)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Sync implements DeferredSyncer.
func (c *core) Sync(ctx context.Context) error {
	if err := c.check(); err != nil {
		return err
	}
	marks, err := c.unsyncedMarks()
	if err != nil || len(marks) == 0 {
		return err
	}
	if err := syncFS(c.snaps); err != nil {
		return err
	}
	return c.db.Update(func(tx *bolt.Tx) error { return clearUnsynced(tx, marks) })
}

// recoverUnsynced handles the marks left by a crash; see DeferredSyncer.
func (c *core) recoverUnsynced() error {
	marks, err := c.unsyncedMarks()
	if err != nil || len(marks) == 0 {
		return err
	}
	boot := bootID()
	lost := map[string][]byte{}
	for k, v := range marks {
		if len(boot) == 0 || !bytes.Equal(markBoot(v), boot) {
			lost[k] = v
		}
	}
	if len(lost) < len(marks) {
		if err := syncFS(c.snaps); err != nil {
			return err
		}
	}
	return c.db.Update(func(tx *bolt.Tx) error {
		for k := range lost {
			if err := removeTree(tx, k); err != nil {
				return err
			}
			c.log.Warn("removed a snapshot committed without a flush before a reboot: it may have lost data", "key", k)
		}
		return clearUnsynced(tx, marks)
	})
}

// removeTree deletes the metadata of key and of every snapshot built on it.
func removeTree(tx *bolt.Tx, key string) error {
	for {
		child := firstChild(tx, key)
		if child == "" {
			break
		}
		if err := removeTree(tx, child); err != nil {
			return err
		}
	}
	if err := unsyncedBucket(tx).Delete([]byte(key)); err != nil {
		return err
	}
	r, err := getRecord(tx, key)
	if errdefs.IsNotFound(err) {
		return nil // a mark without its snapshot: nothing more to remove
	}
	if err != nil {
		return fmt.Errorf("snapshot %q: %w", key, err)
	}
	return deleteRecord(tx, r)
}
