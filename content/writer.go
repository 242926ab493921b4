package content

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/internal/directio"
)

// ingestMeta is meta.json: what an ingest is expected to become. It is
// written once when the ingest starts and is never updated, so it is never
// torn; progress lives in the length of data.
type ingestMeta struct {
	Ref       string        `json:"ref"`
	Expected  digest.Digest `json:"expected,omitempty"`
	Size      int64         `json:"size,omitempty"`
	StartedAt time.Time     `json:"started_at"`
}

func (s *LocalStore) ingestRoot() string { return filepath.Join(s.root, "ingest") }

// ingestDir is where ref's ingest lives; see the layout in local.go.
func (s *LocalStore) ingestDir(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return filepath.Join(s.ingestRoot(), hex.EncodeToString(sum[:]))
}

func readMeta(dir string) (ingestMeta, error) {
	var m ingestMeta
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("ingest %s: meta.json: %v: %w", filepath.Base(dir), err, errdefs.ErrDataLoss)
	}
	if m.Ref == "" {
		return m, fmt.Errorf("ingest %s: meta.json has no ref: %w", filepath.Base(dir), errdefs.ErrDataLoss)
	}
	return m, nil
}

// writeMeta replaces meta.json atomically and durably.
func writeMeta(dir string, m ingestMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "meta-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, "meta.json")); err != nil {
		return err
	}
	return syncDir(dir)
}

// Writer implements Ingester; the protocol is described in local.go.
func (s *LocalStore) Writer(ctx context.Context, ref string, desc Descriptor) (Writer, error) {
	if ref == "" {
		return nil, fmt.Errorf("ingest: empty ref: %w", errdefs.ErrInvalidArgument)
	}
	if desc.Digest != "" {
		if err := validateDigest(desc.Digest); err != nil {
			return nil, fmt.Errorf("ingest %q: %w", ref, err)
		}
	}
	if desc.Size < 0 {
		return nil, fmt.Errorf("ingest %q: size %d: %w", ref, desc.Size, errdefs.ErrInvalidArgument)
	}
	if desc.Digest != "" {
		if _, err := os.Stat(s.blobPath(desc.Digest)); err == nil {
			return nil, fmt.Errorf("blob %s: %w", desc.Digest, errdefs.ErrAlreadyExists)
		}
	}

	dir := s.ingestDir(ref)
	var lk *ingestLock
	for lk == nil {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// ingest/ itself is not fsynced after the mkdir: a power cut can
		// lose a new ingest, which costs a re-download, never a wrong blob.
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("ingest %q: %w", ref, err)
		}
		var err error
		lk, err = lockIngest(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed under us by a Commit or Abort; recreate
		} else if err != nil {
			return nil, fmt.Errorf("ingest %q: %w", ref, err)
		}
	}

	w, err := s.openIngest(dir, ref, desc, lk)
	if err != nil {
		lk.unlock()
		return nil, fmt.Errorf("ingest %q: %w", ref, err)
	}
	return w, nil
}

// openIngest resumes the ingest in dir if it expects the same blob, or
// starts it afresh. The caller holds the lock.
func (s *LocalStore) openIngest(dir, ref string, desc Descriptor, lk *ingestLock) (*localWriter, error) {
	want := ingestMeta{Ref: ref, Expected: desc.Digest, Size: desc.Size}
	m, err := readMeta(dir)
	resume := err == nil && m.Ref == ref && m.Expected == want.Expected && m.Size == want.Size
	if !resume {
		// No ingest, an unreadable one, or one left by a caller that
		// expected another blob under this ref: its data is of no use.
		want.StartedAt = time.Now().UTC()
		m = want
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	w := &localWriter{s: s, dir: dir, meta: m, lk: lk, f: f, dfd: openDirect(f.Name()), h: sha256.New()}
	if !resume {
		if err := f.Truncate(0); err != nil {
			w.closeDirect()
			f.Close()
			return nil, err
		}
		if err := writeMeta(dir, m); err != nil {
			w.closeDirect()
			f.Close()
			return nil, err
		}
		return w, nil
	}
	// Rehash what is on disk rather than trusting any saved hash state:
	// the disk is the only thing that survived a kill.
	n, err := io.Copy(w.h, f)
	if err != nil {
		w.closeDirect()
		f.Close()
		return nil, fmt.Errorf("rehash partial data: %w", err)
	}
	w.offset = n
	if m.Size > 0 && n > m.Size {
		// More data than the blob can have: corrupt, start over.
		if err := w.truncate(0); err != nil {
			w.closeDirect()
			f.Close()
			return nil, err
		}
	}
	return w, nil
}

// localWriter is the Writer of a LocalStore ingest.
type localWriter struct {
	s      *LocalStore
	dir    string
	meta   ingestMeta
	lk     *ingestLock
	f      *os.File // data
	dfd    int      // data opened O_DIRECT, or -1
	h      hash.Hash
	offset int64
	done   bool // committed or closed: the ingest is no longer ours
}

var errWriterDone = fmt.Errorf("ingest writer already committed or closed: %w", errdefs.ErrFailedPrecondition)

func (w *localWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errWriterDone
	}
	if w.meta.Size > 0 && w.offset+int64(len(p)) > w.meta.Size {
		return 0, fmt.Errorf("ingest %q: writing %d bytes at offset %d exceeds the expected size %d: %w",
			w.meta.Ref, len(p), w.offset, w.meta.Size, errdefs.ErrFailedPrecondition)
	}
	if w.dfd >= 0 && directOK(p, w.offset) {
		err := directio.PwriteAll(w.dfd, p, w.offset)
		if err == nil {
			w.h.Write(p)
			w.offset += int64(len(p))
			return len(p), nil
		}
		if err != unix.EINVAL {
			return 0, fmt.Errorf("ingest %q: write: %w", w.meta.Ref, err)
		}
		// Refused after all: write it again, buffered, from now on.
		w.closeDirect()
	}
	n, err := w.f.WriteAt(p, w.offset)
	w.h.Write(p[:n])
	w.offset += int64(n)
	return n, err
}

func (w *localWriter) closeDirect() {
	if w.dfd >= 0 {
		unix.Close(w.dfd)
		w.dfd = -1
	}
}

func (w *localWriter) Status() Status {
	st := Status{
		Ref:       w.meta.Ref,
		Offset:    w.offset,
		Total:     w.meta.Size,
		Expected:  w.meta.Expected,
		StartedAt: w.meta.StartedAt,
		UpdatedAt: w.meta.StartedAt,
	}
	if fi, err := w.f.Stat(); err == nil {
		st.UpdatedAt = fi.ModTime()
	}
	return st
}

func (w *localWriter) Digest() digest.Digest {
	return digest.NewDigest(digest.SHA256, w.h)
}

func (w *localWriter) Truncate(size int64) error {
	if w.done {
		return errWriterDone
	}
	if size < 0 || size > w.offset {
		return fmt.Errorf("ingest %q: truncate to %d, offset is %d: %w", w.meta.Ref, size, w.offset, errdefs.ErrInvalidArgument)
	}
	return w.truncate(size)
}

// truncate cuts data to size and rebuilds the hash from the bytes kept.
func (w *localWriter) truncate(size int64) error {
	if err := w.f.Truncate(size); err != nil {
		return fmt.Errorf("ingest %q: %w", w.meta.Ref, err)
	}
	w.h.Reset()
	if _, err := w.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.CopyN(w.h, w.f, size); err != nil {
		return fmt.Errorf("ingest %q: rehash: %w", w.meta.Ref, err)
	}
	w.offset = size
	return nil
}

func (w *localWriter) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	w.closeDirect()
	// Flush so that a resume after a power cut does not hash pages the
	// kernel never wrote.
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.lk.unlock()
	if err != nil {
		return fmt.Errorf("ingest %q: %w", w.meta.Ref, err)
	}
	return nil
}

func (w *localWriter) Commit(ctx context.Context) error {
	if w.done {
		return errWriterDone
	}
	w.done = true
	defer w.lk.unlock()
	defer w.f.Close()
	w.closeDirect()

	// Verification failures are final for this ingest: its bytes can never
	// become the expected blob, so keeping them would only make the next
	// attempt resume into the same failure.
	fail := func(err error) error {
		os.RemoveAll(w.dir)
		return err
	}
	got := w.Digest()
	name := w.meta.Expected
	if name == "" {
		name = got
	}
	if w.meta.Size > 0 && w.offset != w.meta.Size {
		return fail(fmt.Errorf("blob %s: size %d, expected %d: %w", name, w.offset, w.meta.Size, errdefs.ErrFailedPrecondition))
	}
	if w.meta.Expected != "" && got != w.meta.Expected {
		return fail(fmt.Errorf("blob %s: digest mismatch: expected %s, actual %s (%d bytes): %w",
			w.meta.Expected, w.meta.Expected, got, w.offset, errdefs.ErrFailedPrecondition))
	}

	// Read-only: nobody should ever modify a blob in place.
	if err := w.f.Chmod(0o444); err != nil {
		return fmt.Errorf("blob %s: %w", name, err)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("blob %s: fsync: %w", name, err)
	}
	target := w.s.blobPath(got)
	if _, err := os.Stat(target); err == nil {
		// Another ingest committed it first; identical by digest.
		os.RemoveAll(w.dir)
		return nil
	}
	if err := os.Rename(filepath.Join(w.dir, "data"), target); err != nil {
		return fmt.Errorf("blob %s: commit: %w", name, err)
	}
	if err := syncDir(w.s.blobsDir()); err != nil {
		return fmt.Errorf("blob %s: commit: %w", name, err)
	}
	// The blob is durable; a failure to clean up the ingest leaves a
	// directory without data that Cleanup or GC removes.
	os.RemoveAll(w.dir)
	return nil
}

// Status implements IngestManager.
func (s *LocalStore) Status(ctx context.Context, ref string) (Status, error) {
	return s.status(s.ingestDir(ref), ref)
}

func (s *LocalStore) status(dir, ref string) (Status, error) {
	m, err := readMeta(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return Status{}, fmt.Errorf("ingest %q: %w", ref, errdefs.ErrNotFound)
	} else if err != nil {
		return Status{}, fmt.Errorf("ingest %q: %w", ref, err)
	}
	if ref != "" && m.Ref != ref {
		// A hash collision would land here; treat it as absent.
		return Status{}, fmt.Errorf("ingest %q: %w", ref, errdefs.ErrNotFound)
	}
	st := Status{Ref: m.Ref, Total: m.Size, Expected: m.Expected, StartedAt: m.StartedAt, UpdatedAt: m.StartedAt}
	if fi, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		st.Offset = fi.Size()
		st.UpdatedAt = fi.ModTime()
	}
	return st, nil
}

// ListStatuses implements IngestManager. Ingests without a readable
// meta.json are left out; Cleanup removes them.
func (s *LocalStore) ListStatuses(ctx context.Context) ([]Status, error) {
	entries, err := os.ReadDir(s.ingestRoot())
	if err != nil {
		return nil, fmt.Errorf("content store: list ingests: %w", err)
	}
	var out []Status
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		st, err := s.status(filepath.Join(s.ingestRoot(), e.Name()), "")
		if err != nil {
			continue
		}
		out = append(out, st)
	}
	return out, nil
}

// Abort implements IngestManager.
func (s *LocalStore) Abort(ctx context.Context, ref string) error {
	dir := s.ingestDir(ref)
	lk, err := lockIngest(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("ingest %q: %w", ref, errdefs.ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("ingest %q: %w", ref, err)
	}
	defer lk.unlock()
	if _, err := readMeta(dir); errors.Is(err, fs.ErrNotExist) {
		// Only a lock file (we may just have created it): nothing to abort.
		os.RemoveAll(dir)
		return fmt.Errorf("ingest %q: %w", ref, errdefs.ErrNotFound)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("ingest %q: %w", ref, err)
	}
	return nil
}
