package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/integration/fixture"
)

// withMoreConfig appends to the config file an earlier withConfig wrote.
func withMoreConfig(toml string) daemonOption {
	return func(d *daemon) {
		f, err := os.OpenFile(d.config, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			d.t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString("\n" + toml); err != nil {
			d.t.Fatal(err)
		}
	}
}

// cliDaemon is a berthd (see startRuntime) whose docker.io mirror is a
// loopback registry holding busybox, pulled already, so its image record
// and blobs are real.
func cliDaemon(t *testing.T) (*daemon, *fixture.Registry) {
	t.Helper()
	reg := fixture.StartRegistry(t)
	reg.Push(t, reg.Ref("library/busybox:latest"), fixture.Busybox(t))
	r := startRuntime(t, withMoreConfig(mirrorConfig(reg.Addr)))
	r.d.mustCtl("pull", "-q", "busybox")
	return r.d, reg
}

// waitCtl retries a berthctl command until it exits 0 and its stdout
// contains want, or fails the test after 10 s.
func (d *daemon) waitCtl(want string, args ...string) string {
	d.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := d.ctl(args...)
		if r.Code == 0 && strings.Contains(r.Stdout, want) {
			return r.Stdout
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("berthctl %s: want %q in stdout, got exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), want, r.Code, r.Stdout, r.Stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCLICommitPushPullRun is issue 5's acceptance flow: a change made in
// a container is committed, pushed to a second repository, removed
// locally, pulled back and seen by a new container; cp works both ways,
// on a running and on a stopped container, and leaves nothing mounted.
func TestCLICommitPushPullRun(t *testing.T) {
	d, reg := cliDaemon(t)
	d.mustCtl("run", "-d", "--name", "src", "busybox", "sh", "-c", "echo committed > /hello.txt; mkdir -p /data/sub; echo deep > /data/sub/f; exec sleep 1000")
	d.waitCtl("committed", "exec", "src", "cat", "/hello.txt")

	// cp into the running container: seen by exec.
	tmp := t.TempDir()
	in := filepath.Join(tmp, "in.txt")
	if err := os.WriteFile(in, []byte("copied in\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.mustCtl("cp", in, "src:/tmp/")
	if got := d.mustCtl("exec", "src", "cat", "/tmp/in.txt"); got != "copied in\n" {
		t.Errorf("cp into a directory: exec cat = %q", got)
	}
	d.mustCtl("cp", in, "src:/tmp/renamed.txt")
	if got := d.mustCtl("exec", "src", "cat", "/tmp/renamed.txt"); got != "copied in\n" {
		t.Errorf("cp to a new name: exec cat = %q", got)
	}
	// An absolute symlink in the container cannot lead the copy out of it.
	d.mustCtl("exec", "src", "ln", "-s", "/", "/escape")
	d.mustCtl("cp", in, "src:/escape/tmp/via-link.txt")
	if _, err := os.Stat("/tmp/via-link.txt"); err == nil {
		os.Remove("/tmp/via-link.txt")
		t.Fatal("cp followed a container symlink onto the host")
	}
	d.mustCtl("exec", "src", "cat", "/tmp/via-link.txt")

	// cp out: a file, a directory, a directory's contents, and a tar on stdout.
	out := filepath.Join(tmp, "out.txt")
	d.mustCtl("cp", "src:/hello.txt", out)
	if b, err := os.ReadFile(out); err != nil || string(b) != "committed\n" {
		t.Errorf("cp out of the container: %q, %v", b, err)
	}
	d.mustCtl("cp", "src:/data", filepath.Join(tmp, "data"))
	if b, err := os.ReadFile(filepath.Join(tmp, "data", "sub", "f")); err != nil || string(b) != "deep\n" {
		t.Errorf("cp a directory out: %q, %v", b, err)
	}
	os.Mkdir(filepath.Join(tmp, "into"), 0o755)
	d.mustCtl("cp", "src:/data", filepath.Join(tmp, "into"))
	if _, err := os.Stat(filepath.Join(tmp, "into", "data", "sub", "f")); err != nil {
		t.Errorf("cp a directory into an existing one: %v", err)
	}
	d.mustCtl("cp", "src:/data/.", filepath.Join(tmp, "contents"))
	if _, err := os.Stat(filepath.Join(tmp, "contents", "sub", "f")); err != nil {
		t.Errorf("cp SRC/. copies the contents: %v", err)
	}
	if tarOut := d.mustCtl("cp", "src:/hello.txt", "-"); !strings.Contains(tarOut, "hello.txt") || !strings.Contains(tarOut, "committed") {
		t.Errorf("cp to - writes no tar of the file: %q", tarOut)
	}
	if res := d.ctl("cp", "src:/nonexistent", out); res.Code == 0 || !strings.Contains(res.Stderr, "/nonexistent") {
		t.Errorf("cp of a missing path: exit %d, stderr %q", res.Code, res.Stderr)
	}

	// commit with config changes, then push, rmi, pull, run.
	ref := reg.Ref("team/committed:v1")
	res := d.mustCtl("commit", "-m", "add hello", "-a", "Tester <t@example.com>", "-c", `CMD ["cat", "/hello.txt"]`, "-c", "ENV GREETING=hi", "-c", "WORKDIR /data", "src", ref)
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}\n$`).MatchString(res) {
		t.Errorf("commit printed %q, want sha256:<config digest>", res)
	}
	if got := d.mustCtl("run", "--rm", ref); got != "committed\n" {
		t.Errorf("run of the committed image (local) printed %q", got)
	}
	if got := d.mustCtl("run", "--rm", ref, "sh", "-c", "echo $GREETING; pwd; cat /tmp/in.txt"); got != "hi\n/data\ncopied in\n" {
		t.Errorf("committed config (ENV, WORKDIR) or cp'd file missing: %q", got)
	}
	d.mustCtl("push", ref)
	d.mustCtl("rmi", ref)
	if res := d.ctl("image", "inspect", ref); res.Code == 0 {
		t.Fatalf("image still present after rmi")
	}
	pull := d.mustCtl("pull", ref)
	if !strings.Contains(pull, "Downloaded newer image") {
		t.Errorf("pull printed %q", pull)
	}
	if got := d.mustCtl("run", "--rm", ref); got != "committed\n" {
		t.Errorf("run of the pulled committed image printed %q", got)
	}

	// A stopped container: its snapshot is mounted for the copy only.
	d.mustCtl("stop", "-t", "1", "src")
	d.mustCtl("cp", in, "src:/stopped.txt")
	d.mustCtl("cp", "src:/stopped.txt", filepath.Join(tmp, "stopped.txt"))
	if b, err := os.ReadFile(filepath.Join(tmp, "stopped.txt")); err != nil || string(b) != "copied in\n" {
		t.Errorf("cp to and from a stopped container: %q, %v", b, err)
	}
	for _, m := range mountsUnder(d.state) {
		if strings.Contains(m, "berth-cp-") {
			t.Errorf("left mounted after cp: %s", m)
		}
	}
	// Committing a stopped container needs no pause.
	d.mustCtl("commit", "src", "stopped:v1")
	if got := d.mustCtl("run", "--rm", "stopped:v1", "cat", "/stopped.txt"); got != "copied in\n" {
		t.Errorf("commit of a stopped container: %q", got)
	}
}
