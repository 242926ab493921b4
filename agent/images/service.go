// Package images is berthd's image service: it resolves references
// against registries, fetches blobs into the content store, unpacks layers
// into snapshots keyed by chain ID, records images, pushes them, reads and
// writes image archives, and collects garbage.
//
// The gRPC handlers in package agent are thin: they translate requests to
// the Go API here (Pull, Push, Authenticate, Export, Import,
// GarbageCollect, DiskUsage) and stream its progress.
//
// # Ordering and crash safety
//
// A pull writes blobs (content store ingests committed under their
// digest), then snapshots (prepared under a temporary key, committed under
// the chain ID), and the image record last. Everything it writes before
// the record exists is held by an in-memory lease, so a concurrent garbage
// collection keeps it; a berthd that is killed loses its leases, so what a
// killed pull left is garbage for the next collection (at start), except
// partial downloads (ingests), which stay resumable for
// Options.IngestExpiry.
package images

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/berth-dev/berth/content"
	"github.com/berth-dev/berth/metadata"
	"github.com/berth-dev/berth/snapshotter"
)

// Options configures a Service.
type Options struct {
	// Content is the blob store.
	Content *content.LocalStore
	// Snapshots holds unpacked layers.
	Snapshots snapshotter.Snapshotter
	// DB holds image and container records.
	DB *metadata.DB
	// Hosts configures registries by domain ("docker.io", "127.0.0.1:5000").
	Hosts map[string]Host
	// MaxConcurrentDownloads bounds parallel layer downloads per pull
	// (default 3, as Docker's).
	MaxConcurrentDownloads int
	// MaxConcurrentUnpacks bounds the layers one pull decompresses and
	// writes at once (default: one more than the number of CPUs, at most
	// 4: an unpack waits for the disk and the download part of the time).
	MaxConcurrentUnpacks int
	// IngestExpiry is how long an unfinished download is kept for a resume
	// before garbage collection removes it (default 1h).
	IngestExpiry time.Duration
	// TempDir holds short-lived mount points (default os.TempDir()).
	TempDir string
	// Log receives the service's logs.
	Log *slog.Logger
}

// Service is the image service. Its methods are safe for concurrent use.
type Service struct {
	opts Options
	log  *slog.Logger

	leases leases

	// unpacking dedupes concurrent unpacks of one chain ID in this
	// process: the second puller waits for the first instead of unpacking
	// the same layer again.
	unpackMu  sync.Mutex
	unpacking map[string]chan struct{}

	// gcMu serialises collections with lease creation: a lease taken
	// while a collection runs waits for it, so nothing a new lease will
	// protect can be swept between mark and sweep.
	gcMu sync.Mutex
}

// New returns a Service over the given stores.
func New(opts Options) (*Service, error) {
	if opts.Content == nil || opts.Snapshots == nil || opts.DB == nil {
		return nil, fmt.Errorf("images: content store, snapshotter and metadata are required")
	}
	if opts.MaxConcurrentDownloads <= 0 {
		opts.MaxConcurrentDownloads = 3
	}
	if opts.MaxConcurrentUnpacks <= 0 {
		opts.MaxConcurrentUnpacks = min(runtime.NumCPU()+1, 4)
	}
	if opts.IngestExpiry <= 0 {
		opts.IngestExpiry = time.Hour
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	for domain, h := range opts.Hosts {
		if _, err := endpoints(domain, h); err != nil {
			return nil, err
		}
	}
	return &Service{opts: opts, log: opts.Log, leases: leases{set: map[*lease]struct{}{}}, unpacking: map[string]chan struct{}{}}, nil
}

// host returns the configuration of a registry domain.
func (s *Service) host(domain string) Host { return s.opts.Hosts[domain] }

// lease protects the blobs and snapshots an in-flight operation has
// written, or is about to write, from garbage collection. Leases live only
// in memory: they die with berthd, which is the point (a killed pull must
// not hold disk for a day).
type lease struct {
	mu        sync.Mutex
	blobs     map[string]struct{}
	snapshots map[string]struct{}
}

type leases struct {
	mu  sync.Mutex
	set map[*lease]struct{}
}

// newLease starts a lease; release it with s.release.
func (s *Service) newLease() *lease {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	l := &lease{blobs: map[string]struct{}{}, snapshots: map[string]struct{}{}}
	s.leases.mu.Lock()
	s.leases.set[l] = struct{}{}
	s.leases.mu.Unlock()
	return l
}

func (s *Service) release(l *lease) {
	s.leases.mu.Lock()
	delete(s.leases.set, l)
	s.leases.mu.Unlock()
}

// addBlob and addSnapshot must be called before the object is written.
// They take gcMu so that an object leased now cannot be swept by a
// collection that has already marked.
func (s *Service) addBlob(l *lease, d string) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	l.mu.Lock()
	l.blobs[d] = struct{}{}
	l.mu.Unlock()
}

func (s *Service) addSnapshot(l *lease, key string) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	l.mu.Lock()
	l.snapshots[key] = struct{}{}
	l.mu.Unlock()
}

// leased returns what every live lease holds; called with gcMu held.
func (s *Service) leased() (blobs, snapshots map[string]struct{}) {
	blobs, snapshots = map[string]struct{}{}, map[string]struct{}{}
	s.leases.mu.Lock()
	defer s.leases.mu.Unlock()
	for l := range s.leases.set {
		l.mu.Lock()
		for b := range l.blobs {
			blobs[b] = struct{}{}
		}
		for k := range l.snapshots {
			snapshots[k] = struct{}{}
		}
		l.mu.Unlock()
	}
	return blobs, snapshots
}

// withNamespaces runs fn in the context of every namespace: images and
// containers of all namespaces share the content store and snapshots.
func (s *Service) forEachNamespace(ctx context.Context, fn func(ctx context.Context) error) error {
	nss, err := s.opts.DB.Namespaces().List(ctx)
	if err != nil {
		return err
	}
	for _, ns := range nss {
		if err := fn(namespacesWith(ctx, ns.Name)); err != nil {
			return err
		}
	}
	return nil
}

// Lease keeps blobs and snapshots from garbage collection until Release,
// for work that creates them before a record references them (a container
// whose rootfs snapshot is prepared before its record is written). Like
// the leases of pulls, it lives in memory and dies with berthd.
type Lease struct {
	s *Service
	l *lease
}

// NewLease starts a lease.
func (s *Service) NewLease() *Lease { return &Lease{s: s, l: s.newLease()} }

// AddSnapshot protects the snapshot key (and its parents); call it before
// creating the snapshot.
func (l *Lease) AddSnapshot(key string) { l.s.addSnapshot(l.l, key) }

// AddBlob protects the blob with digest d; call it before writing it.
func (l *Lease) AddBlob(d string) { l.s.addBlob(l.l, d) }

// Release ends the lease; what it protected is garbage unless a record
// references it by then.
func (l *Lease) Release() { l.s.release(l.l) }
