package oci

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

const testID = "4f2a9c1e7b3d5a8f0c6e2b9d4a7f1c3e5b8d0a2f4c6e8b1d3f5a7c9e0b2d4f6a"

// testInput is an Input whose host facts are fixed, so tests do not
// depend on the machine: every known capability is available, hard
// limits are 1048576, and the agent's oom_score_adj is 0.
func testInput(t testing.TB, cs *berthv1.ContainerSpec) Input {
	t.Helper()
	zero := 0
	return Input{
		ID:               testID,
		Spec:             cs,
		Image:            &berthv1.ImageConfig{Cmd: []string{"/bin/sh"}},
		Rootfs:           t.TempDir(),
		HostHardLimit:    func(string) (uint64, error) { return 1048576, nil },
		AgentOOMScoreAdj: &zero,
		AvailableCaps:    KnownCapabilities(),
	}
}

func generate(t *testing.T, in Input) *specs.Spec {
	t.Helper()
	s, err := Generate(context.Background(), in)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return s
}

// wantInvalid checks that err is ErrInvalidArgument and its message
// names every one of words (the field and the culprit).
func wantInvalid(t *testing.T, err error, words ...string) {
	t.Helper()
	wantKind(t, err, errdefs.ErrInvalidArgument, words...)
}

func wantKind(t *testing.T, err, kind error, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v naming %q", kind, words)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("error %q is not %v", err, kind)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}
}

func findMount(s *specs.Spec, dst string) (specs.Mount, bool) {
	for _, m := range s.Mounts {
		if m.Destination == dst {
			return m, true
		}
	}
	return specs.Mount{}, false
}

func mustMount(t *testing.T, s *specs.Spec, dst string) specs.Mount {
	t.Helper()
	m, ok := findMount(s, dst)
	if !ok {
		t.Fatalf("no mount at %s in %+v", dst, s.Mounts)
	}
	return m
}

func equal[T comparable](t *testing.T, what string, got, want []T) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got %v\nwant %v", what, got, want)
	}
}

func writeFile(t testing.TB, name, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
