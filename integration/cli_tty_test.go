package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPty opens a new pseudo-terminal pair: the master for the test (the
// user's side) and the slave for berthctl's stdio.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}

func setSize(t *testing.T, f *os.File, rows, cols uint16) {
	t.Helper()
	if err := unix.IoctlSetWinsize(int(f.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatal(err)
	}
}

// ptyRun is berthctl running on a pseudo-terminal, with what it printed.
type ptyRun struct {
	t      *testing.T
	master *os.File
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    bytes.Buffer
	done   chan struct{}
}

func (d *daemon) ctlPty(t *testing.T, rows, cols uint16, args ...string) *ptyRun {
	t.Helper()
	m, s := openPty(t)
	setSize(t, m, rows, cols)
	cmd := exec.Command(filepath.Join(binDir, "berthctl"), append([]string{"--address", d.socket}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	p := &ptyRun{t: t, master: m, cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, 4096)
		for {
			n, err := m.Read(buf)
			p.mu.Lock()
			p.out.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		m.Close()
		<-p.done
	})
	return p
}

func (p *ptyRun) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// expect waits until the output after offset from contains want and
// returns the new offset.
func (p *ptyRun) expect(from int, want string) int {
	p.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out := p.output()
		if i := strings.Index(out[from:], want); i >= 0 {
			return from + i + len(want)
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("terminal never showed %q; it shows:\n%q", want, out[from:])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *ptyRun) send(s string) {
	p.t.Helper()
	if _, err := p.master.Write([]byte(s)); err != nil {
		p.t.Fatal(err)
	}
}

// wait waits for berthctl to exit and returns its exit code.
func (p *ptyRun) wait() int {
	p.t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- p.cmd.Wait() }()
	select {
	case err := <-errc:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			p.t.Fatal(err)
		}
		return 0
	case <-time.After(15 * time.Second):
		p.t.Fatalf("berthctl did not exit; terminal shows:\n%q", p.output())
		return -1
	}
}

// TestCLIRunInteractiveTTY drives `berthctl run -it busybox sh` from a
// real pseudo-terminal, as a user at a terminal would.
func TestCLIRunInteractiveTTY(t *testing.T) {
	r := startRuntime(t)
	d := r.d

	p := d.ctlPty(t, 24, 80, "run", "-it", "busybox", "sh")
	off := p.expect(0, "# ")
	p.send("echo h''i\r")
	off = p.expect(off, "hi\r\n")
	p.send("stty size\r")
	off = p.expect(off, "24 80")
	// The user resizes the window: berthctl gets SIGWINCH and passes it on.
	setSize(t, p.master, 40, 132)
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.send("stty size\r")
		time.Sleep(100 * time.Millisecond)
		if strings.Contains(p.output()[off:], "40 132") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the container never saw the new size 40x132:\n%q", p.output()[off:])
		}
	}
	p.send("\x04") // Ctrl-D at the prompt: the shell exits 0
	if code := p.wait(); code != 0 {
		t.Errorf("Ctrl-D: berthctl exited %d, want 0\n%q", code, p.output())
	}

	p = d.ctlPty(t, 24, 80, "run", "-it", "busybox", "sh")
	p.expect(0, "# ")
	p.send("exit 3\r")
	if code := p.wait(); code != 3 {
		t.Errorf("exit 3: berthctl exited %d, want 3\n%q", code, p.output())
	}
}
