package oci

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func TestWriteSpec(t *testing.T) {
	dir := t.TempDir()
	s := generate(t, testInput(t, &berthv1.ContainerSpec{Env: []string{"A=1"}}))
	if err := WriteSpec(dir, s); err != nil {
		t.Fatal(err)
	}
	// Overwriting replaces the file whole.
	s.Process.Env = append(s.Process.Env, "B=2")
	if err := WriteSpec(dir, s); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Process.Env, s.Process.Env) || got.Linux.CgroupsPath != s.Linux.CgroupsPath || len(got.Linux.Seccomp.Syscalls) != len(s.Linux.Seccomp.Syscalls) {
		t.Errorf("read back a different spec")
	}
	st, err := os.Stat(filepath.Join(dir, ConfigName))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("config.json mode %v, want 0600", st.Mode().Perm())
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Errorf("bundle holds %d entries, want only config.json (no temp files left)", len(ents))
	}

	if err := WriteSpec(filepath.Join(dir, "missing"), s); err == nil {
		t.Error("write into a missing bundle dir succeeded")
	}
}
