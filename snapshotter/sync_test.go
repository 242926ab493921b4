package snapshotter

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/berth-dev/berth/errdefs"
)

func openNativeForSync(t *testing.T, root string) *Native {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("native snapshotter: needs root")
	}
	s, err := NewNative(root, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// commitChain commits base, then mid on base and top on mid, unsynced,
// each with one file.
func commitChain(t *testing.T, s *Native) {
	t.Helper()
	ctx := context.Background()
	parent := ""
	for _, name := range []string{"base", "mid", "top"} {
		if _, err := s.Prepare(ctx, "a-"+name, parent); err != nil {
			t.Fatal(err)
		}
		dir, err := s.WritableDir(ctx, "a-"+name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.CommitUnsynced(ctx, name, "a-"+name); err != nil {
			t.Fatal(err)
		}
		parent = name
	}
}

func marks(t *testing.T, s *Native) map[string][]byte {
	t.Helper()
	m, err := s.unsyncedMarks()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCommitUnsyncedThenSync: unsynced commits are marked until a Sync or a
// flushing Commit, and Remove drops the mark of what it removes.
func TestCommitUnsyncedThenSync(t *testing.T) {
	ctx := context.Background()
	s := openNativeForSync(t, t.TempDir())
	defer s.Close()
	commitChain(t, s)
	if got := len(marks(t, s)); got != 3 {
		t.Fatalf("%d marks after three unsynced commits, want 3", got)
	}
	if err := s.Remove(ctx, "top"); err != nil {
		t.Fatal(err)
	}
	if got := len(marks(t, s)); got != 2 {
		t.Fatalf("%d marks after removing one, want 2", got)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(marks(t, s)); got != 0 {
		t.Fatalf("%d marks after Sync, want 0", got)
	}

	// A flushing Commit clears the marks made before it.
	if _, err := s.Prepare(ctx, "a-x", "mid"); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitUnsynced(ctx, "x", "a-x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "a-y", "x"); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "y", "a-y"); err != nil {
		t.Fatal(err)
	}
	if got := len(marks(t, s)); got != 0 {
		t.Fatalf("%d marks after a flushing Commit, want 0", got)
	}
}

// TestUnsyncedAfterCrash: on open, marks of this boot are flushed and
// cleared (the agent died, the page cache did not); marks of an earlier
// boot remove their snapshots and everything built on them, and Cleanup
// then deletes the directories.
func TestUnsyncedAfterCrash(t *testing.T) {
	ctx := context.Background()
	t.Run("same boot", func(t *testing.T) {
		root := t.TempDir()
		s := openNativeForSync(t, root)
		commitChain(t, s)
		s.Close() // as a crash: the marks stay
		s = openNativeForSync(t, root)
		defer s.Close()
		if got := len(marks(t, s)); got != 0 {
			t.Fatalf("%d marks after reopening in the same boot, want 0", got)
		}
		for _, k := range []string{"base", "mid", "top"} {
			if _, err := s.Stat(ctx, k); err != nil {
				t.Errorf("%s: %v", k, err)
			}
		}
	})
	t.Run("earlier boot", func(t *testing.T) {
		root := t.TempDir()
		s := openNativeForSync(t, root)
		commitChain(t, s)
		// A synced base that the lost snapshot does not touch, and an
		// Active snapshot built on the lost one.
		if _, err := s.Prepare(ctx, "a-other", ""); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, "other", "a-other"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Prepare(ctx, "work", "top"); err != nil {
			t.Fatal(err)
		}
		// "mid" was committed unsynced under a kernel that is gone.
		db := s.db
		if err := db.Update(func(tx *bolt.Tx) error {
			r, err := getRecord(tx, "mid")
			if err != nil {
				return err
			}
			return unsyncedBucket(tx).Put([]byte("mid"), unsyncedMark([]byte("another-boot"), r.id))
		}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = openNativeForSync(t, root)
		defer s.Close()
		if got := len(marks(t, s)); got != 0 {
			t.Fatalf("%d marks after reopening, want 0", got)
		}
		for _, k := range []string{"mid", "top", "work"} {
			if _, err := s.Stat(ctx, k); !errdefs.IsNotFound(err) {
				t.Errorf("%s: %v, want ErrNotFound", k, err)
			}
		}
		for _, k := range []string{"base", "other"} {
			if _, err := s.Stat(ctx, k); err != nil {
				t.Errorf("%s: %v", k, err)
			}
		}
		if err := s.Cleanup(ctx); err != nil {
			t.Fatal(err)
		}
		entries, _ := os.ReadDir(filepath.Join(root, "snapshots"))
		if len(entries) != 2 {
			t.Errorf("%d snapshot directories after Cleanup, want 2 (base, other)", len(entries))
		}
	})
}
