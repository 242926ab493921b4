package main

import (
	"slices"
	"testing"
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
