package integration

import (
	"context"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// attachment is a client attached to a process.
type attachment struct {
	s      berthv1.TasksService_AttachClient
	out    chan string
	exit   chan *berthv1.WaitTaskResponse
	cancel context.CancelFunc
}

// attach opens an attach stream; output arrives on out, the exit on exit.
func (r *rt) attach(ctx context.Context, id, execID string, stdin bool) *attachment {
	r.t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	s, err := r.tc.Attach(ctx)
	if err != nil {
		cancel()
		r.t.Fatal(err)
	}
	if err := s.Send(&berthv1.AttachRequest{Input: &berthv1.AttachRequest_Open{Open: &berthv1.AttachOpen{
		ContainerId: id, ExecId: execID, Stdin: stdin, Stdout: true, Stderr: true}}}); err != nil {
		cancel()
		r.t.Fatal(err)
	}
	a := &attachment{s: s, out: make(chan string, 1024), exit: make(chan *berthv1.WaitTaskResponse, 1), cancel: cancel}
	go func() {
		defer close(a.out)
		for {
			resp, err := s.Recv()
			if err != nil {
				return
			}
			if d := resp.GetData(); d != nil {
				a.out <- string(d.Data)
			}
			if e := resp.GetExit(); e != nil {
				a.exit <- e
				return
			}
		}
	}()
	r.t.Cleanup(cancel)
	return a
}

// expect reads output until it contains s, and returns all of it.
func (a *attachment) expect(t *testing.T, s string) string {
	t.Helper()
	var got strings.Builder
	timeout := time.After(10 * time.Second)
	for !strings.Contains(got.String(), s) {
		select {
		case d, ok := <-a.out:
			if !ok {
				t.Fatalf("attach ended before %q; got %q", s, got.String())
			}
			got.WriteString(d)
		case <-timeout:
			t.Fatalf("no %q from attach within 10s; got %q", s, got.String())
		}
	}
	return got.String()
}

func (a *attachment) send(t *testing.T, in string) {
	t.Helper()
	if err := a.s.Send(&berthv1.AttachRequest{Input: &berthv1.AttachRequest_Stdin{Stdin: []byte(in)}}); err != nil {
		t.Fatal(err)
	}
}

func (a *attachment) waitExit(t *testing.T) *berthv1.WaitTaskResponse {
	t.Helper()
	for {
		select {
		case e := <-a.exit:
			return e
		case _, ok := <-a.out:
			if !ok {
				select {
				case e := <-a.exit:
					return e
				default:
					t.Fatal("attach ended without an exit")
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no exit on attach within 10s")
		}
	}
}

func TestExecSeesTheContainer(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sleep", "300"}})

	ex, err := r.tc.Exec(ctx, &berthv1.ExecRequest{ContainerId: c.Id, Process: &berthv1.ProcessSpec{
		Args: []string{"sh", "-c", "echo pid=$$; cat /proc/1/cmdline; echo; ls /; exit 7"}}})
	if err != nil {
		t.Fatal(err)
	}
	a := r.attach(ctx, c.Id, ex.ExecId, false)
	if _, err := r.tc.StartTask(ctx, &berthv1.StartTaskRequest{ContainerId: c.Id, ExecId: ex.ExecId}); err != nil {
		t.Fatal(err)
	}
	out := a.expect(t, "var")
	if e := a.waitExit(t); e.ExitStatus != 7 {
		t.Errorf("attach exit %d, want 7", e.ExitStatus)
	}
	w, err := r.tc.WaitTask(ctx, &berthv1.WaitTaskRequest{ContainerId: c.Id, ExecId: ex.ExecId})
	if err != nil || w.ExitStatus != 7 {
		t.Errorf("wait exec: %v %v, want exit 7", w, err)
	}
	if strings.Contains(out, "pid=1\n") || !strings.Contains(out, "pid=") {
		t.Errorf("exec'd shell's pid: %q", out)
	}
	if !strings.Contains(out, "sleep\x00300") {
		t.Errorf("exec does not see the container's PID 1 (sleep 300): %q", out)
	}
	if !strings.Contains(out, "bin") || strings.Contains(out, "work") {
		t.Errorf("exec does not see the image's root: %q", out)
	}

	// With a terminal.
	ex, err = r.tc.Exec(ctx, &berthv1.ExecRequest{ContainerId: c.Id, Process: &berthv1.ProcessSpec{
		Args: []string{"sh", "-c", "tty; exit 3"}, Terminal: true}})
	if err != nil {
		t.Fatal(err)
	}
	a = r.attach(ctx, c.Id, ex.ExecId, false)
	if _, err := r.tc.StartTask(ctx, &berthv1.StartTaskRequest{ContainerId: c.Id, ExecId: ex.ExecId}); err != nil {
		t.Fatal(err)
	}
	a.expect(t, "/dev/pts/")
	if e := a.waitExit(t); e.ExitStatus != 3 {
		t.Errorf("tty exec exit %d, want 3", e.ExitStatus)
	}

	// A user by name, looked up in the container's /etc/passwd and
	// /etc/group (including one the container added after it started).
	for _, tc := range []struct{ user, want string }{
		{"berth", "uid=1000(berth) gid=1000(berth) groups=50(staff),1000(berth)"},
		{"nobody", "uid=65534(nobody) gid=65534(nogroup)"},
		{"late", "uid=2000(late) gid=1000(berth)"},
	} {
		if tc.user == "late" {
			ex, err := r.tc.Exec(ctx, &berthv1.ExecRequest{ContainerId: c.Id, Process: &berthv1.ProcessSpec{
				Args: []string{"sh", "-c", "echo late:x:2000:1000::/:/bin/sh >> /etc/passwd"}}})
			if err != nil {
				t.Fatal(err)
			}
			a := r.attach(ctx, c.Id, ex.ExecId, false)
			if _, err := r.tc.StartTask(ctx, &berthv1.StartTaskRequest{ContainerId: c.Id, ExecId: ex.ExecId}); err != nil {
				t.Fatal(err)
			}
			a.waitExit(t)
		}
		ex, err := r.tc.Exec(ctx, &berthv1.ExecRequest{ContainerId: c.Id, Process: &berthv1.ProcessSpec{Args: []string{"id"}, User: tc.user}})
		if err != nil {
			t.Fatalf("exec as %s: %v", tc.user, err)
		}
		a := r.attach(ctx, c.Id, ex.ExecId, false)
		if _, err := r.tc.StartTask(ctx, &berthv1.StartTaskRequest{ContainerId: c.Id, ExecId: ex.ExecId}); err != nil {
			t.Fatal(err)
		}
		if out := a.expect(t, "uid="); !strings.Contains(out, tc.want) {
			t.Errorf("exec as %s: id says %q, want %q", tc.user, out, tc.want)
		}
		a.waitExit(t)
	}
	if _, err := r.tc.Exec(ctx, &berthv1.ExecRequest{ContainerId: c.Id, Process: &berthv1.ProcessSpec{Args: []string{"id"}, User: "ghost"}}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "ghost") {
		t.Errorf("exec as an unknown user: %v, want InvalidArgument naming it", err)
	}

	// A command that is not there: 127 semantics, a clear error.
	ex, err = r.tc.Exec(ctx, &berthv1.ExecRequest{ContainerId: c.Id, Process: &berthv1.ProcessSpec{Args: []string{"no-such-tool"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.tc.StartTask(ctx, &berthv1.StartTaskRequest{ContainerId: c.Id, ExecId: ex.ExecId})
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "no-such-tool") || !strings.Contains(err.Error(), "exit code 127") {
		t.Errorf("exec of a missing command: %v", err)
	}
	if w, err := r.tc.WaitTask(ctx, &berthv1.WaitTaskRequest{ContainerId: c.Id, ExecId: ex.ExecId}); err != nil || w.ExitStatus != 127 {
		t.Errorf("wait for the failed exec: %v %v, want 127", w, err)
	}
}

func TestTTYResizeReachesTheContainer(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh"}, Tty: true, OpenStdin: true})
	a := r.attach(ctx, c.Id, "", true)
	if err := a.s.Send(&berthv1.AttachRequest{Input: &berthv1.AttachRequest_Resize{Resize: &berthv1.ConsoleSize{Width: 123, Height: 45}}}); err != nil {
		t.Fatal(err)
	}
	a.send(t, "stty size\n")
	a.expect(t, "45 123")
	// And through ResizePty.
	if _, err := r.tc.ResizePty(ctx, &berthv1.ResizePtyRequest{ContainerId: c.Id, Size: &berthv1.ConsoleSize{Width: 80, Height: 24}}); err != nil {
		t.Fatal(err)
	}
	a.send(t, "stty size; exit 5\n")
	a.expect(t, "24 80")
	if e := a.waitExit(t); e.ExitStatus != 5 {
		t.Errorf("exit %d, want 5", e.ExitStatus)
	}
}

func TestAttachDetachLogsLoseNothing(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh", "-c", "read x; for i in 1 2 3 4 5 6; do echo line$i; echo err$i >&2; sleep 0.1; done"}, OpenStdin: true})
	a := r.attach(ctx, c.Id, "", true)
	a.send(t, "go\n")
	a.expect(t, "line1")
	a.cancel() // detach mid-way
	r.wait(ctx, c.Id)

	out, errOut := r.logs(ctx, &berthv1.LogsRequest{ContainerId: c.Id})
	if out != "line1\nline2\nline3\nline4\nline5\nline6\n" || !strings.HasPrefix(errOut, "err1\n") || !strings.HasSuffix(errOut, "err6\n") {
		t.Fatalf("logs after detach: stdout %q stderr %q", out, errOut)
	}
	if tail, _ := r.logs(ctx, &berthv1.LogsRequest{ContainerId: c.Id, Tail: proto.Int64(2), Stdout: true}); tail != "line5\nline6\n" {
		t.Errorf("tail 2: %q", tail)
	}

	// follow streams until the container exits.
	c = r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh", "-c", "for i in 1 2 3 4 5; do echo f$i; sleep 0.2; done"}})
	s, err := r.tc.Logs(ctx, &berthv1.LogsRequest{ContainerId: c.Id, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	for {
		resp, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.Entries {
			got.Write(e.Data)
		}
	}
	if got.String() != "f1\nf2\nf3\nf4\nf5\n" {
		t.Errorf("follow: %q", got.String())
	}
}

func TestLogRotationKeepsNewestAcrossFiles(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, w, out := r.runToExit(ctx, &berthv1.ContainerSpec{
		Cmd: []string{"sh", "-c", "i=1; while [ $i -le 500 ]; do echo line-$i; i=$((i+1)); done"},
		Log: &berthv1.LogConfig{MaxSizeBytes: 4000, MaxFiles: 3},
	})
	if w.ExitStatus != 0 {
		t.Fatalf("exit %d", w.ExitStatus)
	}
	got, err := r.cc.GetContainer(ctx, &berthv1.GetContainerRequest{Id: c.Id})
	if err != nil {
		t.Fatal(err)
	}
	logPath := got.Container.LogPath
	for _, suffix := range []string{"", ".1", ".2"} {
		fi, err := os.Stat(logPath + suffix)
		if err != nil {
			t.Fatalf("rotated file missing: %v", err)
		}
		if fi.Size() > 4000 {
			t.Errorf("%s%s is %d bytes, over max size 4000", logPath, suffix, fi.Size())
		}
	}
	if _, err := os.Stat(logPath + ".3"); err == nil {
		t.Errorf("%s.3 kept with max files 3", logPath)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 50 || len(lines) >= 500 || lines[len(lines)-1] != "line-500" {
		t.Fatalf("logs across rotated files: %d lines ending %q", len(lines), lines[len(lines)-1])
	}
	// A contiguous run of the newest lines, in order.
	first := 501 - len(lines)
	for i, l := range lines {
		if want := "line-" + strconv.Itoa(first+i); l != want {
			t.Fatalf("line %d is %q, want %q", i, l, want)
		}
	}
	if tail, _ := r.logs(ctx, &berthv1.LogsRequest{ContainerId: c.Id, Tail: proto.Int64(3)}); tail != "line-498\nline-499\nline-500\n" {
		t.Errorf("tail 3: %q", tail)
	}
}

func TestAttachWithLogsReplaysThenStreams(t *testing.T) {
	r := startRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := r.run(ctx, &berthv1.ContainerSpec{Cmd: []string{"sh", "-c", "echo one; echo two; read x; echo got-$x"}, OpenStdin: true})
	waitForLog(t, r, ctx, c.Id, "one")
	s, err := r.tc.Attach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&berthv1.AttachRequest{Input: &berthv1.AttachRequest_Open{Open: &berthv1.AttachOpen{
		ContainerId: c.Id, Stdin: true, Stdout: true, Stderr: true, Logs: true}}}); err != nil {
		t.Fatal(err)
	}
	a := &attachment{s: s, out: make(chan string, 64), exit: make(chan *berthv1.WaitTaskResponse, 1), cancel: func() {}}
	go func() {
		defer close(a.out)
		for {
			resp, err := s.Recv()
			if err != nil {
				return
			}
			if d := resp.GetData(); d != nil {
				a.out <- string(d.Data)
			}
			if e := resp.GetExit(); e != nil {
				a.exit <- e
				return
			}
		}
	}()
	got := a.expect(t, "two\n")
	if got != "one\ntwo\n" {
		t.Errorf("replay %q, want the log (one, two) first", got)
	}
	a.send(t, "x\n")
	rest := a.expect(t, "got-x\n")
	if rest != "got-x\n" {
		t.Errorf("live output after the replay: %q, want only got-x", rest)
	}
	if e := a.waitExit(t); e.ExitStatus != 0 {
		t.Errorf("exit %d", e.ExitStatus)
	}
}
