//go:build cgo

package container

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func testProfile() *specs.LinuxSeccomp {
	return &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64},
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno},
		},
	}
}

// enc is a profile as config.json carries it.
func enc(t *testing.T, sc *specs.LinuxSeccomp) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(sc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func forgetSeccomp() {
	seccompMemo.Lock()
	seccompMemo.m = nil
	seccompMemo.Unlock()
}

// A second shim (a fresh process, here a cleared memo) finds the program
// the first one compiled; a damaged cache file is compiled again and
// replaced, never loaded.
func TestSeccompCacheAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	forgetSeccomp()
	first, err := prepareSeccomp(enc(t, testProfile()), dir)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.bpf"))
	if len(files) != 1 {
		t.Fatalf("cache files after a compile: %v, want one", files)
	}
	forgetSeccomp()
	second, err := prepareSeccomp(enc(t, testProfile()), dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Filter, second.Filter) || first.Flags != second.Flags {
		t.Fatal("program read from the cache differs from the compiled one")
	}

	// The same profile laid out differently (config.json indented) is
	// the same entry.
	var indented bytes.Buffer
	if err := json.Indent(&indented, enc(t, testProfile()), "", "  "); err != nil {
		t.Fatal(err)
	}
	forgetSeccomp()
	if _, err := prepareSeccomp(indented.Bytes(), dir); err != nil {
		t.Fatal(err)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*.bpf")); len(files) != 1 {
		t.Fatalf("cache files after the same profile indented: %v, want one", files)
	}

	// Another profile is another entry.
	other := testProfile()
	other.Syscalls[0].Names = []string{"chmod"}
	if _, err := prepareSeccomp(enc(t, other), dir); err != nil {
		t.Fatal(err)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*.bpf")); len(files) != 2 {
		t.Fatalf("cache files for two profiles: %v", files)
	}

	// Flip one instruction byte: the checksum catches it.
	data, _ := os.ReadFile(files[0])
	data[len(data)-3] ^= 0xff
	if err := os.WriteFile(files[0], data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readSeccompCache(files[0]); err == nil {
		t.Fatal("a corrupt cache file was accepted")
	}
	forgetSeccomp()
	if _, err := prepareSeccomp(enc(t, testProfile()), dir); err != nil {
		t.Fatal(err)
	}
	if _, err := prepareSeccomp(enc(t, other), dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, err := readSeccompCache(f); err != nil {
			t.Fatalf("cache file %s not rewritten after corruption: %v", f, err)
		}
	}
}

func TestSeccompBadProfileIsASeccompError(t *testing.T) {
	forgetSeccomp()
	_, err := prepareSeccomp(enc(t, &specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_BOGUS"}), t.TempDir())
	var ie *InitError
	if !errors.As(err, &ie) || ie.Stage != StageSeccomp {
		t.Fatalf("err = %v, want a seccomp-stage InitError", err)
	}
}

// A warm shim preloads the cache: a fresh process then finds the program
// in memory, even with the file gone.
func TestPreloadSeccomp(t *testing.T) {
	dir := t.TempDir()
	forgetSeccomp()
	want, err := prepareSeccomp(enc(t, testProfile()), dir)
	if err != nil {
		t.Fatal(err)
	}
	forgetSeccomp()
	PreloadSeccomp(dir)
	files, _ := filepath.Glob(filepath.Join(dir, "*.bpf"))
	for _, f := range files {
		os.Remove(f)
	}
	got, err := prepareSeccomp(enc(t, testProfile()), dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Filter, want.Filter) {
		t.Fatal("preloaded program differs")
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*.bpf")); len(files) != 0 {
		t.Fatal("prepareSeccomp compiled again instead of using the preloaded program")
	}
}
