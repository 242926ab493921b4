package layer_test

import (
	"context"
	"fmt"
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/snapshotter/layer"
)

// Unpacking one layer of a pull into a prepared overlay snapshot: the blob
// comes from the content store, the expected diff ID from the image config,
// and the lower dirs from the parent snapshots.
func ExampleApply() {
	ctx := context.Background()
	blob, err := os.Open("/var/lib/berth/content/blobs/sha256/<layer digest>")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer blob.Close()

	upper := "/var/lib/berth/snapshots/overlay/42/fs"
	res, err := layer.Apply(ctx, upper, blob,
		layer.WithMediaType(layer.MediaTypeOCILayerGzip),
		layer.WithWhiteoutMode(layer.WhiteoutOverlay),
		layer.WithParents("/var/lib/berth/snapshots/overlay/41/fs"),
		layer.WithExpectedDiffID(digest.Digest("sha256:<diff id from the image config>")),
	)
	if err != nil {
		// Remove the snapshot: it holds part of a layer, or a wrong one.
		fmt.Println(err)
		return
	}
	fmt.Println(res.DiffID, res.Size)
}

// Committing a container: the diff of its overlay upper dir, gzip'd by the
// caller, becomes a new layer whose diff ID goes into the new image config.
func ExampleDiff() {
	f, err := os.CreateTemp("", "layer-*.tar")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.Remove(f.Name())
	defer f.Close()
	res, err := layer.Diff(context.Background(), "/var/lib/berth/snapshots/overlay/43/fs", f)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.DiffID)
}
