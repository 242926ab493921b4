package oci

import (
	"path/filepath"
	"testing"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// BenchmarkGenerate measures one `run` worth of spec: user lookup in the
// rootfs, a bind and a tmpfs mount, limits, and the default seccomp
// profile, which dominates.
func BenchmarkGenerate(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts []string
	}{
		{"default-seccomp", nil},
		{"unconfined", []string{"seccomp=unconfined"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			in := testInput(b, &berthv1.ContainerSpec{
				User:        "bob",
				Env:         []string{"A=1", "B=2"},
				Cmd:         []string{"serve"},
				SecurityOpt: bc.opts,
				Mounts: []*berthv1.Mount{
					{Type: "bind", Source: "/srv", Destination: "/srv", ReadOnly: true},
					{Type: "tmpfs", Destination: "/run", Options: []string{"size=64m"}},
				},
				Resources: &berthv1.Resources{MemoryBytes: 256 << 20, NanoCpus: 500_000_000, PidsLimit: 100},
			})
			writeFile(b, filepath.Join(in.Rootfs, "etc/passwd"), testPasswd)
			writeFile(b, filepath.Join(in.Rootfs, "etc/group"), testGroup)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Generate(b.Context(), in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWriteSpec measures the crash-safe write, two fsyncs included.
func BenchmarkWriteSpec(b *testing.B) {
	in := testInput(b, &berthv1.ContainerSpec{})
	s, err := Generate(b.Context(), in)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	for b.Loop() {
		if err := WriteSpec(dir, s); err != nil {
			b.Fatal(err)
		}
	}
}
