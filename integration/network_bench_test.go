package integration

import (
	"context"
	"testing"
	"time"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// BenchmarkRunNetwork measures what a container's network costs: create,
// create task (where the network is attached), start, wait and delete
// (where it is detached) of busybox true through the API, on the default
// bridge network and with --network none; the difference is bridge
// networking's cost per container:
//
//	make build && BERTH_BIN=$PWD/bin go test -run '^$' -bench RunNetwork -benchtime 30x ./integration/
func BenchmarkRunNetwork(b *testing.B) {
	r := startRuntime(b)
	ctx := context.Background()
	for _, mode := range []string{"none", "bridge"} {
		b.Run(mode, func(b *testing.B) {
			var task, del, total time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				c, err := r.cc.CreateContainer(ctx, &berthv1.CreateContainerRequest{Spec: &berthv1.ContainerSpec{
					Image: "busybox", Cmd: []string{"true"}, Network: &berthv1.NetworkConfig{Mode: mode}}})
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if _, err := r.tc.CreateTask(ctx, &berthv1.CreateTaskRequest{ContainerId: c.Container.Id}); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				if _, err := r.tc.StartTask(ctx, &berthv1.StartTaskRequest{ContainerId: c.Container.Id}); err != nil {
					b.Fatal(err)
				}
				if w, err := r.tc.WaitTask(ctx, &berthv1.WaitTaskRequest{ContainerId: c.Container.Id}); err != nil || w.ExitStatus != 0 {
					b.Fatal(w, err)
				}
				t3 := time.Now()
				if _, err := r.cc.DeleteContainer(ctx, &berthv1.DeleteContainerRequest{Id: c.Container.Id}); err != nil {
					b.Fatal(err)
				}
				t4 := time.Now()
				task += t2.Sub(t1)
				del += t4.Sub(t3)
				total += t4.Sub(t0)
			}
			n := time.Duration(b.N)
			b.ReportMetric(float64((task/n).Microseconds())/1000, "ms-createtask")
			b.ReportMetric(float64((del/n).Microseconds())/1000, "ms-delete")
			b.ReportMetric(float64((total/n).Microseconds())/1000, "ms-total")
		})
	}
}
