// Package content is Berth's content-addressed blob store: image
// manifests, configs and layers, stored once by digest, with resumable
// ingests for downloads that are in flight.
//
// The store is described by small role interfaces so that a consumer asks
// only for what it uses: the unpacker needs a Provider, the puller an
// Ingester, the garbage collector a Manager and an IngestManager. Store
// composes them; LocalStore (local.go) implements it on a local
// filesystem and documents the on-disk layout and the commit protocol.
//
// Invariants every implementation keeps:
//   - a blob is visible (Info, ReaderAt, Walk) only once its size and digest
//     have been verified; a reader never sees a partial or wrong blob;
//   - blobs are immutable; the only way to change one is Delete;
//   - an ingest has at most one Writer at a time, across processes;
//   - an ingest that was not committed or aborted survives a crash of the
//     writer and can be resumed from its last offset.
package content

import (
	"context"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Descriptor names a blob by digest and size (media type and annotations
// ride along for the caller's use). It is the OCI descriptor, the type the
// registry client and the image service already speak.
type Descriptor = ocispec.Descriptor

// ReaderAt reads a committed blob. It is safe for concurrent ReadAt calls.
type ReaderAt interface {
	io.ReaderAt
	io.Closer
	// Size is the blob's length in bytes.
	Size() int64
}

// Provider opens committed blobs for reading.
type Provider interface {
	// ReaderAt opens the blob desc.Digest; the other fields of desc are not
	// consulted. A missing blob is ErrNotFound, a malformed digest
	// ErrInvalidArgument.
	ReaderAt(ctx context.Context, desc Descriptor) (ReaderAt, error)
}

// Info describes a committed blob.
type Info struct {
	// Digest is the blob's content digest, which is also its name.
	Digest digest.Digest
	// Size is the blob's length in bytes.
	Size int64
	// ModTime is when the blob was committed; GC uses it to spare blobs
	// younger than the metadata that would reference them.
	ModTime time.Time
}

// WalkFunc is called by Manager.Walk for each blob. Returning an error
// stops the walk and Walk returns that error.
type WalkFunc func(Info) error

// Manager inspects and removes committed blobs.
type Manager interface {
	// Info describes one blob, or fails with ErrNotFound.
	Info(ctx context.Context, dgst digest.Digest) (Info, error)
	// Walk calls fn for every committed blob, in no particular order.
	Walk(ctx context.Context, fn WalkFunc) error
	// Delete removes a blob. Readers that already opened it keep reading
	// the old data. A missing blob is ErrNotFound.
	Delete(ctx context.Context, dgst digest.Digest) error
}

// Status describes an ingest: a blob being written that is not yet
// committed.
type Status struct {
	// Ref is the caller's name for the ingest, unique per blob being
	// written (Fetch uses the expected digest).
	Ref string
	// Offset is how many bytes have been written; a resumed download asks
	// the server for the bytes from Offset on.
	Offset int64
	// Total is the expected size, or 0 if unknown.
	Total int64
	// Expected is the expected digest, or empty if the digest is computed
	// at commit.
	Expected digest.Digest
	// StartedAt is when the ingest was created (or last restarted from 0
	// because its expected descriptor changed).
	StartedAt time.Time
	// UpdatedAt is when data was last written; GC aborts ingests that
	// have not been updated for a while and are not locked.
	UpdatedAt time.Time
}

// IngestManager inspects and removes ingests.
type IngestManager interface {
	// Status describes the ingest ref, or fails with ErrNotFound.
	Status(ctx context.Context, ref string) (Status, error)
	// ListStatuses describes every ingest.
	ListStatuses(ctx context.Context) ([]Status, error)
	// Abort removes the ingest ref and its partial data. An ingest that
	// has a live Writer is ErrUnavailable; a missing one ErrNotFound.
	Abort(ctx context.Context, ref string) error
}

// Writer writes one ingest. It is not safe for concurrent use; the store
// guarantees it is the only writer of its ref until Close or Commit.
type Writer interface {
	// Write appends to the ingest. Writing past the expected size fails
	// with ErrFailedPrecondition and writes nothing.
	io.Writer
	// Close releases the ingest without committing it. The data written
	// so far is flushed to disk and kept, so a later Writer for the same
	// ref resumes at the same offset. Close after Commit is a no-op.
	io.Closer
	// Status reports the ingest, including the current offset.
	Status() Status
	// Digest is the digest of the bytes written so far.
	Digest() digest.Digest
	// Truncate discards the data from size on (0 <= size <= offset) so
	// writing continues at size. It serves servers that ignore a Range
	// request and send the blob from the start again.
	Truncate(size int64) error
	// Commit verifies the size and digest against the expected descriptor
	// and makes the blob visible under its digest. On a mismatch the ingest
	// is removed and the error (ErrFailedPrecondition) names the expected
	// and actual values. Committing a blob that already exists succeeds and
	// discards the ingest. The Writer is released either way.
	Commit(ctx context.Context) error
}

// Ingester starts or resumes ingests.
type Ingester interface {
	// Writer opens the ingest ref for the blob desc. desc.Digest, if set,
	// is checked at commit, and so is desc.Size; with an empty digest the
	// blob is stored under the digest computed at commit, and a zero size
	// means "unknown".
	//
	// If an ingest for ref exists with the same expectations, the Writer
	// resumes it: its Status().Offset is where the caller continues. If the
	// blob is already committed, Writer fails with ErrAlreadyExists so the
	// caller skips the download. If another Writer holds ref, in this
	// process or another, Writer fails with ErrUnavailable at once.
	Writer(ctx context.Context, ref string, desc Descriptor) (Writer, error)
}

// Store is a complete content store.
type Store interface {
	Provider
	Ingester
	Manager
	IngestManager
}
