package content

// On-disk layout of a LocalStore rooted at <root> (berthd uses
// /var/lib/berth/content):
//
//	<root>/blobs/sha256/<hex>         committed blob, mode 0444, never rewritten
//	<root>/ingest/<sha256(ref)>/      one directory per ingest
//	    lock                          flock(2)ed by the ingest's only Writer
//	    meta.json                     {"ref","expected","size","started_at"}
//	    data                          the bytes received so far
//	    *.tmp                         a meta.json being replaced (Cleanup removes strays)
//
// The ingest directory is named by a hash of the ref so any ref (it may
// contain "/" or ".." or be long) becomes one safe path component. A digest
// becomes a path only after validateDigest accepts it: algorithm sha256 and
// exactly 64 lowercase hex characters.
//
// Writer protocol (writer.go):
//  1. mkdir the ingest directory, open lock, flock(LOCK_EX|LOCK_NB). A held
//     lock is ErrUnavailable. After locking, the lock file must still be the
//     one at the path (same inode); otherwise a Commit or Abort removed the
//     ingest between our open and our flock, and we start over.
//  2. Read meta.json. If it is missing or its expectations differ from the
//     caller's, start afresh: truncate data, write meta.json (temp file,
//     fsync, rename, fsync dir). Otherwise resume: hash data from disk, so
//     the offset and digest state are right even after a kill -9, and
//     report the offset.
//  3. Writes append to data and to the running hash; Close fsyncs data so
//     a clean stop leaves a resumable ingest.
//
// Commit protocol:
//  1. fsync data (after chmod 0444, so the mode is durable too);
//  2. compare the offset with the expected size and the running digest with
//     the expected digest; on a mismatch remove the ingest and fail;
//  3. if the blob already exists, remove the ingest and succeed;
//  4. rename data to blobs/sha256/<hex> (atomic: readers see all or
//     nothing) and fsync blobs/sha256 so the rename survives a power loss;
//  5. remove the ingest directory, then release the lock.
//
// A crash at any step leaves either the ingest (resumable, or removable by
// GC) or the blob (complete and verified), never a visible partial blob.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/errdefs"
)

var _ Store = (*LocalStore)(nil)

// LocalStore is a Store on a local filesystem. Its methods are safe for
// concurrent use, and several processes may share one root: the ingest
// locks are flock(2) locks.
type LocalStore struct {
	root string

	// flights are the downloads in progress in this process, by digest;
	// see Fetch.
	mu      sync.Mutex
	flights map[digest.Digest]*flight
	// flightsChanged is closed and replaced whenever a flight starts or
	// ends, for Follow to wait on.
	flightsChanged chan struct{}
	closed         bool
	wg             sync.WaitGroup
}

// NewStore opens (creating if needed) a LocalStore at root.
func NewStore(root string) (*LocalStore, error) {
	if root == "" {
		return nil, fmt.Errorf("content store: empty root: %w", errdefs.ErrInvalidArgument)
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("content store %q: %w", root, err)
	}
	for _, dir := range []string{root, filepath.Join(root, "blobs", "sha256"), filepath.Join(root, "ingest")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("content store: %w", err)
		}
	}
	return &LocalStore{root: root, flights: map[digest.Digest]*flight{}, flightsChanged: make(chan struct{})}, nil
}

// Root is the directory the store lives in.
func (s *LocalStore) Root() string { return s.root }

// Close stops the downloads Fetch started in the background and waits for
// them to release their ingests (they stay resumable). Fetch fails with
// ErrUnavailable after Close; the other methods keep working.
func (s *LocalStore) Close() error {
	s.mu.Lock()
	s.closed = true
	for d, f := range s.flights {
		f.cancel()
		delete(s.flights, d)
	}
	s.flightsMoved()
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// flightsMoved wakes the Follow calls waiting for a flight; mu held.
func (s *LocalStore) flightsMoved() {
	close(s.flightsChanged)
	s.flightsChanged = make(chan struct{})
}

// validateDigest accepts only digests that are safe to turn into a path
// and that this store can verify.
func validateDigest(d digest.Digest) error {
	alg, hex, ok := strings.Cut(string(d), ":")
	if !ok || digest.Algorithm(alg) != digest.SHA256 {
		return fmt.Errorf("digest %q: only sha256 is supported: %w", d, errdefs.ErrInvalidArgument)
	}
	if len(hex) != 64 {
		return fmt.Errorf("digest %q: want 64 hex characters, have %d: %w", d, len(hex), errdefs.ErrInvalidArgument)
	}
	for i := 0; i < len(hex); i++ {
		if c := hex[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("digest %q: not lowercase hex: %w", d, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func (s *LocalStore) blobsDir() string { return filepath.Join(s.root, "blobs", "sha256") }

// blobPath returns the path of a digest that validateDigest accepted.
func (s *LocalStore) blobPath(d digest.Digest) string {
	return filepath.Join(s.blobsDir(), d.Encoded())
}

// ReaderAt implements Provider.
func (s *LocalStore) ReaderAt(ctx context.Context, desc Descriptor) (ReaderAt, error) {
	if err := validateDigest(desc.Digest); err != nil {
		return nil, err
	}
	f, err := os.Open(s.blobPath(desc.Digest))
	if err != nil {
		return nil, blobErr(desc.Digest, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, blobErr(desc.Digest, err)
	}
	return &fileReaderAt{File: f, size: fi.Size()}, nil
}

type fileReaderAt struct {
	*os.File
	size int64
}

func (r *fileReaderAt) Size() int64 { return r.size }

// Info implements Manager.
func (s *LocalStore) Info(ctx context.Context, dgst digest.Digest) (Info, error) {
	if err := validateDigest(dgst); err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(s.blobPath(dgst))
	if err != nil {
		return Info{}, blobErr(dgst, err)
	}
	return Info{Digest: dgst, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Walk implements Manager. Files in blobs/sha256 whose names are not valid
// digests are skipped; Cleanup removes them.
func (s *LocalStore) Walk(ctx context.Context, fn WalkFunc) error {
	entries, err := os.ReadDir(s.blobsDir())
	if err != nil {
		return fmt.Errorf("content store: walk: %w", err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if validateDigest(d) != nil || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted while we walked
		} else if err != nil {
			return blobErr(d, err)
		}
		if err := fn(Info{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements Manager. The directory is not fsynced: a delete lost to
// a power cut leaves a blob the next GC deletes again.
func (s *LocalStore) Delete(ctx context.Context, dgst digest.Digest) error {
	if err := validateDigest(dgst); err != nil {
		return err
	}
	if err := os.Remove(s.blobPath(dgst)); err != nil {
		return blobErr(dgst, err)
	}
	return nil
}

// blobErr maps a filesystem error on a blob to an errdefs kind.
func blobErr(d digest.Digest, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	return fmt.Errorf("blob %s: %w", d, err)
}

// syncDir makes the entries of dir (creations, renames) durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// Cleanup removes what crashes leave behind and nothing that is in use:
// temp files in ingest directories, ingest directories without a valid
// meta.json (a crash before the ingest was set up), and files in
// blobs/sha256 whose names are not digests. Ingests with a live Writer are
// skipped. Abandoned but well-formed ingests are GC's business (see
// ListStatuses and Abort), since only GC knows whether a lease still wants
// them.
func (s *LocalStore) Cleanup(ctx context.Context) error {
	var errs []error
	blobs, err := os.ReadDir(s.blobsDir())
	if err != nil {
		return fmt.Errorf("content store: cleanup: %w", err)
	}
	for _, e := range blobs {
		if validateDigest(digest.NewDigestFromEncoded(digest.SHA256, e.Name())) != nil {
			if err := os.RemoveAll(filepath.Join(s.blobsDir(), e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	ingests, err := os.ReadDir(s.ingestRoot())
	if err != nil {
		return fmt.Errorf("content store: cleanup: %w", err)
	}
	for _, e := range ingests {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.cleanupIngest(e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *LocalStore) cleanupIngest(name string) error {
	dir := filepath.Join(s.ingestRoot(), name)
	lk, err := lockIngest(dir)
	if errors.Is(err, errdefs.ErrUnavailable) || errors.Is(err, fs.ErrNotExist) {
		return nil // in use, or gone already
	} else if err != nil {
		return err
	}
	defer lk.unlock()
	if _, err := readMeta(dir); err != nil {
		return os.RemoveAll(dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// ingestLock is an flock(2) on an ingest's lock file. flock locks belong to
// the open file description, so two Writers in one process exclude each
// other just as two processes do, and the kernel drops the lock when a
// killed process's descriptors close.
type ingestLock struct {
	f *os.File
}

// lockIngest locks the ingest directory dir without blocking. If dir does
// not exist the error wraps fs.ErrNotExist; if the lock is held,
// ErrUnavailable.
func lockIngest(dir string) (*ingestLock, error) {
	path := filepath.Join(dir, "lock")
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("ingest %s: locked by another writer: %w", filepath.Base(dir), errdefs.ErrUnavailable)
			}
			return nil, fmt.Errorf("ingest %s: flock: %w", filepath.Base(dir), err)
		}
		// The holder we waited on may have removed the directory (Commit,
		// Abort) after we opened the file: a lock on an unlinked file
		// protects nothing.
		var held, now syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &held); err != nil {
			f.Close()
			return nil, err
		}
		err = syscall.Stat(path, &now)
		if err == nil && held.Ino == now.Ino && held.Dev == now.Dev {
			return &ingestLock{f: f}, nil
		}
		f.Close()
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		// O_CREATE above would recreate the lock in a removed directory's
		// place only if the directory still exists; if it is gone, say so.
		if _, err := os.Stat(dir); err != nil {
			return nil, err
		}
	}
}

func (l *ingestLock) unlock() {
	// Closing the descriptor drops the flock.
	l.f.Close()
}
