package integration

// seedBusybox puts a busybox image into berthd's root directly, without a
// pull: the layer is applied into a snapshot, committed under its chain
// ID, and an image record is written in each namespace given. It exists
// until image pull lands; replace its callers with a pull from
// fixture.StartRegistry then. It stops berthd around the write (the root
// is locked while berthd runs) and starts it again if it was running.

import (
	"bytes"
	"context"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/integration/fixture"
	"github.com/berth-dev/berth/metadata"
	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
	"github.com/berth-dev/berth/snapshotter"
	"github.com/berth-dev/berth/snapshotter/layer"
	"os"
	"path/filepath"
)

// busyboxRef is the normalised name the seeded image gets.
const busyboxRef = "docker.io/library/busybox:latest"

var busyboxTar []byte

func seedBusybox(t testing.TB, d *daemon, nss ...string) {
	t.Helper()
	if len(nss) == 0 {
		nss = []string{namespaces.Default}
	}
	running := d.cmd != nil
	if running {
		d.stop()
	}
	if busyboxTar == nil {
		busyboxTar = fixture.LayerTar(t, fixture.BusyboxEntries(t))
	}
	ctx := context.Background()
	if err := os.MkdirAll(d.root, 0o711); err != nil {
		t.Fatal(err)
	}
	sn, err := snapshotter.Open(filepath.Join(d.root, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	diffID := digest.FromBytes(busyboxTar)
	chainID := diffID.String() // one layer: the chain ID is its diff ID
	if _, err := sn.Stat(ctx, chainID); errdefs.IsNotFound(err) {
		key := "seed-busybox"
		if _, err := sn.Prepare(ctx, key, ""); err != nil {
			t.Fatal(err)
		}
		dir, err := snapshotter.WritableDir(ctx, sn, key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := layer.Apply(ctx, dir, bytes.NewReader(busyboxTar)); err != nil {
			t.Fatal(err)
		}
		if err := sn.Commit(ctx, chainID, key); err != nil {
			t.Fatal(err)
		}
	}
	sn.Close()
	db, err := metadata.Open(filepath.Join(d.root, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		if _, err := db.Namespaces().Get(ctx, ns); errdefs.IsNotFound(err) {
			if _, err := db.Namespaces().Create(ctx, ns, nil); err != nil {
				t.Fatal(err)
			}
		}
		img := &berthv1.Image{
			Name:    busyboxRef,
			Target:  &berthv1.Descriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: digest.FromString("seeded busybox").String(), Size: 1},
			DiffIds: []string{diffID.String()},
			ChainId: chainID,
			Config:  &berthv1.ImageConfig{Cmd: []string{"sh"}, Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
		}
		if _, err := db.Images().Create(nctx, img); err != nil && !errdefs.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	db.Close()
	if running {
		d.start()
	}
}
