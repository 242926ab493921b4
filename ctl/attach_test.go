package ctl

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/api"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// fakeTasks is an agent whose Attach either starts the process itself
// (and says so) or leaves it to the client, then reports exit 7.
type fakeTasks struct {
	berthv1.UnimplementedTasksServiceServer
	agentStarts bool
	starts      atomic.Int32
	started     chan struct{}
}

func (f *fakeTasks) StartTask(context.Context, *berthv1.StartTaskRequest) (*berthv1.StartTaskResponse, error) {
	f.starts.Add(1)
	close(f.started)
	return &berthv1.StartTaskResponse{}, nil
}

func (f *fakeTasks) Attach(stream berthv1.TasksService_AttachServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	var md metadata.MD
	if first.GetOpen().GetStart() && f.agentStarts {
		close(f.started)
		md = metadata.Pairs(api.StartedHeader, "true")
	}
	if err := stream.SendHeader(md); err != nil {
		return err
	}
	<-f.started
	return stream.Send(&berthv1.AttachResponse{Output: &berthv1.AttachResponse_Exit{Exit: &berthv1.WaitTaskResponse{ExitStatus: 7}}})
}

func TestAttachStart(t *testing.T) {
	for _, agentStarts := range []bool{true, false} {
		sock := filepath.Join(t.TempDir(), "fake.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		fake := &fakeTasks{agentStarts: agentStarts, started: make(chan struct{})}
		berthv1.RegisterTasksServiceServer(srv, fake)
		go srv.Serve(l)
		c := &CLI{Out: io.Discard, Err: io.Discard, Address: sock, Namespace: "default"}
		cl, err := c.Client()
		if err != nil {
			t.Fatal(err)
		}
		code, err := c.attach(context.Background(), cl, attachOptions{containerID: "c1", stdout: true, start: true})
		c.Close()
		srv.Stop()
		if err != nil || code != 7 {
			t.Fatalf("agent starts %v: attach = %d, %v; want exit 7", agentStarts, code, err)
		}
		// One start either way: by the agent, or by the client when the
		// agent did not say it did.
		want := int32(1)
		if agentStarts {
			want = 0
		}
		if n := fake.starts.Load(); n != want {
			t.Errorf("agent starts %v: the client called StartTask %d times, want %d", agentStarts, n, want)
		}
	}
}

// runAgent is an agent for `run` in one call: its Attach creates the
// container (create_container), says so with its ID and starts it, and
// reports exit 3; a signal to the client reaches KillTask with that ID.
type runAgent struct {
	berthv1.UnimplementedTasksServiceServer
	berthv1.UnimplementedContainersServiceServer
	creates atomic.Int32 // CreateContainer calls (there should be none)
	open    chan *berthv1.AttachOpen
	killed  chan string
}

func (f *runAgent) CreateContainer(context.Context, *berthv1.CreateContainerRequest) (*berthv1.CreateContainerResponse, error) {
	f.creates.Add(1)
	return nil, status.Error(codes.Unimplemented, "not in one call")
}

func (f *runAgent) KillTask(_ context.Context, req *berthv1.KillTaskRequest) (*berthv1.KillTaskResponse, error) {
	f.killed <- req.GetContainerId()
	return &berthv1.KillTaskResponse{}, nil
}

func (f *runAgent) Attach(stream berthv1.TasksService_AttachServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	f.open <- first.GetOpen()
	if err := stream.SendHeader(metadata.Pairs(api.StartedHeader, "true", api.ContainerIDHeader, "new1")); err != nil {
		return err
	}
	// Proxied to the container (KillTask) once the client, having the
	// headers, listens for signals: until then, send it again.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		syscall.Kill(os.Getpid(), syscall.SIGUSR1)
		select {
		case <-f.killed:
			deadline = time.Time{}
		case <-time.After(50 * time.Millisecond):
		}
	}
	return stream.Send(&berthv1.AttachResponse{Output: &berthv1.AttachResponse_Exit{Exit: &berthv1.WaitTaskResponse{ExitStatus: 3}}})
}

func TestRunAttachedIsOneCall(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "fake.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	killed := make(chan string, 64)
	fake := &runAgent{open: make(chan *berthv1.AttachOpen, 1), killed: make(chan string, 64)}
	// The agent's KillTask hands the ID on to the test, then lets Attach end.
	kt := &killTap{runAgent: fake, tap: killed}
	berthv1.RegisterTasksServiceServer(srv, kt)
	berthv1.RegisterContainersServiceServer(srv, fake)
	go srv.Serve(l)
	defer srv.Stop()
	var stderr bytes.Buffer
	code := run([]string{"--address", sock, "run", "--rm", "busybox", "true"}, io.Discard, &stderr, true)
	if code != 3 {
		t.Fatalf("run exit %d, want the container's 3; stderr: %s", code, stderr.String())
	}
	if n := fake.creates.Load(); n != 0 {
		t.Errorf("CreateContainer called %d times; want run in the one Attach call", n)
	}
	open := <-fake.open
	if open.GetCreateContainer().GetSpec().GetImage() == "" || !open.GetCreateContainer().GetSpec().GetAutoRemove() || !open.GetStart() || open.GetContainerId() != "" {
		t.Errorf("attach open %v: want create_container with the spec (auto_remove), start, no container_id", open)
	}
	select {
	case id := <-killed:
		if id != "new1" {
			t.Errorf("signal proxied to container %q, want the created one, new1", id)
		}
	default:
		t.Error("the signal was not proxied")
	}
}

// killTap passes KillTask on and tells the test which container it named.
type killTap struct {
	*runAgent
	tap chan string
}

func (k *killTap) KillTask(ctx context.Context, req *berthv1.KillTaskRequest) (*berthv1.KillTaskResponse, error) {
	k.tap <- req.GetContainerId()
	return k.runAgent.KillTask(ctx, req)
}
