package container

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// A message is received whole whatever its size (the buffer is sized by
// a peek), with the descriptors that came with it.
func TestSyncMessagesOfAnySize(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := syncSocket{fd: fds[0]}, syncSocket{fd: fds[1]}
	for _, size := range []int{0, 10, 70 << 10, 150 << 10} {
		env := []string{"X=" + strings.Repeat("y", size)}
		raw, err := json.Marshal(&specs.Spec{Process: &specs.Process{Env: env}})
		if err != nil {
			t.Fatal(err)
		}
		m := syncMsg{Type: msgBootstrap, Config: &initConfig{SpecJSON: raw}}
		if err := a.send(m, fds[0], fds[1]); err != nil {
			t.Fatalf("send %d: %v", size, err)
		}
		got, passed, err := b.recvFDs()
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		spec, err := got.Config.spec()
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if spec.Process.Env[0] != env[0] {
			t.Fatalf("size %d: message changed on the way", size)
		}
		if len(passed) != 2 {
			t.Fatalf("size %d: %d descriptors, want 2", size, len(passed))
		}
		closeFDs(passed)
	}
	a.close()
	if _, _, err := b.recv(); err == nil || !strings.Contains(err.Error(), "EOF") {
		t.Fatalf("recv after the peer closed: %v, want EOF", err)
	}
	b.close()
}

// The init decodes config.json as the shim passed it, without its seccomp
// section (the profile comes compiled), and keeps the rest of linux; an
// exec's message carries its process only.
func TestInitConfigSpec(t *testing.T) {
	raw, err := json.Marshal(&specs.Spec{
		Process:  &specs.Process{Args: []string{"sh"}},
		Hostname: "h",
		Linux: &specs.Linux{
			Namespaces:  []specs.LinuxNamespace{{Type: specs.PIDNamespace}},
			MaskedPaths: []string{"/proc/kcore"},
			Seccomp:     &specs.LinuxSeccomp{DefaultAction: specs.ActErrno},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := (&initConfig{SpecJSON: raw}).spec()
	if err != nil {
		t.Fatal(err)
	}
	if spec.Hostname != "h" || spec.Process.Args[0] != "sh" || spec.Linux == nil ||
		len(spec.Linux.Namespaces) != 1 || spec.Linux.MaskedPaths[0] != "/proc/kcore" {
		t.Fatalf("decoded spec lost fields: %+v", spec)
	}
	if spec.Linux.Seccomp != nil {
		t.Fatal("the init decoded the seccomp section")
	}
	p, err := (&initConfig{ProcessJSON: []byte(`{"args":["ls"],"cwd":"/"}`)}).spec()
	if err != nil || p.Process.Args[0] != "ls" || p.Linux != nil {
		t.Fatalf("exec process: %+v, %v", p, err)
	}
	if _, err := (&initConfig{SpecJSON: []byte(`{"process":`)}).spec(); err == nil {
		t.Fatal("a truncated spec decoded")
	}
}

// An init that fails before reading the shim's latest message (a mount
// error while the shim makes the cgroup) closes its end with that message
// unread, and the kernel then reports ECONNRESET to the shim ahead of the
// error message the init sent first: the shim must still read the error.
func TestErrorOfAPeerThatClosedWithUnreadData(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	shim, init := syncSocket{fd: fds[0]}, syncSocket{fd: fds[1]}
	defer shim.close()
	if err := init.send(syncMsg{Type: msgError, Err: &InitError{Stage: StageRootfs, Message: "bad device"}}, -1); err != nil {
		t.Fatal(err)
	}
	if err := shim.send(syncMsg{Type: msgCgroup}, -1); err != nil { // never read
		t.Fatal(err)
	}
	init.close()
	m, fd, err := shim.recv()
	closeFD(fd)
	if err != nil || m.Type != msgError || m.Err == nil || m.Err.Stage != StageRootfs {
		t.Fatalf("got %+v, %v; want the init's rootfs error", m, err)
	}
	if _, _, err := shim.recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last message: %v, want EOF", err)
	}
}
