package content

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/internal/hugebuf"
)

// OpenFunc opens a blob's bytes from offset on; for a registry it sends a
// GET with "Range: bytes=<offset>-" when offset > 0. It returns the reader
// and the offset the reader really starts at: offset when the server
// honoured the range (206 Partial Content), 0 when it sent the whole blob
// (200 OK). Any other start is an error.
//
// The reader must stop when ctx is cancelled, and must tolerate Close
// while a Read is blocked (an HTTP response body does both): Fetch closes
// it to stop a download nobody waits for any more.
type OpenFunc func(ctx context.Context, offset int64) (rc io.ReadCloser, start int64, err error)

// ProgressFunc receives the bytes of a blob present so far and its total
// size. Fetch calls it on the caller's goroutine, at most every
// progressInterval and once more at the end, never after Fetch returns.
type ProgressFunc func(current, total int64)

// progressInterval throttles progress reports: a terminal redraw or an
// event per 256 KiB chunk would cost more than the copy.
const progressInterval = 100 * time.Millisecond

// flight is one download of one blob that any number of Fetch calls in
// this process wait for. Its goroutine is owned by the LocalStore (wg)
// and ends when the download ends; the download's context is cancelled
// when the last waiter gives up or the store closes, so it cannot outlive
// its purpose.
type flight struct {
	done    chan struct{} // closed when err is set
	err     error
	cancel  context.CancelFunc
	waiters int          // guarded by LocalStore.mu
	current atomic.Int64 // bytes of the blob present, for progress
	tail    tail         // what followers read (see Follow)
}

// Fetch makes the blob desc present in the store: it returns at once if
// the blob exists; otherwise it resumes (or starts) the ingest named by the
// digest, calls open for the bytes it lacks, verifies and commits.
//
// Concurrent Fetch calls for one digest in this process share a single
// download. The download does not depend on any one caller: a caller whose
// ctx ends returns ctx.Err() and the others keep waiting; only when no
// caller is left is the download stopped (its ingest stays, for the next
// Fetch to resume). The open function of the call that started the download
// is used for the whole download. If the shared download ends in a
// cancellation that was not this caller's, Fetch retries with its own open.
//
// A download that ends early (the connection drops) keeps its ingest and
// fails with ErrUnavailable; calling Fetch again resumes it. A blob whose
// digest or size does not match fails with ErrFailedPrecondition and its
// ingest is removed. If the ingest being resumed turns out to be corrupt
// (the digest mismatches after a resume, as after a power cut that lost
// written pages) Fetch downloads once more from scratch before failing.
//
// desc.Size must be positive, except for the empty blob.
func (s *LocalStore) Fetch(ctx context.Context, desc Descriptor, open OpenFunc, progress ProgressFunc) error {
	if err := validateDigest(desc.Digest); err != nil {
		return err
	}
	if desc.Size < 0 || desc.Size == 0 && desc.Digest != digest.SHA256.FromBytes(nil) {
		return fmt.Errorf("blob %s: size %d: %w", desc.Digest, desc.Size, errdefs.ErrInvalidArgument)
	}
	if open == nil {
		return fmt.Errorf("blob %s: nil open function: %w", desc.Digest, errdefs.ErrInvalidArgument)
	}
	if progress == nil {
		progress = func(int64, int64) {}
	}
	for {
		if _, err := s.Info(ctx, desc.Digest); err == nil {
			progress(desc.Size, desc.Size)
			return nil
		}
		f, started, err := s.join(ctx, desc, open)
		if err != nil {
			return err
		}
		err = s.wait(ctx, desc, f, progress)
		if err == nil {
			progress(desc.Size, desc.Size)
			return nil
		}
		if ctx.Err() == nil && !started && isCancellation(err) {
			continue // someone else's download was stopped; ours is wanted
		}
		return err
	}
}

func isCancellation(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// join attaches the caller to the download of desc, starting it if there
// is none; started reports whether this call started it.
func (s *LocalStore) join(ctx context.Context, desc Descriptor, open OpenFunc) (f *flight, started bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false, fmt.Errorf("blob %s: content store closed: %w", desc.Digest, errdefs.ErrUnavailable)
	}
	f = s.flights[desc.Digest]
	if f == nil {
		// The download keeps the caller's values (logger, namespace) but
		// not its cancellation: other callers may still want the blob
		// when this one leaves.
		dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{done: make(chan struct{}), cancel: cancel}
		s.flights[desc.Digest] = f
		s.flightsMoved()
		started = true
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer cancel()
			err := s.download(dctx, desc, open, f)
			s.mu.Lock()
			if s.flights[desc.Digest] == f {
				delete(s.flights, desc.Digest)
				s.flightsMoved()
			}
			s.mu.Unlock()
			f.err = err
			close(f.done)
			f.tail.stop()
		}()
	}
	f.waiters++
	return f, started, nil
}

// wait waits for f on behalf of one caller, reporting progress, and
// detaches the caller if its ctx ends first.
func (s *LocalStore) wait(ctx context.Context, desc Descriptor, f *flight, progress ProgressFunc) error {
	tick := time.NewTicker(progressInterval)
	defer tick.Stop()
	last := int64(-1)
	for {
		select {
		case <-f.done:
			return f.err
		case <-ctx.Done():
			s.mu.Lock()
			f.waiters--
			if f.waiters == 0 {
				// Nobody wants it any more; a new Fetch starts a new flight
				// that resumes the ingest once this one lets go of it.
				f.cancel()
				if s.flights[desc.Digest] == f {
					delete(s.flights, desc.Digest)
					s.flightsMoved()
				}
			}
			s.mu.Unlock()
			return ctx.Err()
		case <-tick.C:
			if cur := f.current.Load(); cur != last {
				last = cur
				progress(cur, desc.Size)
			}
		}
	}
}

// download runs one flight: an attempt, and a second from scratch if the
// first resumed from data that turned out to be corrupt.
func (s *LocalStore) download(ctx context.Context, desc Descriptor, open OpenFunc, f *flight) error {
	resumed, err := s.downloadOnce(ctx, desc, open, f)
	if err != nil && resumed && errors.Is(err, errdefs.ErrFailedPrecondition) {
		// Commit removes an ingest that fails verification, but an
		// oversized stream fails in Write and leaves it: drop it either way
		// so this attempt starts at 0.
		if aerr := s.Abort(ctx, desc.Digest.String()); aerr != nil && !errors.Is(aerr, errdefs.ErrNotFound) {
			return fmt.Errorf("%w (and the corrupt ingest could not be removed: %v)", err, aerr)
		}
		_, err2 := s.downloadOnce(ctx, desc, open, f)
		if err2 == nil {
			return nil
		}
		return fmt.Errorf("%w (and before, resuming: %v)", err2, err)
	}
	return err
}

// downloadOnce resumes or starts the ingest and fills it. resumed reports
// whether it continued from data already on disk.
func (s *LocalStore) downloadOnce(ctx context.Context, desc Descriptor, open OpenFunc, f *flight) (resumed bool, err error) {
	w, err := OpenWriter(ctx, s, desc.Digest.String(), desc)
	if errors.Is(err, errdefs.ErrAlreadyExists) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	defer w.Close() // keeps the ingest for a resume unless committed

	offset := w.Status().Offset
	resumed = offset > 0
	f.current.Store(offset)
	if lw, ok := w.(*localWriter); ok {
		f.tail.start(lw.f.Name(), offset)
	}
	if offset < desc.Size {
		if err := s.copyFrom(ctx, w, desc, open, offset, f); err != nil {
			return resumed, err
		}
	}
	if got := w.Status().Offset; got < desc.Size {
		return resumed, fmt.Errorf("blob %s: stream ended at byte %d of %d; the ingest is kept for a resume: %w",
			desc.Digest, got, desc.Size, errdefs.ErrUnavailable)
	}
	return resumed, w.Commit(ctx)
}

// copyFrom opens the blob at offset and appends what it reads to w.
func (s *LocalStore) copyFrom(ctx context.Context, w Writer, desc Descriptor, open OpenFunc, offset int64, f *flight) error {
	rc, start, err := open(ctx, offset)
	if err != nil {
		return fmt.Errorf("blob %s: open at offset %d: %w", desc.Digest, offset, err)
	}
	// A reader that ignores cancellation would pin this goroutine; closing
	// it unblocks the Read. Once is for open functions whose readers do not
	// like a second Close.
	var closeOnce sync.Once
	closeRC := func() { closeOnce.Do(func() { rc.Close() }) }
	defer closeRC()
	stop := context.AfterFunc(ctx, closeRC)
	defer stop()

	if start != offset {
		if start != 0 {
			return fmt.Errorf("blob %s: asked for data from offset %d, open returned data from %d: %w",
				desc.Digest, offset, start, errdefs.ErrInvalidArgument)
		}
		// The server ignored Range and sent the whole blob: rewrite from 0
		// rather than trust that its first bytes equal what we have.
		if err := w.Truncate(0); err != nil {
			return err
		}
		f.current.Store(0)
		if err := f.tail.publish(ctx, nil, 0); err != nil {
			return fmt.Errorf("blob %s: %w", desc.Digest, err)
		}
	}
	// What arrives is written at once (a stalled connection keeps what it
	// delivered, and progress moves), but in whole aligned blocks, so that
	// the Writer can write it direct (see direct.go): a tail of less than a
	// block waits for the next read, or for the end of the stream.
	buf := hugebuf.Get(directChunk)
	defer hugebuf.Put(buf)
	pos := offset // the offset in the blob of buf[0]
	if start != offset {
		pos = 0
	}
	have := 0
	for {
		n, rerr := rc.Read(buf[have:])
		have += n
		k := have
		if rerr == nil {
			k = int((pos+int64(have))&^(directAlign-1) - pos)
		}
		if k > 0 {
			if _, err := w.Write(buf[:k]); err != nil {
				return fmt.Errorf("blob %s: %w", desc.Digest, err)
			}
			if err := f.tail.publish(ctx, buf[:k], pos); err != nil {
				return fmt.Errorf("blob %s: %w", desc.Digest, err)
			}
			f.current.Add(int64(k))
			pos += int64(k)
			have = copy(buf, buf[k:have])
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			if cerr := ctx.Err(); cerr != nil {
				return fmt.Errorf("blob %s: %w", desc.Digest, cerr)
			}
			// Retryable by the caller: the ingest keeps what arrived.
			return fmt.Errorf("blob %s: read at byte %d (the ingest is kept for a resume): %w: %w",
				desc.Digest, w.Status().Offset, rerr, errdefs.ErrUnavailable)
		}
	}
}

// OpenWriter is Ingester.Writer for callers that would rather wait than
// fail while another Writer (in this process or another) holds ref: it
// retries with backoff until it gets the ingest or ctx ends. The ingest it
// gets may have been advanced or committed by the previous holder, so
// callers check Status().Offset and ErrAlreadyExists as usual.
func OpenWriter(ctx context.Context, ing Ingester, ref string, desc Descriptor) (Writer, error) {
	delay := 10 * time.Millisecond
	for {
		w, err := ing.Writer(ctx, ref, desc)
		if !errors.Is(err, errdefs.ErrUnavailable) {
			return w, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (waiting for: %v)", ctx.Err(), err)
		case <-t.C:
		}
		delay = min(2*delay, time.Second)
	}
}
