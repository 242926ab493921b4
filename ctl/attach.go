package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/api"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// defaultDetachKeys is Docker's ctrl-p ctrl-q.
var defaultDetachKeys = []byte{0x10, 0x11}

// errDetached ends an attach on the detach keys.
var errDetached = errors.New("detached")

type attachOptions struct {
	containerID, execID string
	stdin, stdout, tty  bool
	proxySignals        bool
	detachKeys          []byte
	// start starts the process once the stream is attached (run, start
	// -a, exec), so no early output is missed: the agent does it (one
	// round trip less), or, if it does not say it did, StartTask.
	start bool
	// create has the agent create the container first, and its task
	// (run, attached): containerID is then learnt from the agent, and a
	// failure to create the container is reported as a start's too.
	create *berthv1.CreateContainerRequest
}

// startError is a failure to start the process attach was to start: the
// caller reports it with the start's exit code (125, 126, 127).
type startError struct{ err error }

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

// attach relays stdio between this terminal and a process until it exits,
// and returns its exit status. With a TTY the local terminal is put in
// raw mode and its size follows the window.
func (c *CLI) attach(ctx context.Context, cl *Client, o attachOptions) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cl.Tasks.Attach(ctx)
	if err != nil {
		return 0, err
	}
	open := &berthv1.AttachOpen{ContainerId: o.containerID, ExecId: o.execID, Stdin: o.stdin, Stdout: o.stdout, Stderr: o.stdout,
		Start: o.start, CreateContainer: o.create}
	if err := stream.Send(&berthv1.AttachRequest{Input: &berthv1.AttachRequest_Open{Open: open}}); err != nil {
		return 0, err
	}
	// The agent sends headers once it is attached (and, when asked, has
	// started the process): only then is it safe to start the process
	// without losing its first output.
	header, err := stream.Header()
	if err == nil && header == nil {
		// The stream ended before its headers (gRPC then reports no
		// error here): RecvMsg has its status.
		err = stream.RecvMsg(new(berthv1.AttachResponse))
		if err == nil || err == io.EOF {
			what := o.containerID
			if o.create != nil {
				what = "the new container"
			}
			err = fmt.Errorf("attach to %s: the agent ended the stream without a word", what)
		}
	}
	if err != nil {
		if o.start || o.create != nil {
			// The stream's status is what stopped it: the create's or
			// the start's error, or the attach's.
			if serr := stream.RecvMsg(new(berthv1.AttachResponse)); serr != nil && serr != io.EOF {
				err = serr
			}
			return 0, &startError{err}
		}
		return 0, err
	}
	if ids := header.Get(api.ContainerIDHeader); o.create != nil && len(ids) > 0 {
		o.containerID = ids[0]
	}
	startByUs := o.start && len(header.Get(api.StartedHeader)) == 0
	var sendMu sync.Mutex
	send := func(r *berthv1.AttachRequest) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(r)
	}

	stdinFd := int(os.Stdin.Fd())
	if o.tty && term.IsTerminal(stdinFd) {
		if state, err := term.MakeRaw(stdinFd); err == nil {
			defer term.Restore(stdinFd, state)
		}
		resize := func() {
			if w, h, err := term.GetSize(stdinFd); err == nil {
				send(&berthv1.AttachRequest{Input: &berthv1.AttachRequest_Resize{Resize: &berthv1.ConsoleSize{Width: uint32(w), Height: uint32(h)}}})
			}
		}
		resize()
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-winch:
					resize()
				}
			}
		}()
	}
	if o.proxySignals && !o.tty {
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
		defer signal.Stop(sigs)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case s := <-sigs:
					kctx, kcancel := shortContext(context.Background())
					cl.Tasks.KillTask(kctx, &berthv1.KillTaskRequest{ContainerId: o.containerID, ExecId: o.execID, Signal: s.(syscall.Signal).String()})
					kcancel()
				}
			}
		}()
	}
	if startByUs {
		if _, err := cl.Tasks.StartTask(ctx, &berthv1.StartTaskRequest{ContainerId: o.containerID, ExecId: o.execID}); err != nil {
			return 0, &startError{err}
		}
	}
	detached := make(chan struct{})
	if o.stdin {
		// The stdin pump ends with the process (ctx) or at EOF; a read
		// blocked on a terminal cannot be interrupted, which is harmless
		// since berthctl exits right after.
		go func() {
			keys := o.detachKeys
			if !o.tty {
				keys = nil // detach keys apply to TTY sessions, as in Docker
			}
			buf := make([]byte, 32*1024)
			var matched int
			for {
				n, err := os.Stdin.Read(buf)
				if n > 0 {
					data := buf[:n]
					if len(keys) > 0 {
						if i, m := scanDetach(data, keys, matched); i >= 0 {
							send(&berthv1.AttachRequest{Input: &berthv1.AttachRequest_Stdin{Stdin: bytes.Clone(data[:i])}})
							close(detached)
							return
						} else {
							matched = m
						}
					}
					if send(&berthv1.AttachRequest{Input: &berthv1.AttachRequest_Stdin{Stdin: bytes.Clone(data)}}) != nil {
						return
					}
				}
				if err != nil {
					send(&berthv1.AttachRequest{Input: &berthv1.AttachRequest_CloseStdin{CloseStdin: true}})
					return
				}
			}
		}()
	}
	type outcome struct {
		code int
		err  error
	}
	done := make(chan outcome, 1)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				done <- outcome{-1, err}
				return
			}
			switch m := resp.Output.(type) {
			case *berthv1.AttachResponse_Data:
				w := c.Out
				if m.Data.Stream == berthv1.Stream_STREAM_STDERR {
					w = c.Err
				}
				w.Write(m.Data.Data)
			case *berthv1.AttachResponse_Exit:
				done <- outcome{int(m.Exit.ExitStatus), nil}
				return
			}
		}
	}()
	select {
	case <-detached:
		fmt.Fprint(c.Err, "\r\nread escape sequence\r\n")
		return 0, errDetached
	case r := <-done:
		if r.err != nil && status.Code(r.err) != codes.Canceled {
			return 0, r.err
		}
		if r.code >= 0 {
			return r.code, nil
		}
		// The stream ended without an exit message: ask for it.
		w, err := cl.Tasks.WaitTask(context.Background(), &berthv1.WaitTaskRequest{ContainerId: o.containerID, ExecId: o.execID})
		if err != nil {
			return 0, err
		}
		return int(w.ExitStatus), nil
	}
}

// scanDetach looks for the detach sequence in data, continuing a partial
// match of length matched from the previous read. It returns the index in
// data where the sequence began (or -1) and the new partial match length.
func scanDetach(data, keys []byte, matched int) (int, int) {
	for i, b := range data {
		if b == keys[matched] {
			matched++
			if matched == len(keys) {
				start := i + 1 - len(keys)
				if start < 0 {
					start = 0
				}
				return start, 0
			}
		} else {
			matched = 0
			if b == keys[0] {
				matched = 1
			}
		}
	}
	return -1, matched
}
