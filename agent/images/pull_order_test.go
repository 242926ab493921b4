package images

import (
	"archive/tar"
	"bytes"
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
			var layers []ocispec.Descriptor
			var diffIDs []digest.Digest
			blobs := map[string][]byte{}
			for _, n := range []string{"a", "b", "c"} {
				b := tinyLayer(t, n)
				d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(b), Size: int64(len(b))}
				layers = append(layers, d)
				diffIDs = append(diffIDs, d.Digest)
				blobs[d.Digest.String()] = b
			}
			var mu sync.Mutex
			var firstServed, secondAsked time.Time
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v2/" {
					return
				}
				dg := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
				b, ok := blobs[dg]
				if !ok {
					http.NotFound(w, r)
					return
				}
				switch dg {
				case layers[0].Digest.String():
					time.Sleep(tc.firstDelay)
					w.Write(b)
					mu.Lock()
					firstServed = time.Now()
					mu.Unlock()
					return
				case layers[1].Digest.String():
					mu.Lock()
					secondAsked = time.Now()
					mu.Unlock()
				}
				w.Write(b)
			}))
			defer srv.Close()
			rc, err := newRepoClient(ctx, endpoint{scheme: "http", host: strings.TrimPrefix(srv.URL, "http://")}, "test/img", authn.Anonymous, "pull")
			if err != nil {
				t.Fatal(err)
			}
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
