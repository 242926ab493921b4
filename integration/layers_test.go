package integration

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

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
}
