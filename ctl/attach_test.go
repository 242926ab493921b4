package ctl

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

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
