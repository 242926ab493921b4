package task

import (
	"fmt"
	"testing"
	"time"

	shimv1 "github.com/berth-dev/berth/proto/berth/shim/v1"
)

// A container exec'd into again and again (docker exec never deletes its
// process): its shim keeps only the newest exited execs, so its memory
// does not grow with each one.
func TestForgetOldExecs(t *testing.T) {
	s := &Service{procs: map[string]*proc{"": {status: shimv1.Status_STATUS_RUNNING}}}
	s.procs["busy"] = &proc{execID: "busy", status: shimv1.Status_STATUS_RUNNING}
	t0 := time.Now()
	for i := 0; i < maxExitedExecs+10; i++ {
		id := fmt.Sprintf("e%02d", i)
		s.procs[id] = &proc{execID: id, status: shimv1.Status_STATUS_STOPPED, exitedAt: t0.Add(time.Duration(i) * time.Second)}
		s.forgetOldExecs()
	}
	if len(s.procs) != maxExitedExecs+2 {
		t.Fatalf("%d processes kept, want the init, the running exec and %d exited", len(s.procs), maxExitedExecs)
	}
	for i := 0; i < 10; i++ {
		if _, ok := s.procs[fmt.Sprintf("e%02d", i)]; ok {
			t.Fatalf("old exec e%02d kept", i)
		}
	}
	if s.procs[""] == nil || s.procs["busy"] == nil {
		t.Fatal("the init or a running exec was dropped")
	}
}
