package images

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/content"
	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata"
	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
	"github.com/berth-dev/berth/snapshotter"
)

func TestParseRefNormalisesLikeDocker(t *testing.T) {
	for in, want := range map[string]Ref{
		"hello-world":                  {Name: "docker.io/library/hello-world:latest", Domain: "docker.io", Path: "library/hello-world", Tag: "latest"},
		"user/app:v1":                  {Name: "docker.io/user/app:v1", Domain: "docker.io", Path: "user/app", Tag: "v1"},
		"127.0.0.1:5000/team/app":      {Name: "127.0.0.1:5000/team/app:latest", Domain: "127.0.0.1:5000", Path: "team/app", Tag: "latest"},
		"localhost/app:1":              {Name: "localhost/app:1", Domain: "localhost", Path: "app", Tag: "1"},
		"busybox@sha256:" + hex64('a'): {Name: "docker.io/library/busybox@sha256:" + hex64('a'), Domain: "docker.io", Path: "library/busybox", Digest: digest.Digest("sha256:" + hex64('a'))},
	} {
		got, err := ParseRef(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		got.named = nil
		if got != want {
			t.Errorf("%s: got %+v, want %+v", in, got, want)
		}
	}
	for _, bad := range []string{"", "UPPER", "a b", "busybox@sha256:short", "x::y"} {
		if _, err := ParseRef(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%q: %v, want invalid argument", bad, err)
		}
	}
}

func hex64(c byte) string { return strings.Repeat(string(c), 64) }

func TestEndpoints(t *testing.T) {
	eps, err := endpoints("docker.io", Host{Mirrors: []string{"http://127.0.0.1:5000"}})
	if err != nil || len(eps) != 2 || eps[0].String() != "http://127.0.0.1:5000" || !eps[0].mirror || eps[1].String() != "https://registry-1.docker.io" {
		t.Errorf("docker.io with a mirror: %v %v", eps, err)
	}
	for domain, want := range map[string]string{
		"127.0.0.1:5000": "http://127.0.0.1:5000", "127.5.0.1": "http://127.5.0.1", "localhost:5000": "http://localhost:5000",
		"[::1]:5000": "http://[::1]:5000", "10.0.0.1:5000": "https://10.0.0.1:5000", "ghcr.io": "https://ghcr.io",
	} {
		eps, err := endpoints(domain, Host{})
		if err != nil || eps[len(eps)-1].String() != want {
			t.Errorf("%s: %v %v, want %s", domain, eps, err, want)
		}
	}
	if eps, _ := endpoints("reg.lan", Host{PlainHTTP: true}); eps[0].String() != "http://reg.lan" {
		t.Errorf("plain_http: %v", eps)
	}
	if _, err := endpoints("docker.io", Host{Mirrors: []string{"127.0.0.1:5000"}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("mirror without scheme: %v", err)
	}
	if NormalizeRegistry("https://index.docker.io/v1/") != "docker.io" || NormalizeRegistry("127.0.0.1:5000") != "127.0.0.1:5000" {
		t.Error("NormalizeRegistry")
	}
}

func TestPickPlatform(t *testing.T) {
	m := func(arch, variant string) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(arch + variant),
			Platform: &ocispec.Platform{OS: "linux", Architecture: arch, Variant: variant}}
	}
	idx := ocispec.Index{Manifests: []ocispec.Descriptor{m("amd64", ""), m("arm", "v6"), m("arm", "v7"), m("arm64", "v8")}}
	for _, c := range []struct{ arch, variant, want string }{
		{"amd64", "", "amd64"}, {"arm", "v7", "armv7"}, {"arm64", "", "arm64v8"}, {"arm", "", "armv6"},
	} {
		got, err := pickPlatform(idx, ocispec.Platform{OS: "linux", Architecture: c.arch, Variant: c.variant})
		if err != nil || got.Digest != digest.FromString(c.want) {
			t.Errorf("%s/%s: %v %v", c.arch, c.variant, got.Platform, err)
		}
	}
	if _, err := pickPlatform(idx, ocispec.Platform{OS: "linux", Architecture: "s390x"}); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "linux/s390x") {
		t.Errorf("missing platform: %v", err)
	}
}

func TestChainIDs(t *testing.T) {
	a, b := digest.FromString("a"), digest.FromString("b")
	ids := chainIDs([]digest.Digest{a, b})
	if ids[0] != a.String() || ids[1] != digest.FromString(a.String()+" "+b.String()).String() {
		t.Errorf("chain IDs %v", ids)
	}
}

// newTestService builds a Service over real stores in a temporary dir.
func newTestService(t *testing.T) (*Service, context.Context) {
	t.Helper()
	return newTestServiceOn(t, false)
}

// newTestServiceOn is newTestService, on the overlay snapshotter if
// overlay is set (root only).
func newTestServiceOn(t *testing.T, overlay bool) (*Service, context.Context) {
	t.Helper()
	dir := t.TempDir()
	cs, err := content.NewStore(filepath.Join(dir, "content"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	var sn snapshotter.Snapshotter
	if overlay {
		if err := snapshotter.Supported(dir); err != nil {
			t.Skipf("overlay: %v", err)
		}
		sn, err = snapshotter.NewOverlay(filepath.Join(dir, "snapshots"))
	} else {
		sn, err = snapshotter.NewNative(filepath.Join(dir, "snapshots"))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sn.Close() })
	db, err := metadata.Open(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := namespaces.WithNamespace(context.Background(), namespaces.Default)
	if _, err := db.Namespaces().Create(ctx, namespaces.Default, nil); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Content: cs, Snapshots: sn, DB: db, IngestExpiry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return s, ctx
}

func putBlob(t *testing.T, s *Service, data string) ocispec.Descriptor {
	t.Helper()
	desc := ocispec.Descriptor{Digest: digest.FromString(data), Size: int64(len(data))}
	w, err := s.opts.Content.Writer(context.Background(), "test-"+desc.Digest.Encoded(), desc)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(data))
	if err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	return desc
}

func TestGarbageCollectKeepsRootsAndLeases(t *testing.T) {
	s, ctx := newTestService(t)
	kept := putBlob(t, s, "image manifest")
	leased := putBlob(t, s, "in-flight")
	garbage := putBlob(t, s, "garbage")
	for _, k := range []string{"sha256:" + hex64('1'), "orphan"} {
		if _, err := s.opts.Snapshots.Prepare(ctx, "tmp-"+k, ""); err != nil {
			t.Fatal(err)
		}
		if err := s.opts.Snapshots.Commit(ctx, k, "tmp-"+k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.opts.Snapshots.Prepare(ctx, "child-of-image", "sha256:"+hex64('1')); err != nil {
		t.Fatal(err)
	}
	if _, err := s.opts.Snapshots.Prepare(ctx, "rooted", "", snapshotter.WithLabels(map[string]string{LabelGCRoot: "x"})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.opts.DB.Images().Create(ctx, &berthv1.Image{Name: "docker.io/library/x:latest",
		Target: &berthv1.Descriptor{Digest: kept.Digest.String(), Size: kept.Size}, ChainId: "sha256:" + hex64('1')}); err != nil {
		t.Fatal(err)
	}
	l := s.newLease()
	s.addBlob(l, leased.Digest.String())
	// An unfinished download: kept while young, removed with AllIngests.
	w, err := s.opts.Content.Writer(ctx, "partial", ocispec.Descriptor{Digest: digest.FromString("partial data"), Size: 12})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("part"))
	w.Close()

	res, err := s.GarbageCollect(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.BlobsRemoved != 1 || res.SnapshotsRemoved != 2 || res.IngestsRemoved != 0 {
		t.Errorf("first collection: %+v; want 1 blob, 2 snapshots (orphan, child-of-image), 0 ingests", res)
	}
	if _, err := s.opts.Content.Info(ctx, garbage.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("garbage blob kept: %v", err)
	}
	for _, d := range []digest.Digest{kept.Digest, leased.Digest} {
		if _, err := s.opts.Content.Info(ctx, d); err != nil {
			t.Errorf("blob %s removed: %v", d, err)
		}
	}
	for _, k := range []string{"sha256:" + hex64('1'), "rooted"} {
		if _, err := s.opts.Snapshots.Stat(ctx, k); err != nil {
			t.Errorf("snapshot %s removed: %v", k, err)
		}
	}
	s.release(l)
	res, err = s.GarbageCollect(ctx, GCOptions{AllIngests: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.BlobsRemoved != 1 || res.IngestsRemoved != 1 {
		t.Errorf("after the lease ended: %+v; want the leased blob and the ingest gone", res)
	}
}

func TestExportedLeaseProtectsAContainerSnapshot(t *testing.T) {
	s, ctx := newTestService(t)
	l := s.NewLease()
	l.AddSnapshot("container-rootfs")
	if _, err := s.opts.Snapshots.Prepare(ctx, "container-rootfs", ""); err != nil {
		t.Fatal(err)
	}
	if res, err := s.GarbageCollect(ctx, GCOptions{}); err != nil || res.SnapshotsRemoved != 0 {
		t.Fatalf("leased snapshot collected: %+v %v", res, err)
	}
	l.Release()
	if res, err := s.GarbageCollect(ctx, GCOptions{}); err != nil || res.SnapshotsRemoved != 1 {
		t.Fatalf("released snapshot kept: %+v %v", res, err)
	}
}

func TestGarbageCollectKeepsContainerSnapshots(t *testing.T) {
	s, ctx := newTestService(t)
	base := "sha256:" + hex64('2')
	if _, err := s.opts.Snapshots.Prepare(ctx, "tmp", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.opts.Snapshots.Commit(ctx, base, "tmp"); err != nil {
		t.Fatal(err)
	}
	id := hex64('c')
	for _, k := range []string{"rootfs-of-c", id} {
		if _, err := s.opts.Snapshots.Prepare(ctx, k, base); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.opts.DB.Containers().Create(ctx, &berthv1.Container{Id: id, Name: "c", SnapshotKey: "rootfs-of-c",
		Spec: &berthv1.ContainerSpec{Image: "docker.io/library/gone:latest"}}); err != nil {
		t.Fatal(err)
	}
	// The image is gone (rmi -f); the container keeps its snapshots and
	// their parent.
	if res, err := s.GarbageCollect(ctx, GCOptions{}); err != nil || res.SnapshotsRemoved != 0 {
		t.Fatalf("collection removed a container's snapshots: %+v %v", res, err)
	}
	if err := s.opts.DB.Containers().Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if res, err := s.GarbageCollect(ctx, GCOptions{}); err != nil || res.SnapshotsRemoved != 3 {
		t.Fatalf("after the container went: %+v %v; want its 2 snapshots and the parent removed", res, err)
	}
}

func TestSniffMediaType(t *testing.T) {
	s, ctx := newTestService(t)
	for doc, want := range map[string]string{
		`{"schemaVersion":2,"manifests":[]}`:                                 ocispec.MediaTypeImageIndex,
		`{"schemaVersion":2,"config":{},"layers":[]}`:                        ocispec.MediaTypeImageManifest,
		`{"mediaType":"` + MediaTypeDockerManifestList + `","manifests":[]}`: MediaTypeDockerManifestList,
		`not json`: "",
	} {
		if got := s.sniffMediaType(ctx, putBlob(t, s, doc)); got != want {
			t.Errorf("%s: %q, want %q", doc, got, want)
		}
	}
}
