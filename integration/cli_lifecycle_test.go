package integration

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// TestCLIContainerLifecycle: run -d, logs -f, exec, stop, rm, ps -a with
// exit codes, a duplicate name refused, an ambiguous ID prefix reported.
func TestCLIContainerLifecycle(t *testing.T) {
	r := startRuntime(t)
	d := r.d

	d.mustCtl("run", "-d", "--name", "ticker", "busybox", "sh", "-c", "echo start; while true; do if [ -e /tmp/go ]; then echo later; rm /tmp/go; fi; sleep 0.05; done")
	// logs -f follows: a line written after it started arrives.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	follow := exec.CommandContext(ctx, filepath.Join(binDir, "berthctl"), "logs", "--address", d.socket, "-f", "ticker")
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { follow.Process.Kill(); follow.Wait() }()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expectLine := func(want string) {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("logs -f ended before %q", want)
				}
				if l == want {
					return
				}
			case <-ctx.Done():
				t.Fatalf("logs -f never showed %q", want)
			}
		}
	}
	expectLine("start")
	d.mustCtl("exec", "ticker", "touch", "/tmp/go")
	expectLine("later")
	if got := d.mustCtl("exec", "ticker", "sh", "-c", "echo $((6*7))"); got != "42\n" {
		t.Errorf("exec printed %q", got)
	}
	if res := d.ctl("exec", "ticker", "sh", "-c", "exit 4"); res.Code != 4 {
		t.Errorf("exec exit 4: berthctl exited %d", res.Code)
	}

	// A duplicate name is refused as Docker refuses it.
	res := d.ctl("run", "-d", "--name", "ticker", "busybox", "true")
	if res.Code != 125 || !strings.Contains(res.Stderr, "is already in use") {
		t.Errorf("duplicate --name: exit %d, stderr %q; want 125 and \"is already in use\"", res.Code, res.Stderr)
	}

	d.mustCtl("stop", "-t", "1", "ticker")
	if res := d.ctl("run", "--name", "three", "busybox", "sh", "-c", "exit 3"); res.Code != 3 {
		t.Errorf("run exiting 3: berthctl exited %d\n%s", res.Code, res.Stderr)
	}
	ps := d.mustCtl("ps", "-a")
	for name, want := range map[string]string{"ticker": `Exited \(137\)`, "three": `Exited \(3\)`} {
		if !regexp.MustCompile(want + `.*` + name).MatchString(ps) {
			t.Errorf("ps -a: want %s for %s in\n%s", want, name, ps)
		}
	}
	if ps := d.mustCtl("ps"); strings.Contains(ps, "ticker") {
		t.Errorf("ps lists a stopped container:\n%s", ps)
	}

	// Two containers whose IDs share a prefix: the prefix is ambiguous.
	for _, id := range []string{strings.Repeat("ab", 31) + "01", strings.Repeat("ab", 31) + "02"} {
		if _, err := r.cc.CreateContainer(context.Background(), &berthv1.CreateContainerRequest{Id: id, Spec: &berthv1.ContainerSpec{Image: "busybox"}}); err != nil {
			t.Fatal(err)
		}
	}
	res = d.ctl("rm", "abab")
	if res.Code == 0 || !strings.Contains(res.Stderr, "ambiguous") || !strings.Contains(res.Stderr, strings.Repeat("ab", 6)) {
		t.Errorf("ambiguous prefix: exit %d, stderr %q", res.Code, res.Stderr)
	}
	d.mustCtl("rm", "ticker", "three", strings.Repeat("ab", 31)+"01", strings.Repeat("ab", 31)+"02")
	if ps := strings.TrimSpace(d.mustCtl("ps", "-aq")); ps != "" {
		t.Errorf("ps -aq after rm: %q", ps)
	}
}

// daemonFootprint is what bad input must not change: the containers, the
// snapshots and the mounts under berthd's directories.
func daemonFootprint(t *testing.T, d *daemon) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(d.mustCtl("ps", "-aq"))
	for _, driver := range []string{"overlay", "native"} {
		ents, _ := os.ReadDir(filepath.Join(d.root, "snapshots", driver, "snapshots"))
		for _, e := range ents {
			b.WriteString("snapshot " + e.Name() + "\n")
		}
	}
	for _, m := range append(mountsUnder(d.root), containerMountsUnder(d.state)...) {
		b.WriteString("mount " + m + "\n")
	}
	return b.String()
}

// TestCLIBadInputLeavesNothing: each mistake is reported with Docker's exit
// code and leaves no container, snapshot or mount behind.
func TestCLIBadInputLeavesNothing(t *testing.T) {
	d, _ := cliDaemon(t)
	d.mustCtl("run", "-d", "--name", "keep", "busybox", "sleep", "1000")
	before := daemonFootprint(t, d)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
		// kept: containers the failure leaves, created, as Docker does
		// (not with --rm).
		kept int
	}{
		{"unknown image", []string{"run", "nosuchimage:v9"}, 125, []string{"nosuchimage"}, 0},
		{"unknown flag", []string{"run", "--no-such-flag", "busybox", "true"}, 125, []string{"unknown flag", "--help"}, 0},
		{"invalid memory", []string{"run", "--memory", "lots", "busybox", "true"}, 125, []string{"lots"}, 0},
		{"missing bind source", []string{"run", "-v", "/nonexistent-berth-src:/x", "busybox", "true"}, 125, []string{"/nonexistent-berth-src"}, 0},
		{"command not in the image", []string{"run", "busybox", "no-such-command"}, 127, []string{"no-such-command"}, 1},
		{"command not in the image, --rm", []string{"run", "--rm", "busybox", "no-such-command"}, 127, []string{"no-such-command"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := d.ctl(tc.args...)
			if res.Code != tc.code {
				t.Errorf("berthctl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(tc.args, " "), res.Code, tc.code, res.Stdout, res.Stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.Stderr, w) {
					t.Errorf("berthctl %s: stderr %q does not mention %q", strings.Join(tc.args, " "), res.Stderr, w)
				}
			}
			// Docker keeps the container of a failed start, created,
			// unless --rm; then remove it.
			created := strings.Fields(d.mustCtl("ps", "-aq", "--filter", "status=created"))
			exited := strings.Fields(d.mustCtl("ps", "-aq", "--filter", "status=exited"))
			if len(created) != tc.kept || len(exited) != 0 {
				t.Errorf("containers left: created %v, exited %v; want %d created", created, exited, tc.kept)
			}
			for _, id := range append(created, exited...) {
				d.ctl("rm", "-f", id)
			}
			// rm releases the network in the background: give it a moment.
			after := daemonFootprint(t, d)
			for deadline := time.Now().Add(5 * time.Second); after != before && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
				after = daemonFootprint(t, d)
			}
			if after != before {
				t.Errorf("left behind:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// run --rm returns once the container's record is gone, as docker run
// --rm does: its name is free at once (each round reuses it) and ps -a
// lists nothing. Its task, rootfs mount, log dir and network go right
// after, in the background (docs/runtime.md, Exits and events): they must
// all be gone within a few seconds.
func TestCLIRunRmReturnsAfterRemoval(t *testing.T) {
	r := startRuntime(t)
	for i := 0; i < 3; i++ {
		res := r.d.ctl("run", "--rm", "--name", "again", "busybox", "sh", "-c", "echo round; exit 3")
		if res.Code != 3 || res.Stdout != "round\n" {
			t.Fatalf("run --rm round %d: exit %d, stdout %q, stderr %q", i, res.Code, res.Stdout, res.Stderr)
		}
		if ps := strings.TrimSpace(r.d.mustCtl("ps", "-aq")); ps != "" {
			t.Fatalf("round %d: ps -a lists %q right after run --rm returned", i, ps)
		}
		var logs []os.DirEntry
		var mounts []string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			logs, _ = os.ReadDir(filepath.Join(r.d.root, "containers", "default"))
			mounts = containerMountsUnder(r.d.state)
			if len(logs) == 0 && len(mounts) == 0 {
				break
			}
		}
		if len(logs) != 0 || len(mounts) != 0 {
			t.Fatalf("round %d: left 5 s after run --rm returned: log dirs %v, mounts %v", i, logs, mounts)
		}
	}
}
