package container

import (
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
		m := syncMsg{Type: msgBootstrap, Config: &initConfig{Spec: &specs.Spec{Process: &specs.Process{Env: env}}}}
		if err := a.send(m, fds[0], fds[1]); err != nil {
			t.Fatalf("send %d: %v", size, err)
		}
		got, passed, err := b.recvFDs()
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if got.Config.Spec.Process.Env[0] != env[0] {
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
