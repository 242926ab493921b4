package images

import (
	"archive/tar"
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// tinyLayer is an uncompressed layer holding one file.
func tinyLayer(t *testing.T, name string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: 1}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte("x"))
	tw.Close()
	return b.Bytes()
}

// layerRegistry serves the uncompressed layers raw as blobs of a test
// registry and returns their descriptors, their diff IDs and a client of
// the registry. serve, if set, answers a GET of layer i and calls write to
// send it; by default the blob is sent at once.
func layerRegistry(t *testing.T, ctx context.Context, raw [][]byte, serve func(i int, write func())) ([]ocispec.Descriptor, []digest.Digest, *repoClient) {
	t.Helper()
	var layers []ocispec.Descriptor
	var diffIDs []digest.Digest
	index := map[string]int{}
	for i, b := range raw {
		d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(b), Size: int64(len(b))}
		layers = append(layers, d)
		diffIDs = append(diffIDs, d.Digest)
		index[d.Digest.String()] = i
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		i, ok := index[r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]]
		if !ok {
			http.NotFound(w, r)
			return
		}
		write := func() { w.Write(raw[i]) }
		if serve == nil {
			write()
			return
		}
		serve(i, write)
	}))
	t.Cleanup(srv.Close)
	rc, err := newRepoClient(ctx, endpoint{scheme: "http", host: strings.TrimPrefix(srv.URL, "http://")}, "test/img", authn.Anonymous, "pull")
	if err != nil {
		t.Fatal(err)
	}
	return layers, diffIDs, rc
}

// TestFirstLayerHeadStart: the first layer to unpack downloads alone until
// it is complete, or for firstLayerHeadStart at most; the others follow.
func TestFirstLayerHeadStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking into the native snapshotter chowns: needs root")
	}
	for _, tc := range []struct {
		name       string
		firstDelay time.Duration // how long the registry takes to serve layer 0
		wantAfter  bool          // layer 1 requested only after layer 0 was served
	}{
		{"fast first layer", 50 * time.Millisecond, true},
		{"stalled first layer", firstLayerHeadStart + 500*time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, ctx := newTestService(t)
			raw := [][]byte{tinyLayer(t, "a"), tinyLayer(t, "b"), tinyLayer(t, "c")}
			var mu sync.Mutex
			var firstServed, secondAsked time.Time
			layers, diffIDs, rc := layerRegistry(t, ctx, raw, func(i int, write func()) {
				switch i {
				case 0:
					time.Sleep(tc.firstDelay)
					write()
					mu.Lock()
					firstServed = time.Now()
					mu.Unlock()
					return
				case 1:
					mu.Lock()
					secondAsked = time.Now()
					mu.Unlock()
				}
				write()
			})
			l := s.newLease()
			defer s.release(l)
			if _, err := s.fetchAndUnpack(ctx, l, rc, layers, diffIDs, func(*berthv1.Progress) {}); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if after := !secondAsked.Before(firstServed); after != tc.wantAfter {
				t.Errorf("layer 1 asked for %v after layer 0 was served; want after=%v", secondAsked.Sub(firstServed), tc.wantAfter)
			}
		})
	}
}
