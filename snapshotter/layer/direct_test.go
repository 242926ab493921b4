package layer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/errdefs"
)

// TestApplyLargeFilesDirect: files from directMin bytes on are written past
// the page cache in whole blocks plus a buffered tail; every size around a
// block or buffer boundary must come out byte for byte, on a disk and on
// tmpfs (which may refuse O_DIRECT: the copy then goes on buffered).
func TestApplyLargeFilesDirect(t *testing.T) {
	requireRoot(t)
	rng := rand.New(rand.NewPCG(3, 4))
	sizes := []int{directMin - 1, directMin, directMin + 1, directMin + directAlign - 1,
		copyBufSize + 511, 2 * copyBufSize, 3*copyBufSize + directAlign + 17}
	var ents []ent
	bodies := map[string][]byte{}
	for i, n := range sizes {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		name := fmt.Sprintf("f%d", i)
		bodies[name] = b
		ents = append(ents, file(name, string(b), 0o640))
	}
	layer := tarOf(t, ents...)
	parents := map[string]string{"disk": t.TempDir()}
	if _, err := os.Stat("/dev/shm"); err == nil {
		shm, err := os.MkdirTemp("/dev/shm", "berth-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(shm) })
		parents["tmpfs"] = shm
	}
	for fs, dir := range parents {
		t.Run(fs, func(t *testing.T) {
			if _, err := Apply(context.Background(), dir, bytes.NewReader(layer)); err != nil {
				t.Fatal(err)
			}
			for name, want := range bodies {
				got, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s: %d bytes differ from the %d written", name, len(got), len(want))
				}
				if fi, _ := os.Stat(filepath.Join(dir, name)); fi.Mode().Perm() != 0o640 {
					t.Errorf("%s: mode %v", name, fi.Mode())
				}
			}
		})
	}
}

// TestApplyLargeFileTruncated: a stream that ends inside a large file is a
// corrupt layer, not a short file.
func TestApplyLargeFileTruncated(t *testing.T) {
	requireRoot(t)
	layer := tarOf(t, file("big", string(bytes.Repeat([]byte("0123456789abcdef"), (2*directMin)/16)), 0o644))
	cut := layer[:512+directMin+100]
	_, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(cut))
	if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("truncated large file: got %v, want ErrInvalidArgument", err)
	}
}
