package content_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/content"
	"github.com/berth-dev/berth/content/contenttest"
	"github.com/berth-dev/berth/errdefs"
)

func newLocal(t *testing.T, root string) *content.LocalStore {
	t.Helper()
	s, err := content.NewStore(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestLocalStoreConformance(t *testing.T) {
	contenttest.Run(t, func(t *testing.T, root string) content.Store { return newLocal(t, root) })
}

// dirEntries lists a directory under the store root.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestRefusedCommitLeavesNothingOnDisk(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := newLocal(t, root)
	b, desc := contenttest.Blob(t, 5000)
	for _, bad := range []content.Descriptor{
		{Digest: digest.SHA256.FromString("other"), Size: desc.Size}, // wrong digest
		{Digest: desc.Digest, Size: desc.Size + 1},                   // wrong size
	} {
		w, err := s.Writer(ctx, "ref", bad)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(ctx); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("commit of %+v: %v, want ErrFailedPrecondition", bad, err)
		}
		if got := dirEntries(t, filepath.Join(root, "blobs", "sha256")); len(got) != 0 {
			t.Fatalf("blobs/sha256 holds %v after a refused commit", got)
		}
		if got := dirEntries(t, filepath.Join(root, "ingest")); len(got) != 0 {
			t.Fatalf("ingest/ holds %v after a refused commit", got)
		}
	}
}

func TestCommittedBlobLayout(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := newLocal(t, root)
	b, desc := contenttest.Blob(t, 100)
	w, err := s.Writer(ctx, "ref", desc)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, "blobs", "sha256", desc.Digest.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o444 {
		t.Errorf("blob mode %v, want read-only 0444", fi.Mode().Perm())
	}
}

func TestCleanup(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := newLocal(t, root)
	b, desc := contenttest.Blob(t, 1000)

	// A live ingest with a stray temp file, and a held one.
	w, err := s.Writer(ctx, "kept", desc)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b[:100])
	w.Close()
	keptDir := ingestDirOf(t, s, "kept")
	os.WriteFile(filepath.Join(keptDir, "meta-123.tmp"), []byte("{"), 0o600)
	held, err := s.Writer(ctx, "held", desc)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	// Wreckage: an ingest dir that crashed before meta.json, junk in blobs.
	broken := filepath.Join(root, "ingest", "broken")
	os.MkdirAll(broken, 0o700)
	os.WriteFile(filepath.Join(broken, "data"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(root, "blobs", "sha256", "not-a-digest"), []byte("x"), 0o600)

	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{broken, filepath.Join(keptDir, "meta-123.tmp"), filepath.Join(root, "blobs", "sha256", "not-a-digest")} {
		if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived Cleanup", gone)
		}
	}
	for _, ref := range []string{"kept", "held"} {
		if _, err := s.Status(ctx, ref); err != nil {
			t.Errorf("Cleanup removed ingest %q: %v", ref, err)
		}
	}
	if st, _ := s.Status(ctx, "kept"); st.Offset != 100 {
		t.Errorf("kept ingest offset %d, want 100", st.Offset)
	}
}

// ingestDirOf finds the directory of ref's ingest (its name is a hash).
func ingestDirOf(t *testing.T, s *content.LocalStore, ref string) string {
	t.Helper()
	for _, name := range dirEntries(t, filepath.Join(s.Root(), "ingest")) {
		b, err := os.ReadFile(filepath.Join(s.Root(), "ingest", name, "meta.json"))
		if err == nil && bytes.Contains(b, []byte(strconv.Quote(ref))) {
			return filepath.Join(s.Root(), "ingest", name)
		}
	}
	t.Fatalf("no ingest dir for %q", ref)
	return ""
}

// TestHelperKilledWriter is not a test: TestResumeAfterKill runs the test
// binary with it selected to get a process that writes part of a blob and
// is then killed with SIGKILL, without any chance to clean up.
func TestHelperKilledWriter(t *testing.T) {
	root := os.Getenv("BERTH_CONTENT_KILL_ROOT")
	if root == "" {
		t.Skip("helper process only")
	}
	ctx := context.Background()
	s, err := content.NewStore(root)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "..", "blob"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(os.Getenv("BERTH_CONTENT_KILL_AT"))
	desc := content.Descriptor{Digest: digest.SHA256.FromBytes(b), Size: int64(len(b))}
	w, err := s.Writer(ctx, "killed", desc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b[:n]); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

func TestResumeAfterKill(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	root := filepath.Join(dir, "content")
	b, desc := contenttest.Blob(t, 1<<20)
	if err := os.WriteFile(filepath.Join(dir, "blob"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	const killAt = 400_001
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperKilledWriter$")
	cmd.Env = append(os.Environ(), "BERTH_CONTENT_KILL_ROOT="+root, "BERTH_CONTENT_KILL_AT="+strconv.Itoa(killAt))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper did not die of SIGKILL: %v\n%s", err, out)
	}

	s := newLocal(t, root)
	w, err := s.Writer(ctx, "killed", desc)
	if err != nil {
		t.Fatalf("writer after the holder was killed: %v", err)
	}
	if off := w.Status().Offset; off != killAt {
		t.Fatalf("resumed at %d, want %d", off, killAt)
	}
	if _, err := w.Write(b[killAt:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(contenttest.ReadAll(t, s, desc), b) {
		t.Fatal("blob differs")
	}
}

func TestOpenWriterWaitsForTheHolder(t *testing.T) {
	ctx := context.Background()
	s := newLocal(t, t.TempDir())
	b, desc := contenttest.Blob(t, 1000)
	held, err := s.Writer(ctx, "ref", desc)
	if err != nil {
		t.Fatal(err)
	}
	held.Write(b[:300])

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := content.OpenWriter(short, s, "ref", desc); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("OpenWriter while held, short deadline: %v, want DeadlineExceeded", err)
	}

	got := make(chan content.Writer, 1)
	go func() {
		w, err := content.OpenWriter(ctx, s, "ref", desc)
		if err != nil {
			t.Error(err)
		}
		got <- w
	}()
	time.Sleep(30 * time.Millisecond)
	held.Close()
	w := <-got
	if w == nil {
		return
	}
	defer w.Close()
	if off := w.Status().Offset; off != 300 {
		t.Fatalf("waiting writer resumed at %d, want 300", off)
	}
}
