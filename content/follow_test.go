package content_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/berth-dev/berth/content"
	"github.com/berth-dev/berth/content/contenttest"
	"github.com/berth-dev/berth/errdefs"
)

// follow starts Follow and a reader of everything it returns, and gives
// a way to see how far the reader got and its final result.
type followed struct {
	n    chan int64 // bytes read so far, sent after each read
	done chan followResult
}

type followResult struct {
	data []byte
	err  error
	at   time.Time
}

func follow(t *testing.T, ctx context.Context, s *content.LocalStore, desc content.Descriptor) *followed {
	t.Helper()
	f := &followed{n: make(chan int64, 1024), done: make(chan followResult, 1)}
	go func() {
		r, err := s.Follow(ctx, desc)
		if err != nil {
			f.done <- followResult{err: err, at: time.Now()}
			return
		}
		defer r.Close()
		var out bytes.Buffer
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Read(buf)
			out.Write(buf[:n])
			select {
			case f.n <- int64(out.Len()):
			default:
			}
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				f.done <- followResult{data: out.Bytes(), err: err, at: time.Now()}
				return
			}
		}
	}()
	return f
}

// waitRead waits until the follower has read at least n bytes.
func (f *followed) waitRead(t *testing.T, n int64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-f.n:
			if got >= n {
				return
			}
		case r := <-f.done:
			t.Fatalf("follower ended early after %d bytes: %v", len(r.data), r.err)
		case <-deadline:
			t.Fatalf("follower did not read %d bytes", n)
		}
	}
}

// TestFollowReadsWhileDownloading: a follower started before the download
// reads the bytes as they arrive (half the blob while the server stalls),
// through the memory ring and, past it, the ingest file, and sees the end
// only once the blob is committed.
func TestFollowReadsWhileDownloading(t *testing.T) {
	ctx := context.Background()
	s := newLocal(t, t.TempDir())
	b, desc := contenttest.Blob(t, 24<<20)
	const half = 12 << 20
	srv := &fakeServer{blob: b, stopAt: half, block: make(chan struct{})}
	f := follow(t, ctx, s, desc) // waits for the download to start
	time.Sleep(20 * time.Millisecond)
	errc := make(chan error, 1)
	go func() { errc <- s.Fetch(ctx, desc, srv.open, nil) }()
	f.waitRead(t, half)
	select {
	case r := <-f.done:
		t.Fatalf("follower ended while the download stalls: %d bytes, %v", len(r.data), r.err)
	default:
	}
	close(srv.block)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	r := <-f.done
	if r.err != nil || !bytes.Equal(r.data, b) {
		t.Fatalf("follower read %d bytes (equal: %v), %v; want the blob", len(r.data), bytes.Equal(r.data, b), r.err)
	}
	if _, err := s.Info(ctx, desc.Digest); err != nil {
		t.Fatalf("follower saw the end before the blob was committed: %v", err)
	}
}

// TestFollowBehindTheDownload: a follower that starts late reads what the
// memory ring no longer holds from the ingest, including what an earlier,
// interrupted download left.
func TestFollowBehindTheDownload(t *testing.T) {
	ctx := context.Background()
	s := newLocal(t, t.TempDir())
	b, desc := contenttest.Blob(t, 30<<20)
	interrupt(t, s, b, desc, 3<<20)
	srv := &fakeServer{blob: b, stopAt: 20 << 20, block: make(chan struct{})}
	errc := make(chan error, 1)
	go func() { errc <- s.Fetch(ctx, desc, srv.open, nil) }()
	for {
		st, err := s.Status(ctx, desc.Digest.String())
		if err == nil && st.Offset >= 20<<20 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	f := follow(t, ctx, s, desc)
	f.waitRead(t, 20<<20)
	close(srv.block)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if r := <-f.done; r.err != nil || !bytes.Equal(r.data, b) {
		t.Fatalf("follower read %d bytes (equal: %v), %v; want the blob", len(r.data), bytes.Equal(r.data, b), r.err)
	}
}

// TestFollowRestartFromZero: a server that ignores Range on a resume
// makes the download start over; the follower still reads the blob once,
// in order.
func TestFollowRestartFromZero(t *testing.T) {
	ctx := context.Background()
	s := newLocal(t, t.TempDir())
	b, desc := contenttest.Blob(t, 12<<20)
	interrupt(t, s, b, desc, 5<<20)
	f := follow(t, ctx, s, desc)
	time.Sleep(20 * time.Millisecond)
	srv := &fakeServer{blob: b, ignoreRange: true}
	if err := s.Fetch(ctx, desc, srv.open, nil); err != nil {
		t.Fatal(err)
	}
	if r := <-f.done; r.err != nil || !bytes.Equal(r.data, b) {
		t.Fatalf("follower read %d bytes (equal: %v), %v; want the blob", len(r.data), bytes.Equal(r.data, b), r.err)
	}
}

// TestFollowFailedDownload: when the blob fails verification the follower
// gets the download's error, recognisable as such, and never an EOF.
func TestFollowFailedDownload(t *testing.T) {
	ctx := context.Background()
	s := newLocal(t, t.TempDir())
	b, desc := contenttest.Blob(t, 4<<20)
	bad := append([]byte(nil), b...)
	bad[len(bad)-1] ^= 0xff
	f := follow(t, ctx, s, desc)
	time.Sleep(20 * time.Millisecond)
	err := s.Fetch(ctx, desc, (&fakeServer{blob: bad}).open, nil)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Fetch of a bad blob: %v, want FailedPrecondition", err)
	}
	r := <-f.done
	var de *content.DownloadError
	if !errors.As(r.err, &de) || !errors.Is(r.err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("follower: %d bytes, %v; want the download's error", len(r.data), r.err)
	}
}

// TestFollowPresentBlobAndCancel: a blob already present is read at
// once; a follower of a blob nobody fetches waits until its ctx ends.
func TestFollowPresentBlobAndCancel(t *testing.T) {
	ctx := context.Background()
	s := newLocal(t, t.TempDir())
	b, desc := contenttest.Blob(t, 3<<20)
	if err := s.Fetch(ctx, desc, (&fakeServer{blob: b}).open, nil); err != nil {
		t.Fatal(err)
	}
	if r := <-follow(t, ctx, s, desc).done; r.err != nil || !bytes.Equal(r.data, b) {
		t.Fatalf("follow of a present blob: %d bytes, %v", len(r.data), r.err)
	}
	_, other := contenttest.Blob(t, 1<<20)
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if r := <-follow(t, cctx, s, other).done; !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("follow of a blob nobody fetches: %v, want the ctx's end", r.err)
	}
}

// TestFollowHoldsTheDownloadBack: a follower that has started reading
// keeps the download within the memory ring of it, so that it never reads
// a byte back from the disk; one that has not started holds nothing back.
func TestFollowHoldsTheDownloadBack(t *testing.T) {
	ctx := context.Background()
	s := newLocal(t, t.TempDir())
	b, desc := contenttest.Blob(t, 40<<20)
	srv := &fakeServer{blob: b, stopAt: 2 << 20, block: make(chan struct{})}
	errc := make(chan error, 1)
	go func() { errc <- s.Fetch(ctx, desc, srv.open, nil) }()
	r, err := s.Follow(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	close(srv.block) // the download goes on once the follower is there
	idle2, err := s.Follow(ctx, desc)
	if err != nil {
		t.Fatal(err)
	}
	defer idle2.Close()
	got := make([]byte, 1<<20)
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	st, err := s.Status(ctx, desc.Digest.String())
	if err != nil {
		t.Fatalf("the download did not wait for the reader: %v", err)
	}
	if st.Offset > 1<<20+10<<20 {
		t.Fatalf("download at %d while the reader is at 1 MiB: not held back", st.Offset)
	}
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(append(got, rest...), b) {
		t.Fatalf("reader got %d bytes, %v; want the blob", 1<<20+len(rest), err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
