package content_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/content"
	"github.com/berth-dev/berth/content/contenttest"
	"github.com/berth-dev/berth/errdefs"
)

// fakeServer serves one blob through an OpenFunc, the way a registry
// serves a GET with an optional Range header, and can misbehave.
type fakeServer struct {
	blob        []byte
	ignoreRange bool          // answer 200 with the whole blob
	stopAt      int64         // if > 0, the stream pauses or ends at this offset...
	stopErr     error         // ...with this error (nil: a clean but early EOF)...
	block       chan struct{} // ...or, if set, blocks there until this is closed
	opened      chan struct{} // if set, closed at the first open

	mu      sync.Mutex
	offsets []int64
}

func (s *fakeServer) open(ctx context.Context, offset int64) (io.ReadCloser, int64, error) {
	s.mu.Lock()
	s.offsets = append(s.offsets, offset)
	if len(s.offsets) == 1 && s.opened != nil {
		close(s.opened)
	}
	s.mu.Unlock()
	start := offset
	if s.ignoreRange {
		start = 0
	}
	return &fakeReader{s: s, pos: start, closed: make(chan struct{})}, start, nil
}

func (s *fakeServer) calls() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.offsets...)
}

type fakeReader struct {
	s       *fakeServer
	pos     int64
	passed  bool // went past stopAt after block was released
	closed  chan struct{}
	closeMu sync.Once
}

func (r *fakeReader) Read(p []byte) (int, error) {
	s := r.s
	if s.stopAt > 0 && r.pos == s.stopAt && !r.passed {
		switch {
		case s.block != nil:
			select {
			case <-s.block:
				r.passed = true
			case <-r.closed:
				return 0, errors.New("use of closed connection")
			}
		case s.stopErr != nil:
			return 0, s.stopErr
		default:
			return 0, io.EOF
		}
	}
	end := int64(len(s.blob))
	if s.stopAt > 0 && r.pos < s.stopAt {
		end = s.stopAt
	}
	if r.pos == end {
		return 0, io.EOF
	}
	// Small chunks, like a network read, so progress has steps.
	n := copy(p[:min(len(p), 32<<10)], s.blob[r.pos:end])
	r.pos += int64(n)
	return n, nil
}

func (r *fakeReader) Close() error {
	r.closeMu.Do(func() { close(r.closed) })
	return nil
}

func TestFetchConcurrentCallsShareOneDownload(t *testing.T) {
	ctx := context.Background()
	s := newLocal(t, t.TempDir())
	b, desc := contenttest.Blob(t, 2<<20)
	srv := &fakeServer{blob: b, stopAt: 1 << 20, block: make(chan struct{}), opened: make(chan struct{})}

	const n = 10
	var wg sync.WaitGroup
	errs := make([]error, n)
	finals := make([]int64, n)
	var joined atomic.Int32
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reported := false
			last := int64(-1)
			errs[i] = s.Fetch(ctx, desc, srv.open, func(cur, total int64) {
				if !reported {
					reported = true
					joined.Add(1)
				}
				if cur < last || total != desc.Size {
					t.Errorf("fetch %d: progress %d/%d after %d", i, cur, total, last)
				}
				last = cur
				finals[i] = cur
			})
		}()
	}
	// Hold the download half way until every caller is waiting on it.
	<-srv.opened
	waitFor(t, "all callers to join", func() bool { return joined.Load() == n })
	close(srv.block)
	wg.Wait()

	for i, err := range errs {
		if err != nil {
			t.Errorf("fetch %d: %v", i, err)
		}
		if finals[i] != desc.Size {
			t.Errorf("fetch %d: last progress %d, want %d", i, finals[i], desc.Size)
		}
	}
	if calls := srv.calls(); len(calls) != 1 {
		t.Fatalf("open called %d times (%v), want once", len(calls), calls)
	}
	if !bytes.Equal(contenttest.ReadAll(t, s, desc), b) {
		t.Fatal("blob differs")
	}
}

func TestFetchSurvivesTheStarterLeaving(t *testing.T) {
	s := newLocal(t, t.TempDir())
	b, desc := contenttest.Blob(t, 1<<20)
	srv := &fakeServer{blob: b, stopAt: 300_000, block: make(chan struct{}), opened: make(chan struct{})}

	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leaderErr := make(chan error, 1)
	go func() { leaderErr <- s.Fetch(leaderCtx, desc, srv.open, nil) }()
	<-srv.opened

	waiterIn := make(chan struct{})
	var once sync.Once
	waiterErr := make(chan error, 1)
	go func() {
		waiterErr <- s.Fetch(context.Background(), desc, srv.open, func(int64, int64) {
			once.Do(func() { close(waiterIn) })
		})
	}()
	<-waiterIn

	cancelLeader()
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v, want context.Canceled", err)
	}
	close(srv.block)
	if err := <-waiterErr; err != nil {
		t.Fatalf("waiter inherited the starter's fate: %v", err)
	}
	if calls := srv.calls(); len(calls) != 1 {
		t.Fatalf("open called %v, want once: the download should have carried on", calls)
	}
	if !bytes.Equal(contenttest.ReadAll(t, s, desc), b) {
		t.Fatal("blob differs")
	}
}

func TestFetchStopsWhenNobodyWaitsAndResumesInANewStore(t *testing.T) {
	root := t.TempDir()
	s1, err := content.NewStore(root)
	if err != nil {
		t.Fatal(err)
	}
	b, desc := contenttest.Blob(t, 1<<20)
	const half = 512 << 10
	// This server sends half and then hangs, like a stalled connection.
	stalled := &fakeServer{blob: b, stopAt: half, block: make(chan struct{})}
	defer close(stalled.block)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- s1.Fetch(ctx, desc, stalled.open, func(cur, _ int64) {
			if cur == half {
				cancel()
			}
		})
	}()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Fetch: %v, want context.Canceled", err)
	}
	// The background download must notice, close the stalled reader and
	// release the ingest: Close waits for it.
	closed := make(chan struct{})
	go func() { s1.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the download goroutine outlived every caller")
	}
	if err := s1.Fetch(context.Background(), desc, stalled.open, nil); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Fetch on a closed store: %v, want ErrUnavailable", err)
	}

	s2 := newLocal(t, root)
	st, err := s2.Status(context.Background(), desc.Digest.String())
	if err != nil || st.Offset != half {
		t.Fatalf("ingest after the stop: %+v, %v; want offset %d", st, err, half)
	}
	srv := &fakeServer{blob: b}
	if err := s2.Fetch(context.Background(), desc, srv.open, nil); err != nil {
		t.Fatal(err)
	}
	if calls := srv.calls(); len(calls) != 1 || calls[0] != half {
		t.Fatalf("open called with offsets %v, want [%d]", calls, half)
	}
	if !bytes.Equal(contenttest.ReadAll(t, s2, desc), b) {
		t.Fatal("blob differs")
	}
}

// interrupt leaves a partial ingest of desc at offset at, as a dropped
// connection does, and checks Fetch reports it as retryable.
func interrupt(t *testing.T, s *content.LocalStore, b []byte, desc content.Descriptor, at int64) {
	t.Helper()
	srv := &fakeServer{blob: b, stopAt: at, stopErr: errors.New("connection reset by peer")}
	err := s.Fetch(context.Background(), desc, srv.open, nil)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("interrupted Fetch: %v, want ErrUnavailable naming the cause", err)
	}
	if _, err := s.Info(context.Background(), desc.Digest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("partial blob visible: %v", err)
	}
}

func TestFetchResumesWithRange(t *testing.T) {
	root := t.TempDir()
	b, desc := contenttest.Blob(t, 1<<20)
	interrupt(t, newLocal(t, root), b, desc, 700_000)

	s := newLocal(t, root)
	srv := &fakeServer{blob: b}
	var first int64 = -1
	if err := s.Fetch(context.Background(), desc, srv.open, func(cur, _ int64) {
		if first < 0 {
			first = cur
		}
	}); err != nil {
		t.Fatal(err)
	}
	if calls := srv.calls(); len(calls) != 1 || calls[0] != 700_000 {
		t.Fatalf("open offsets %v, want [700000]", calls)
	}
	if first < 700_000 {
		t.Errorf("first progress %d, want the resumed bytes (700000) counted", first)
	}
	if !bytes.Equal(contenttest.ReadAll(t, s, desc), b) {
		t.Fatal("blob differs")
	}
}

func TestFetchEarlyEOFKeepsIngest(t *testing.T) {
	ctx := context.Background()
	s := newLocal(t, t.TempDir())
	b, desc := contenttest.Blob(t, 100_000)
	short := &fakeServer{blob: b, stopAt: 40_000} // clean EOF at 40000
	if err := s.Fetch(ctx, desc, short.open, nil); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("short stream: %v, want ErrUnavailable", err)
	}
	if st, err := s.Status(ctx, desc.Digest.String()); err != nil || st.Offset != 40_000 {
		t.Fatalf("ingest %+v, %v; want it kept at 40000", st, err)
	}
	srv := &fakeServer{blob: b}
	if err := s.Fetch(ctx, desc, srv.open, nil); err != nil {
		t.Fatal(err)
	}
	if calls := srv.calls(); len(calls) != 1 || calls[0] != 40_000 {
		t.Fatalf("open offsets %v, want [40000]", calls)
	}
}

func TestFetchRangeIgnoredByServer(t *testing.T) {
	root := t.TempDir()
	b, desc := contenttest.Blob(t, 1<<20)
	interrupt(t, newLocal(t, root), b, desc, 333_333)

	s := newLocal(t, root)
	srv := &fakeServer{blob: b, ignoreRange: true}
	if err := s.Fetch(context.Background(), desc, srv.open, nil); err != nil {
		t.Fatalf("Fetch from a server without Range support: %v", err)
	}
	if calls := srv.calls(); len(calls) != 1 || calls[0] != 333_333 {
		t.Fatalf("open offsets %v, want a Range request at 333333", calls)
	}
	if !bytes.Equal(contenttest.ReadAll(t, s, desc), b) {
		t.Fatal("blob differs")
	}
}

func TestFetchRedownloadsACorruptResume(t *testing.T) {
	ctx := context.Background()
	s := newLocal(t, t.TempDir())
	b, desc := contenttest.Blob(t, 200_000)
	// A partial ingest whose bytes are wrong, as a power cut can leave.
	w, err := s.Writer(ctx, desc.Digest.String(), desc)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte{0}, 50_000))
	w.Close()

	srv := &fakeServer{blob: b}
	if err := s.Fetch(ctx, desc, srv.open, nil); err != nil {
		t.Fatal(err)
	}
	if calls := srv.calls(); len(calls) != 2 || calls[0] != 50_000 || calls[1] != 0 {
		t.Fatalf("open offsets %v, want [50000 0]: resume, then start over", calls)
	}
	if !bytes.Equal(contenttest.ReadAll(t, s, desc), b) {
		t.Fatal("blob differs")
	}
}

func TestFetchWrongContentRefused(t *testing.T) {
	ctx := context.Background()
	s := newLocal(t, t.TempDir())
	_, desc := contenttest.Blob(t, 10_000)
	other, _ := contenttest.Blob(t, 10_000)
	srv := &fakeServer{blob: other}
	err := s.Fetch(ctx, desc, srv.open, nil)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), desc.Digest.String()) {
		t.Fatalf("Fetch of wrong bytes: %v, want ErrFailedPrecondition naming %s", err, desc.Digest)
	}
	if sts, _ := s.ListStatuses(ctx); len(sts) != 0 {
		t.Fatalf("ingest kept after a digest mismatch: %+v", sts)
	}
	if _, err := s.Info(ctx, desc.Digest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("wrong blob visible: %v", err)
	}

	long := &fakeServer{blob: append(other, 'x')}
	_, desc2 := contenttest.Blob(t, 10_000)
	if err := s.Fetch(ctx, desc2, long.open, nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Fetch of an oversized stream: %v, want ErrFailedPrecondition", err)
	}
}

func TestFetchPresentBlobDoesNotDownload(t *testing.T) {
	ctx := context.Background()
	s := newLocal(t, t.TempDir())
	b, desc := contenttest.Blob(t, 1000)
	if err := s.Fetch(ctx, desc, (&fakeServer{blob: b}).open, nil); err != nil {
		t.Fatal(err)
	}
	srv := &fakeServer{blob: b}
	var got [2]int64
	if err := s.Fetch(ctx, desc, srv.open, func(c, t int64) { got = [2]int64{c, t} }); err != nil {
		t.Fatal(err)
	}
	if len(srv.calls()) != 0 {
		t.Fatalf("open called for a present blob: %v", srv.calls())
	}
	if got != [2]int64{1000, 1000} {
		t.Fatalf("progress %v, want [1000 1000]", got)
	}
}

func TestFetchRefusesBadArguments(t *testing.T) {
	ctx := context.Background()
	s := newLocal(t, t.TempDir())
	srv := &fakeServer{blob: []byte("x")}
	for _, d := range contenttest.InvalidDigests {
		if err := s.Fetch(ctx, content.Descriptor{Digest: d, Size: 1}, srv.open, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Fetch(%q): %v, want ErrInvalidArgument", d, err)
		}
	}
	if err := s.Fetch(ctx, content.Descriptor{Digest: digest.SHA256.FromString("x"), Size: 0}, srv.open, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Fetch with size 0: %v, want ErrInvalidArgument", err)
	}
	badStart := func(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
		return io.NopCloser(strings.NewReader("x")), off + 5, nil
	}
	if err := s.Fetch(ctx, content.Descriptor{Digest: digest.SHA256.FromString("x"), Size: 1}, badStart, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("open starting past the offset: %v, want ErrInvalidArgument", err)
	}
	if len(srv.calls()) != 0 {
		t.Errorf("open called for invalid descriptors: %v", srv.calls())
	}
	empty := content.Descriptor{Digest: digest.SHA256.FromBytes(nil), Size: 0}
	if err := s.Fetch(ctx, empty, srv.open, nil); err != nil {
		t.Fatalf("Fetch of the empty blob: %v", err)
	}
}

// httpOpen is how a registry client writes an OpenFunc: a Range request,
// and the start offset taken from the status code.
func httpOpen(url string) content.OpenFunc {
	return func(ctx context.Context, offset int64) (io.ReadCloser, int64, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, 0, err
		}
		if offset > 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, 0, err
		}
		switch resp.StatusCode {
		case http.StatusPartialContent:
			return resp.Body, offset, nil
		case http.StatusOK:
			return resp.Body, 0, nil
		default:
			resp.Body.Close()
			return nil, 0, fmt.Errorf("GET %s: %s", url, resp.Status)
		}
	}
}

func TestFetchOverHTTP(t *testing.T) {
	b, desc := contenttest.Blob(t, 3<<20)
	var ranges []string
	var mu sync.Mutex
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		mu.Unlock()
		if r.URL.Path == "/norange" {
			w.Write(b)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	}))
	defer ts.Close()

	for _, path := range []string{"/range", "/norange"} {
		t.Run(path, func(t *testing.T) {
			root := t.TempDir()
			interrupt(t, newLocal(t, root), b, desc, 1<<20)
			ranges = nil
			s := newLocal(t, root)
			if err := s.Fetch(context.Background(), desc, httpOpen(ts.URL+path), nil); err != nil {
				t.Fatal(err)
			}
			if len(ranges) != 1 || ranges[0] != "bytes=1048576-" {
				t.Fatalf("requests with Range %q, want one from byte 1048576", ranges)
			}
			if !bytes.Equal(contenttest.ReadAll(t, s, desc), b) {
				t.Fatal("blob differs")
			}
		})
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFetchAnySizeAndResumePoint: blobs are written in aligned blocks
// (direct where the filesystem allows) plus a buffered tail, and a resume
// at any offset realigns; whatever the sizes, the blob and what the
// Stream reader returns are byte for byte what was served.
func TestFetchAnySizeAndResumePoint(t *testing.T) {
	for _, tc := range []struct{ size, at int }{
		{1, 0}, {4095, 0}, {4097, 4095}, {1<<20 + 1, 4096}, {3<<20 + 123, 1_000_003}, {2 << 20, 2<<20 - 1},
	} {
		t.Run(fmt.Sprintf("%d-at-%d", tc.size, tc.at), func(t *testing.T) {
			root := t.TempDir()
			b, desc := contenttest.Blob(t, tc.size)
			if tc.at > 0 {
				interrupt(t, newLocal(t, root), b, desc, int64(tc.at))
			}
			s := newLocal(t, root)
			if err := s.Fetch(context.Background(), desc, (&fakeServer{blob: b}).open, nil); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(contenttest.ReadAll(t, s, desc), b) {
				t.Fatal("blob differs")
			}
			rc, err := s.Stream(context.Background(), desc)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil || !bytes.Equal(got, b) {
				t.Fatalf("stream: %d bytes, %v; want the %d of the blob", len(got), err, len(b))
			}
		})
	}
}
