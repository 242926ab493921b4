package metadata

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// BenchmarkContainerCreate measures one fsync'd write transaction, the
// cost every container create and status update pays.
func BenchmarkContainerCreate(b *testing.B) {
	db, err := Open(filepath.Join(b.TempDir(), "meta.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	spec := &berthv1.ContainerSpec{Image: "docker.io/library/busybox:latest", Cmd: []string{"sh"}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := db.Containers().Create(ctx, &berthv1.Container{Id: fmt.Sprintf("%064x", i), Name: fmt.Sprintf("c%d", i), Spec: spec}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkContainerListAndResolve measures the read path of `ps` and of
// every command naming a container, with 200 containers recorded.
func BenchmarkContainerListAndResolve(b *testing.B) {
	db, err := Open(filepath.Join(b.TempDir(), "meta.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	for i := 0; i < 200; i++ {
		if _, err := db.Containers().Create(ctx, &berthv1.Container{Id: fmt.Sprintf("%064x", i), Name: fmt.Sprintf("c%d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		list, err := db.Containers().List(ctx, nil)
		if err != nil || len(list) != 200 {
			b.Fatal(err)
		}
		if _, err := db.Containers().Resolve(ctx, fmt.Sprintf("c%d", i%200)); err != nil {
			b.Fatal(err)
		}
	}
}
