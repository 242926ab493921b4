package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/integration/fixture"
	"github.com/berth-dev/berth/snapshotter"
)

// viewImage stops berthd, opens its snapshotter, mounts a View of the
// image's chain ID and calls fn with the mount point; everything is undone
// before it returns, even when fn fails the test.
func (d *daemon) viewImage(chainID string, fn func(dir string)) {
	d.t.Helper()
	d.stop()
	sn, err := snapshotter.Open(filepath.Join(d.root, "snapshots"))
	if err != nil {
		d.t.Fatal(err)
	}
	defer sn.Close()
	ctx := context.Background()
	mounts, err := sn.View(ctx, "test-view", chainID)
	if err != nil {
		d.t.Fatalf("view of %s: %v", chainID, err)
	}
	defer sn.Remove(ctx, "test-view")
	dir := d.t.TempDir()
	if err := snapshotter.MountAll(mounts, dir); err != nil {
		d.t.Fatal(err)
	}
	defer snapshotter.Unmount(dir)
	fn(dir)
}

func TestImageWhiteoutsGiveTheMergedView(t *testing.T) {
	d, reg, _ := imageDaemon(t, "")
	lower := fixture.Layer(t, fixture.LayerTar(t, []fixture.Entry{
		{Name: "a/", Type: tar.TypeDir},
		{Name: "a/x", Body: []byte("x")},
		{Name: "a/y", Body: []byte("y")},
		{Name: "b", Body: []byte("b")},
		{Name: "c/", Type: tar.TypeDir},
		{Name: "c/old", Body: []byte("old")},
		{Name: "c/sub/", Type: tar.TypeDir},
		{Name: "c/sub/deep", Body: []byte("deep")},
	}))
	upper := fixture.Layer(t, fixture.LayerTar(t, []fixture.Entry{
		{Name: "a/", Type: tar.TypeDir},
		{Name: "a/.wh.x"},
		{Name: ".wh.b"},
		{Name: "c/", Type: tar.TypeDir},
		{Name: "c/.wh..wh..opq"},
		{Name: "c/new", Body: []byte("new")},
	}))
	reg.Push(t, reg.Ref("library/wh:latest"), fixture.Image(t, fixture.Config{Cmd: []string{"sh"}}, lower, upper))
	d.mustCtl("pull", "wh")
	chain, _ := d.inspect("wh")["chainId"].(string)
	d.viewImage(chain, func(dir string) {
		want := map[string]bool{"a/x": false, "a/y": true, "b": false, "c/old": false, "c/sub": false, "c/new": true}
		for p, exists := range want {
			_, err := os.Lstat(filepath.Join(dir, p))
			if exists != (err == nil) {
				t.Errorf("%s: exists=%v, want %v (%v)", p, err == nil, exists, err)
			}
		}
		var all []string
		filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error {
			all = append(all, strings.TrimPrefix(p, dir))
			return nil
		})
		sort.Strings(all)
		for _, p := range all {
			if strings.Contains(p, ".wh.") {
				t.Errorf("whiteout file visible in the merged view: %s", p)
			}
		}
	})
}

func TestImageMaliciousLayersAreContained(t *testing.T) {
	d, reg, _ := imageDaemon(t, "")
	canaryDir := t.TempDir()
	canary := filepath.Join(canaryDir, "canary")
	if err := os.WriteFile(canary, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	tag := filepath.Base(canaryDir)
	escape := "/tmp/berth-escape-" + tag
	abs := "/tmp/berth-abs-" + tag
	t.Cleanup(func() { os.Remove(escape); os.Remove(abs) })
	attacks := map[string][]fixture.Entry{
		"dotdot":   {{Name: strings.Repeat("../", 20) + strings.TrimPrefix(escape, "/"), Body: []byte("escaped")}},
		"absolute": {{Name: abs, Body: []byte("escaped")}},
		"symlink": {
			{Name: "link", Type: tar.TypeSymlink, Linkname: canaryDir},
			{Name: "link/pwned", Body: []byte("escaped")},
			{Name: "link/canary", Body: []byte("overwritten")},
		},
		"hardlink": {
			{Name: "hl", Type: tar.TypeLink, Linkname: canary},
			{Name: "hl2", Type: tar.TypeLink, Linkname: strings.Repeat("../", 20) + strings.TrimPrefix(canary, "/")},
		},
	}
	for name, entries := range attacks {
		reg.Push(t, reg.Ref("library/evil-"+name+":latest"),
			fixture.Image(t, fixture.Config{Cmd: []string{"sh"}}, fixture.Layer(t, fixture.LayerTar(t, entries))))
		r := d.ctl("pull", "evil-"+name)
		t.Logf("%s: exit %d %s", name, r.Code, strings.TrimSpace(r.Stderr))
	}
	if b, err := os.ReadFile(canary); err != nil || string(b) != "untouched" {
		t.Errorf("canary changed: %q %v", b, err)
	}
	if es := dirEntries(t, canaryDir); len(es) != 1 {
		t.Errorf("new files beside the canary: %v", es)
	}
	for _, p := range []string{escape, abs} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s was created outside the snapshot", p)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(canary, &st); err != nil || st.Nlink != 1 {
		t.Errorf("the canary gained hard links: %d (%v)", st.Nlink, err)
	}
	// ".." at the root stays at the root: the entry landed inside.
	chain, _ := d.inspect("evil-dotdot")["chainId"].(string)
	d.viewImage(chain, func(dir string) {
		if b, err := os.ReadFile(filepath.Join(dir, escape)); err != nil || string(b) != "escaped" {
			t.Errorf("the ../ entry is not inside the image: %q %v", b, err)
		}
	})
}

func TestImagePlatformsAndCompressions(t *testing.T) {
	d, reg, _ := imageDaemon(t, "")
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Fatalf("this test builds an amd64+arm64 index; host is %s", runtime.GOARCH)
	}
	zstdTar := fixture.LayerTar(t, []fixture.Entry{{Name: "zstd-file", Body: []byte("zstd")}})
	zl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(zstdTar)), nil },
		tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
	if err != nil {
		t.Fatal(err)
	}
	plain := static.NewLayer(fixture.LayerTar(t, []fixture.Entry{{Name: "plain-file", Body: []byte("plain")}}), types.OCIUncompressedLayer)
	host, err := mutate.Append(fixture.Image(t, fixture.Config{Cmd: []string{"sh"}, OCI: true}, genLayer(t, "gzip")),
		mutate.Addendum{Layer: zl, MediaType: types.OCILayerZStd},
		mutate.Addendum{Layer: plain, MediaType: types.OCIUncompressedLayer})
	if err != nil {
		t.Fatal(err)
	}
	other := fixture.Image(t, fixture.Config{Cmd: []string{"sh"}, OCI: true}, genLayer(t, "other"))
	otherArch := "arm64"
	if runtime.GOARCH == "arm64" {
		otherArch = "amd64"
	}
	setArch := func(img v1.Image, arch string) v1.Image {
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.Architecture = arch
		out, err := mutate.ConfigFile(img, cf)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	host, other = setArch(host, runtime.GOARCH), setArch(other, otherArch)
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: host, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: otherArch}}},
	), types.OCIImageIndex)
	ref, err := name.ParseReference(reg.Ref("library/multi:latest"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	d.mustCtl("pull", "--platform", "linux/"+otherArch, "multi")
	if p, _ := d.inspect("multi")["platform"].(map[string]any); p["architecture"] != otherArch {
		t.Errorf("--platform linux/%s pulled %v", otherArch, p)
	}
	if r := d.ctl("pull", "--platform", "linux/s390x", "multi"); r.Code == 0 || !strings.Contains(r.Stderr, "no matching manifest for linux/s390x") {
		t.Errorf("pull of a missing platform: %d %s", r.Code, r.Stderr)
	}
	d.mustCtl("pull", "multi")
	in := d.inspect("multi")
	if p, _ := in["platform"].(map[string]any); p["architecture"] != runtime.GOARCH {
		t.Errorf("default platform pulled %v", p)
	}
	chain, _ := in["chainId"].(string)
	d.viewImage(chain, func(dir string) {
		for _, f := range []string{"gzip/file", "zstd-file", "plain-file"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Errorf("%s missing from the image: %v", f, err)
			}
		}
	})
}
