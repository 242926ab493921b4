package content_test

import (
	"context"
	"testing"

	"github.com/berth-dev/berth/content"
	"github.com/berth-dev/berth/content/contenttest"
)

const benchSize = 64 << 20

// BenchmarkWriteCommit measures "content write and verify": a 64 MiB blob
// written through a Writer in 1 MiB writes and committed (hash, fsync,
// rename, directory fsync). MB/s is the figure to compare with the
// network: the store must not be what limits a pull.
func BenchmarkWriteCommit(b *testing.B) {
	ctx := context.Background()
	s, err := content.NewStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data, desc := contenttest.Blob(b, benchSize)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for range b.N {
		w, err := s.Writer(ctx, "bench", desc)
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < len(data); off += 1 << 20 {
			if _, err := w.Write(data[off : off+1<<20]); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Commit(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := s.Delete(ctx, desc.Digest); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkFetch measures the whole Fetch path from an in-memory source:
// flight bookkeeping, 256 KiB copy loop, verify and commit.
func BenchmarkFetch(b *testing.B) {
	ctx := context.Background()
	s, err := content.NewStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data, desc := contenttest.Blob(b, benchSize)
	srv := &fakeServer{blob: data}
	b.SetBytes(benchSize)
	b.ResetTimer()
	for range b.N {
		if err := s.Fetch(ctx, desc, srv.open, nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := s.Delete(ctx, desc.Digest); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkResumeRehash measures reopening a half-written 64 MiB ingest,
// which re-hashes the partial data from disk: the price of a resume.
func BenchmarkResumeRehash(b *testing.B) {
	ctx := context.Background()
	s, err := content.NewStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data, desc := contenttest.Blob(b, benchSize)
	w, err := s.Writer(ctx, "bench", desc)
	if err != nil {
		b.Fatal(err)
	}
	w.Write(data[:benchSize/2])
	w.Close()
	b.SetBytes(benchSize / 2)
	b.ResetTimer()
	for range b.N {
		w, err := s.Writer(ctx, "bench", desc)
		if err != nil {
			b.Fatal(err)
		}
		if w.Status().Offset != benchSize/2 {
			b.Fatalf("offset %d", w.Status().Offset)
		}
		w.Close()
	}
}
