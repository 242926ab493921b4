package integration

import (
	"context"
	"testing"
	"time"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// BenchmarkRunTrue measures create + start + wait + delete of /bin/true
// through the API, end to end (image local), one at a time:
//
//	make build && BERTH_BIN=$PWD/bin go test -run '^$' -bench RunTrue -benchtime 50x ./integration/
func BenchmarkRunTrue(b *testing.B) {
	r := startRuntime(b)
	ctx := context.Background()
	var create, task, start, wait, del time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		c, err := r.cc.CreateContainer(ctx, &berthv1.CreateContainerRequest{Spec: &berthv1.ContainerSpec{Image: "busybox", Cmd: []string{"true"}}})
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
		t3 := time.Now()
		if w, err := r.tc.WaitTask(ctx, &berthv1.WaitTaskRequest{ContainerId: c.Container.Id}); err != nil || w.ExitStatus != 0 {
			b.Fatal(w, err)
		}
		t4 := time.Now()
		if _, err := r.cc.DeleteContainer(ctx, &berthv1.DeleteContainerRequest{Id: c.Container.Id}); err != nil {
			b.Fatal(err)
		}
		t5 := time.Now()
		create += t1.Sub(t0)
		task += t2.Sub(t1)
		start += t3.Sub(t2)
		wait += t4.Sub(t3)
		del += t5.Sub(t4)
	}
	n := time.Duration(b.N)
	b.ReportMetric(float64((create/n).Microseconds())/1000, "ms-create")
	b.ReportMetric(float64((task/n).Microseconds())/1000, "ms-createtask")
	b.ReportMetric(float64((start/n).Microseconds())/1000, "ms-start")
	b.ReportMetric(float64((wait/n).Microseconds())/1000, "ms-wait")
	b.ReportMetric(float64((del/n).Microseconds())/1000, "ms-delete")
}
