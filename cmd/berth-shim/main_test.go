package main

import (
	"math"
	"runtime"
	"runtime/debug"
	"slices"
	"testing"
	"time"
)

// The long-lived shim runs with one P and no heap profiling from its first
// instruction; a GODEBUG the agent was given is kept.
func TestServeEnv(t *testing.T) {
	got := serveEnv([]string{"PATH=/bin", "GOMAXPROCS=8", "GODEBUG=madvdontneed=1"})
	want := []string{"PATH=/bin", "GOMAXPROCS=1", "GODEBUG=madvdontneed=1,memprofilerate=0"}
	if !slices.Equal(got, want) {
		t.Fatalf("serveEnv = %q, want %q", got, want)
	}
	got = serveEnv([]string{"GODEBUG="})
	if !slices.Equal(got, []string{"GOMAXPROCS=1", "GODEBUG=memprofilerate=0"}) {
		t.Fatalf("serveEnv with an empty GODEBUG = %q", got)
	}
}

// The shim runs without a collector, then with a limit above its memory
// once the container is created, and collects as usual from the first
// collection on.
func TestMemPolicy(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	var m memPolicy
	m.start()
	if p := debug.SetGCPercent(-1); p != -1 {
		t.Fatalf("GC percent %d after start, want off", p)
	}
	if l := debug.SetMemoryLimit(-1); l != busyMemoryLimit {
		t.Fatalf("limit %d after start, want %d", l, busyMemoryLimit)
	}
	m.settle()
	if l := debug.SetMemoryLimit(-1); l <= idleHeadroom || l >= busyMemoryLimit {
		t.Fatalf("limit %d once settled, want the memory in use plus %d", l, idleHeadroom)
	}
	m.trim() // no collection yet: nothing to do
	if m.collecting.Load() {
		t.Fatal("collecting before any collection")
	}
	runtime.GC()
	for i := 0; !m.collecting.Load(); i++ {
		if i == 500 {
			t.Fatal("the first collection did not switch the policy")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p := debug.SetGCPercent(settledGCPercent); p != settledGCPercent {
		t.Fatalf("GC percent %d after the first collection, want %d", p, settledGCPercent)
	}
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		t.Fatalf("limit %d after the first collection, want none", l)
	}
}
