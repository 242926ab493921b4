package task

import (
	"fmt"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	shimv1 "github.com/berth-dev/berth/proto/berth/shim/v1"
)

// A container exec'd into again and again (docker exec never deletes its
// process): its shim keeps only the newest exited execs, and none of
// their specs, so its memory does not grow with each one.
func TestForgetOldExecs(t *testing.T) {
	s := &Service{procs: map[string]*proc{"": {status: shimv1.Status_STATUS_RUNNING}}}
	s.procs["busy"] = &proc{execID: "busy", status: shimv1.Status_STATUS_RUNNING, spec: &specs.Process{}}
	t0 := time.Now()
	var last *proc
	for i := 0; i < maxExitedExecs+10; i++ {
		id := fmt.Sprintf("e%02d", i)
		last = &proc{execID: id, status: shimv1.Status_STATUS_STOPPED, exitedAt: t0.Add(time.Duration(i) * time.Second), spec: &specs.Process{}}
		s.procs[id] = last
		s.forgetOldExecs(last)
	}
	if last.spec != nil {
		t.Fatal("an exited exec kept its spec")
	}
	if len(s.procs) != maxExitedExecs+2 {
		t.Fatalf("%d processes kept, want the init, the running exec and %d exited", len(s.procs), maxExitedExecs)
	}
	for i := 0; i < 10; i++ {
		if _, ok := s.procs[fmt.Sprintf("e%02d", i)]; ok {
			t.Fatalf("old exec e%02d kept", i)
		}
	}
	if s.procs[""] == nil || s.procs["busy"] == nil || s.procs["busy"].spec == nil {
		t.Fatal("the init or a running exec was dropped")
	}
}
