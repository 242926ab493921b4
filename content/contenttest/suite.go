// Package contenttest is the conformance suite every content.Store
// implementation runs: it states, as tests, the invariants documented on
// the interfaces in package content.
package contenttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/content"
	"github.com/berth-dev/berth/errdefs"
)

// Factory opens the store kept in root. Called twice with one root it must
// return two instances over the same data, as after a restart of berthd;
// it registers any closing with t.Cleanup.
type Factory func(t *testing.T, root string) content.Store

// Run runs the conformance suite against the stores newStore opens.
func Run(t *testing.T, newStore Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, Factory)
	}{
		{"CommitAndRead", testCommitAndRead},
		{"CommitComputesUnknownDigest", testCommitUnknownDigest},
		{"WrongDigestRefused", testWrongDigest},
		{"WrongSizeRefused", testWrongSize},
		{"WriteBeyondSizeRefused", testWriteBeyondSize},
		{"ResumeAfterRestart", testResumeAfterRestart},
		{"ResumeWithOtherExpectationsRestarts", testResumeOtherExpectations},
		{"TruncateRewrites", testTruncate},
		{"SecondWriterRefused", testSecondWriter},
		{"WriterForExistingBlob", testWriterExisting},
		{"CommitOfPresentBlobSucceeds", testCommitPresent},
		{"InvalidDigestsRefused", testInvalidDigests},
		{"DeleteThenNotFound", testDelete},
		{"WalkListsBlobs", testWalk},
		{"StatusAndAbort", testStatusAbort},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore) })
	}
}

// Blob returns n random bytes and their descriptor.
func Blob(t testing.TB, n int) ([]byte, content.Descriptor) {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b, content.Descriptor{MediaType: "application/octet-stream", Digest: digest.SHA256.FromBytes(b), Size: int64(n)}
}

// ReadAll reads a committed blob back.
func ReadAll(t testing.TB, p content.Provider, desc content.Descriptor) []byte {
	t.Helper()
	ra, err := p.ReaderAt(context.Background(), desc)
	if err != nil {
		t.Fatalf("ReaderAt(%s): %v", desc.Digest, err)
	}
	defer ra.Close()
	b, err := io.ReadAll(io.NewSectionReader(ra, 0, ra.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func write(t *testing.T, w content.Writer, b []byte) {
	t.Helper()
	if n, err := w.Write(b); err != nil || n != len(b) {
		t.Fatalf("Write(%d bytes) = %d, %v", len(b), n, err)
	}
}

func wantKind(t *testing.T, what string, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("%s: error %v, want %v", what, err, kind)
	}
}

// assertEmpty checks that nothing is visible: no blob and no ingest.
func assertEmpty(t *testing.T, s content.Store) {
	t.Helper()
	ctx := context.Background()
	if err := s.Walk(ctx, func(i content.Info) error {
		t.Errorf("unexpected blob %s", i.Digest)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sts, err := s.ListStatuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		t.Errorf("unexpected ingest %q at offset %d", st.Ref, st.Offset)
	}
}

func testCommitAndRead(t *testing.T, f Factory) {
	ctx := context.Background()
	s := f(t, t.TempDir())
	b, desc := Blob(t, 100_000)
	w, err := s.Writer(ctx, "ref-1", desc)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, b[:10])
	write(t, w, b[10:])
	if w.Digest() != desc.Digest || w.Status().Offset != desc.Size {
		t.Fatalf("writer reports %s at %d, want %s at %d", w.Digest(), w.Status().Offset, desc.Digest, desc.Size)
	}
	if _, err := s.Info(ctx, desc.Digest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("blob visible before commit: %v", err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close after Commit: %v", err)
	}
	if got := ReadAll(t, s, desc); !bytes.Equal(got, b) {
		t.Fatal("blob read back differs from what was written")
	}
	info, err := s.Info(ctx, desc.Digest)
	if err != nil || info.Size != desc.Size || info.Digest != desc.Digest {
		t.Fatalf("Info = %+v, %v", info, err)
	}
	if sts, _ := s.ListStatuses(ctx); len(sts) != 0 {
		t.Fatalf("ingest left after commit: %+v", sts)
	}
}

func testCommitUnknownDigest(t *testing.T, f Factory) {
	ctx := context.Background()
	s := f(t, t.TempDir())
	b, desc := Blob(t, 4096)
	w, err := s.Writer(ctx, "built-layer", content.Descriptor{})
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, b)
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if w.Digest() != desc.Digest {
		t.Fatalf("Digest() = %s, want %s", w.Digest(), desc.Digest)
	}
	if got := ReadAll(t, s, desc); !bytes.Equal(got, b) {
		t.Fatal("blob differs")
	}
}

func testWrongDigest(t *testing.T, f Factory) {
	ctx := context.Background()
	s := f(t, t.TempDir())
	b, desc := Blob(t, 1000)
	lie := desc
	lie.Digest = digest.SHA256.FromString("something else")
	w, err := s.Writer(ctx, "ref", lie)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, b)
	err = w.Commit(ctx)
	wantKind(t, "commit with wrong digest", err, errdefs.ErrFailedPrecondition)
	for _, d := range []digest.Digest{lie.Digest, desc.Digest} {
		if !bytes.Contains([]byte(err.Error()), []byte(d.String())) {
			t.Errorf("error %q does not name %s", err, d)
		}
	}
	assertEmpty(t, s)
	if _, err := s.Info(ctx, desc.Digest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("blob stored under its real digest despite the mismatch: %v", err)
	}
}

func testWrongSize(t *testing.T, f Factory) {
	ctx := context.Background()
	s := f(t, t.TempDir())
	b, desc := Blob(t, 1000)
	w, err := s.Writer(ctx, "ref", desc)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, b[:999])
	wantKind(t, "commit of a short blob", w.Commit(ctx), errdefs.ErrFailedPrecondition)
	assertEmpty(t, s)
}

func testWriteBeyondSize(t *testing.T, f Factory) {
	ctx := context.Background()
	s := f(t, t.TempDir())
	b, desc := Blob(t, 1000)
	w, err := s.Writer(ctx, "ref", desc)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	write(t, w, b[:600])
	_, err = w.Write(b[:600])
	wantKind(t, "write past the expected size", err, errdefs.ErrFailedPrecondition)
	if off := w.Status().Offset; off != 600 {
		t.Fatalf("offset %d after a refused write, want 600", off)
	}
	write(t, w, b[600:])
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("commit after a refused write: %v", err)
	}
}

func testResumeAfterRestart(t *testing.T, f Factory) {
	ctx := context.Background()
	root := t.TempDir()
	b, desc := Blob(t, 300_000)
	s1 := f(t, root)
	w, err := s1.Writer(ctx, "pull-x", desc)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, b[:123_457])
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := f(t, root) // a new instance: nothing carried over in memory
	st, err := s2.Status(ctx, "pull-x")
	if err != nil || st.Offset != 123_457 || st.Total != desc.Size || st.Expected != desc.Digest {
		t.Fatalf("Status = %+v, %v; want offset 123457 of %d", st, err, desc.Size)
	}
	w, err = s2.Writer(ctx, "pull-x", desc)
	if err != nil {
		t.Fatal(err)
	}
	if off := w.Status().Offset; off != 123_457 {
		t.Fatalf("resumed at %d, want 123457", off)
	}
	if w.Digest() != digest.SHA256.FromBytes(b[:123_457]) {
		t.Fatal("resumed digest does not cover the partial data")
	}
	write(t, w, b[123_457:])
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ReadAll(t, s2, desc), b) {
		t.Fatal("resumed blob differs")
	}
}

func testResumeOtherExpectations(t *testing.T, f Factory) {
	ctx := context.Background()
	s := f(t, t.TempDir())
	b1, d1 := Blob(t, 1000)
	b2, d2 := Blob(t, 2000)
	w, err := s.Writer(ctx, "ref", d1)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, b1[:500])
	w.Close()
	w, err = s.Writer(ctx, "ref", d2)
	if err != nil {
		t.Fatal(err)
	}
	if off := w.Status().Offset; off != 0 {
		t.Fatalf("ingest for another blob resumed at %d, want a fresh start", off)
	}
	write(t, w, b2)
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func testTruncate(t *testing.T, f Factory) {
	ctx := context.Background()
	s := f(t, t.TempDir())
	b, desc := Blob(t, 10_000)
	w, err := s.Writer(ctx, "ref", desc)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	write(t, w, b[:4000])
	write(t, w, []byte("garbage"))
	wantKind(t, "truncate beyond offset", w.Truncate(5000), errdefs.ErrInvalidArgument)
	if err := w.Truncate(4000); err != nil {
		t.Fatal(err)
	}
	write(t, w, b[4000:])
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("commit after truncate: %v", err)
	}
}

func testSecondWriter(t *testing.T, f Factory) {
	ctx := context.Background()
	root := t.TempDir()
	s := f(t, root)
	b, desc := Blob(t, 1000)
	w, err := s.Writer(ctx, "ref", desc)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, b[:10])
	_, err = s.Writer(ctx, "ref", desc)
	wantKind(t, "second writer, same store", err, errdefs.ErrUnavailable)
	_, err = f(t, root).Writer(ctx, "ref", desc)
	wantKind(t, "second writer, second store on the same root", err, errdefs.ErrUnavailable)
	wantKind(t, "abort of a held ingest", s.Abort(ctx, "ref"), errdefs.ErrUnavailable)
	// Another ref is independent.
	w2, err := s.Writer(ctx, "other", desc)
	if err != nil {
		t.Fatalf("writer for another ref: %v", err)
	}
	w2.Close()
	w.Close()
	w, err = s.Writer(ctx, "ref", desc)
	if err != nil {
		t.Fatalf("writer after the first closed: %v", err)
	}
	if w.Status().Offset != 10 {
		t.Fatalf("offset %d, want 10", w.Status().Offset)
	}
	w.Close()
}

func testWriterExisting(t *testing.T, f Factory) {
	ctx := context.Background()
	s := f(t, t.TempDir())
	b, desc := Blob(t, 100)
	commit(t, s, "a", desc, b)
	_, err := s.Writer(ctx, "b", desc)
	wantKind(t, "writer for a committed blob", err, errdefs.ErrAlreadyExists)
}

func testCommitPresent(t *testing.T, f Factory) {
	ctx := context.Background()
	s := f(t, t.TempDir())
	b, desc := Blob(t, 100)
	w1, err := s.Writer(ctx, "a", desc)
	if err != nil {
		t.Fatal(err)
	}
	w2, err := s.Writer(ctx, "b", desc)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w1, b)
	write(t, w2, b)
	if err := w1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w2.Commit(ctx); err != nil {
		t.Fatalf("second commit of the same blob: %v", err)
	}
	if !bytes.Equal(ReadAll(t, s, desc), b) {
		t.Fatal("blob differs")
	}
	if sts, _ := s.ListStatuses(ctx); len(sts) != 0 {
		t.Fatalf("ingests left: %+v", sts)
	}
}

func commit(t *testing.T, s content.Store, ref string, desc content.Descriptor, b []byte) {
	t.Helper()
	ctx := context.Background()
	w, err := s.Writer(ctx, ref, desc)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, b)
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// InvalidDigests are refused by every method that takes a digest.
var InvalidDigests = []digest.Digest{
	"sha256:../../x",
	"sha256:../../../../etc/passwd",
	"sha256:abc",
	"sha256:" + digest.Digest(bytes.Repeat([]byte("a"), 65)),
	"sha256:" + digest.Digest(bytes.Repeat([]byte("A"), 64)),
	"sha256:" + digest.Digest(bytes.Repeat([]byte("g"), 64)),
	"sha512:" + digest.Digest(bytes.Repeat([]byte("a"), 128)),
	"md5:d41d8cd98f00b204e9800998ecf8427e",
	digest.Digest(bytes.Repeat([]byte("a"), 64)),
	"sha256:",
}

func testInvalidDigests(t *testing.T, f Factory) {
	ctx := context.Background()
	s := f(t, t.TempDir())
	for _, d := range InvalidDigests {
		_, err := s.ReaderAt(ctx, content.Descriptor{Digest: d, Size: 1})
		wantKind(t, "ReaderAt "+string(d), err, errdefs.ErrInvalidArgument)
		_, err = s.Info(ctx, d)
		wantKind(t, "Info "+string(d), err, errdefs.ErrInvalidArgument)
		wantKind(t, "Delete "+string(d), s.Delete(ctx, d), errdefs.ErrInvalidArgument)
		_, err = s.Writer(ctx, "ref", content.Descriptor{Digest: d, Size: 1})
		wantKind(t, "Writer "+string(d), err, errdefs.ErrInvalidArgument)
	}
	assertEmpty(t, s)
}

func testDelete(t *testing.T, f Factory) {
	ctx := context.Background()
	s := f(t, t.TempDir())
	b, desc := Blob(t, 100)
	commit(t, s, "a", desc, b)
	if err := s.Delete(ctx, desc.Digest); err != nil {
		t.Fatal(err)
	}
	_, err := s.Info(ctx, desc.Digest)
	wantKind(t, "Info after Delete", err, errdefs.ErrNotFound)
	_, err = s.ReaderAt(ctx, desc)
	wantKind(t, "ReaderAt after Delete", err, errdefs.ErrNotFound)
	wantKind(t, "second Delete", s.Delete(ctx, desc.Digest), errdefs.ErrNotFound)
	// And it can be written again.
	commit(t, s, "a", desc, b)
}

func testWalk(t *testing.T, f Factory) {
	ctx := context.Background()
	s := f(t, t.TempDir())
	want := map[digest.Digest]int64{}
	for i := 1; i <= 3; i++ {
		b, desc := Blob(t, i*100)
		commit(t, s, string(desc.Digest), desc, b)
		want[desc.Digest] = desc.Size
	}
	// An uncommitted ingest is not a blob.
	_, partial := Blob(t, 10)
	w, err := s.Writer(ctx, "partial", partial)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	got := map[digest.Digest]int64{}
	if err := s.Walk(ctx, func(i content.Info) error {
		got[i.Digest] = i.Size
		if i.ModTime.IsZero() {
			t.Errorf("%s: zero ModTime", i.Digest)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Walk listed %v, want %v", got, want)
	}
	for d, n := range want {
		if got[d] != n {
			t.Errorf("Walk: %s size %d, want %d", d, got[d], n)
		}
	}
	stop := errors.New("stop")
	calls := 0
	if err := s.Walk(ctx, func(content.Info) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("Walk with a failing fn: %v after %d calls, want the fn's error after 1", err, calls)
	}
}

func testStatusAbort(t *testing.T, f Factory) {
	ctx := context.Background()
	s := f(t, t.TempDir())
	_, err := s.Status(ctx, "nope")
	wantKind(t, "Status of a missing ingest", err, errdefs.ErrNotFound)
	wantKind(t, "Abort of a missing ingest", s.Abort(ctx, "nope"), errdefs.ErrNotFound)

	b, desc := Blob(t, 1000)
	for _, ref := range []string{"a", "b/../../c"} {
		w, err := s.Writer(ctx, ref, desc)
		if err != nil {
			t.Fatal(err)
		}
		write(t, w, b[:100])
		w.Close()
	}
	sts, err := s.ListStatuses(ctx)
	if err != nil || len(sts) != 2 {
		t.Fatalf("ListStatuses = %+v, %v; want 2 ingests", sts, err)
	}
	for _, st := range sts {
		if st.Offset != 100 || st.UpdatedAt.IsZero() || st.StartedAt.IsZero() {
			t.Errorf("status %+v: want offset 100 and times set", st)
		}
	}
	for _, ref := range []string{"a", "b/../../c"} {
		if err := s.Abort(ctx, ref); err != nil {
			t.Fatalf("Abort(%q): %v", ref, err)
		}
	}
	assertEmpty(t, s)
}
