package content

import (
	"context"
	"errors"
	"fmt"
	"github.com/berth-dev/berth/internal/hugebuf"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// followRing is how many of the bytes a download wrote last it keeps in
// memory for its followers. A follower that is reading holds the download
// back so that it never falls further behind than that: it reads every
// byte from memory, none back from the disk. A follower that has not read
// yet (the unpacker waits for its turn) holds nothing back, and reads
// what the memory no longer has from the ingest file.
const followRing = 8 << 20

// tail is the part of a flight its followers read: how far the download
// has written the ingest, the last bytes written, and the ingest file.
type tail struct {
	mu      sync.Mutex
	written int64 // bytes of the blob in the ingest, in order from 0
	// ring holds the bytes [written-ringLen, written), the one at written
	// going to ring[head]; nil while nobody follows.
	ring    []byte
	ringLen int
	head    int
	file    *os.File      // the ingest data, read-only; nil outside a download attempt
	notify  chan struct{} // closed and replaced whenever written moves
	// readers are the offsets of the followers that have started reading.
	readers map[*follower]int64
	// consumed, when set, is closed once a reader moves on or leaves: a
	// publish waits on it.
	consumed chan struct{}
}

// start begins a download attempt on the ingest data file path, which
// holds offset bytes already (a resume).
func (t *tail) start(path string, offset int64) {
	f, err := os.Open(path)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.file != nil {
		t.file.Close()
	}
	t.file = nil
	if err == nil {
		t.file = f
	}
	t.written, t.ringLen, t.head = offset, 0, 0
	t.wake()
}

// stop ends a download attempt: followers that still need the bytes read
// the committed blob.
func (t *tail) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.file != nil {
		t.file.Close()
		t.file = nil
	}
	hugebuf.Put(t.ring) // nobody reads it but under mu
	t.ring = nil
	t.wake()
}

func (t *tail) wake() {
	if t.notify != nil {
		close(t.notify)
	}
	t.notify = make(chan struct{})
}

// publish records that p was written to the ingest at off. An offset
// other than written is a restart (the server ignored a Range request).
// While a reader would lose bytes it has not read from the ring, it waits
// for it, or for ctx, the download's.
func (t *tail) publish(ctx context.Context, p []byte, off int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if off != t.written {
		t.ringLen, t.head = 0, 0
	}
	for t.ring != nil && t.behind(off+int64(len(p))) {
		if t.consumed == nil {
			t.consumed = make(chan struct{})
		}
		ch := t.consumed
		t.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			t.mu.Lock()
			return ctx.Err()
		}
		t.mu.Lock()
	}
	if t.ring != nil && len(p) > 0 {
		if len(p) >= len(t.ring) {
			copy(t.ring, p[len(p)-len(t.ring):])
			t.head, t.ringLen = 0, len(t.ring)
		} else {
			n := copy(t.ring[t.head:], p)
			copy(t.ring, p[n:])
			t.head = (t.head + len(p)) % len(t.ring)
			t.ringLen = min(len(t.ring), t.ringLen+len(p))
		}
	}
	t.written = off + int64(len(p))
	t.wake()
	return nil
}

// behind reports whether a reader would have bytes it has not read pushed
// out of the ring if the download reached end. Called with mu held.
func (t *tail) behind(end int64) bool {
	for _, off := range t.readers {
		if end-off > int64(len(t.ring)) {
			return true
		}
	}
	return false
}

// moved records a reader's offset (or, with gone, its leaving) and wakes
// a waiting publish. Called with mu held.
func (t *tail) moved(r *follower, off int64, gone bool) {
	if gone {
		delete(t.readers, r)
	} else {
		if t.readers == nil {
			t.readers = make(map[*follower]int64)
		}
		t.readers[r] = off
	}
	if t.consumed != nil {
		close(t.consumed)
		t.consumed = nil
	}
}

// copyAt copies into p the bytes from off that the ring holds; 0 when it
// does not hold off. Called with mu held.
func (t *tail) copyAt(p []byte, off int64) int {
	if t.ring == nil || off < t.written-int64(t.ringLen) || off >= t.written {
		return 0
	}
	back := int(t.written - off) // bytes from off to the end
	i := (t.head - back + len(t.ring)) % len(t.ring)
	n := min(len(p), back)
	c := copy(p[:n], t.ring[i:])
	c += copy(p[c:n], t.ring)
	return c
}

// Follow opens the blob desc for one read from start to end, while a
// Fetch of it may still be downloading, so that a consumer (the unpacker)
// can work on the bytes as they arrive instead of reading the blob back
// once it is complete. It returns once the blob exists or a Fetch of it
// has started, and fails only if ctx ends first. Read waits for bytes not
// yet arrived, takes the newest from memory and older ones from the
// ingest file, and returns io.EOF only once the blob is committed, that
// is verified; if the download fails, Read returns its error. The
// download never waits for a follower.
func (s *LocalStore) Follow(ctx context.Context, desc Descriptor) (io.ReadCloser, error) {
	if err := validateDigest(desc.Digest); err != nil {
		return nil, err
	}
	r := &follower{s: s, ctx: ctx, desc: desc, fd: -1}
	if err := r.attach(); err != nil {
		return nil, err
	}
	return r, nil
}

// follower reads a blob through its flight (see Follow).
type follower struct {
	s    *LocalStore
	ctx  context.Context
	desc Descriptor
	f    *flight  // nil once reading the committed blob
	fd   int      // a dup of the ingest file, or -1
	blob *os.File // the committed blob, once f is done
	off  int64
}

// attach finds the flight of the blob, or the blob itself, waiting for
// one of them to exist.
func (r *follower) attach() error {
	for {
		r.s.mu.Lock()
		f := r.s.flights[r.desc.Digest]
		changed := r.s.flightsChanged
		if f != nil {
			f.tail.mu.Lock()
			if f.tail.ring == nil {
				// A small blob needs no more than its size; the floor
				// keeps a whole chunk of the download in the ring.
				f.tail.ring = hugebuf.Get(int(min(followRing, max(r.desc.Size, 2*directChunk))))
			}
			f.tail.mu.Unlock()
		}
		r.s.mu.Unlock()
		if f != nil {
			r.f = f
			return nil
		}
		if b, err := os.Open(r.s.blobPath(r.desc.Digest)); err == nil {
			r.f, r.blob = nil, b
			return nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return blobErr(r.desc.Digest, err)
		}
		select {
		case <-changed:
		case <-r.ctx.Done():
			return r.ctx.Err()
		}
	}
}

func (r *follower) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if r.blob != nil {
			n, err := r.blob.ReadAt(p, r.off)
			r.off += int64(n)
			if n > 0 && errors.Is(err, io.EOF) {
				err = nil
			}
			return n, err
		}
		t := &r.f.tail
		t.mu.Lock()
		if r.off < t.written {
			if n := t.copyAt(p, r.off); n > 0 {
				r.off += int64(n)
				t.moved(r, r.off, false)
				t.mu.Unlock()
				return n, nil
			}
			avail := t.written - r.off
			if r.fd < 0 && t.file != nil {
				fd, err := unix.FcntlInt(t.file.Fd(), unix.F_DUPFD_CLOEXEC, 0)
				if err != nil {
					t.mu.Unlock()
					return 0, fmt.Errorf("blob %s: %w", r.desc.Digest, err)
				}
				r.fd = fd
			}
			t.mu.Unlock()
			if r.fd >= 0 {
				n, err := unix.Pread(r.fd, p[:min(int64(len(p)), avail)], r.off)
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					return 0, fmt.Errorf("blob %s: read ingest at %d: %w", r.desc.Digest, r.off, err)
				}
				if n > 0 {
					r.off += int64(n)
					t.mu.Lock()
					t.moved(r, r.off, false)
					t.mu.Unlock()
					return n, nil
				}
			}
			// No file to read (between attempts) or it is shorter than
			// recorded (a restart truncated it): wait for the download.
			t.mu.Lock()
		}
		if t.notify == nil {
			t.notify = make(chan struct{})
		}
		notify := t.notify
		t.mu.Unlock()
		select {
		case <-r.f.done:
			if err := r.finished(); err != nil {
				return 0, err
			}
		case <-notify:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

// finished moves on once the flight is over: to the committed blob, to a
// new flight if this one was stopped for another caller's sake, or to its
// error.
func (r *follower) finished() error {
	r.detach()
	err := r.f.err
	if err == nil {
		b, oerr := os.Open(r.s.blobPath(r.desc.Digest))
		if oerr != nil {
			return blobErr(r.desc.Digest, oerr)
		}
		r.closeFD()
		r.f, r.blob = nil, b
		return nil
	}
	if isCancellation(err) && r.ctx.Err() == nil {
		// Stopped because its callers left; a Fetch of ours starts
		// another, which resumes the ingest.
		r.closeFD()
		return r.attach()
	}
	return &DownloadError{Err: err}
}

// DownloadError is what a Follow reader returns when the download it
// follows fails; Err is the download's own error, the one Fetch returns.
// A consumer that wraps read errors as its own (a layer that does not
// decompress) can tell the two apart with errors.As.
type DownloadError struct{ Err error }

func (e *DownloadError) Error() string { return e.Err.Error() }
func (e *DownloadError) Unwrap() error { return e.Err }

// detach stops holding the flight's download back.
func (r *follower) detach() {
	if r.f == nil {
		return
	}
	r.f.tail.mu.Lock()
	r.f.tail.moved(r, 0, true)
	r.f.tail.mu.Unlock()
}

func (r *follower) closeFD() {
	if r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
}

func (r *follower) Close() error {
	r.detach()
	r.f = nil
	r.closeFD()
	if r.blob != nil {
		r.blob.Close()
		r.blob = nil
	}
	return nil
}
