package ctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// Docker's exit codes for run: the container's own code passes through;
// these are for failures before the container's program runs.
const (
	exitRunFailed      = 125 // berthctl or berthd failed
	exitCannotExecute  = 126 // the command exists but cannot be executed
	exitCommandMissing = 127 // the command was not found
)

// runError carries an exit code with a message printed on stderr.
type runError struct {
	code int
	err  error
}

func (e runError) Error() string { return e.err.Error() }
func (e runError) Unwrap() error { return e.err }

// startFailureCode tells why a container's program could not start.
func startFailureCode(err error) int {
	msg := strings.ToLower(status.Convert(err).Message())
	switch {
	case strings.Contains(msg, "executable file not found"), strings.Contains(msg, "no such file or directory"):
		return exitCommandMissing
	case strings.Contains(msg, "permission denied"), strings.Contains(msg, "is a directory"), strings.Contains(msg, "exec format error"):
		return exitCannotExecute
	}
	return exitRunFailed
}

func newCreateCommand(c *CLI) *cobra.Command {
	var f createFlags
	cmd := &cobra.Command{
		Use:   "create [OPTIONS] IMAGE [COMMAND] [ARG...]",
		Short: "Create a new container",
		Args:  args(1, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctr, err := c.createContainer(cmd.Context(), cl, cmd, &f, a[0], a[1:])
			if err != nil {
				return err
			}
			fmt.Fprintln(c.Out, ctr.Id)
			return nil
		},
	}
	f.register(cmd.Flags())
	return cmd
}

// createRequest makes the request that creates the container, pulling
// its image first when the pull policy says always.
func (c *CLI) createRequest(ctx context.Context, cl *Client, cmd *cobra.Command, f *createFlags, image string, args []string) (*berthv1.CreateContainerRequest, error) {
	spec, labels, err := f.spec(cmd.Flags(), image, args)
	if err != nil {
		return nil, err
	}
	switch f.pull {
	case "missing", "always", "never":
	default:
		return nil, usageError{fmt.Errorf("invalid --pull %q: use always, missing or never", f.pull)}
	}
	if f.pull == "always" {
		if err := c.pullImage(ctx, cl, image, spec.Platform, false); err != nil {
			return nil, err
		}
	}
	return &berthv1.CreateContainerRequest{Name: f.name, Spec: spec, Labels: labels}, nil
}

// pullMissing answers a create's failure err as the pull policy
// "missing" does, as Docker's `create` and `run` do: when err is the
// agent's "no such image", it pulls the image and says the create is to
// be tried again; otherwise it does nothing.
func (c *CLI) pullMissing(ctx context.Context, cl *Client, f *createFlags, image string, req *berthv1.CreateContainerRequest, err error) (retry bool, perr error) {
	if f.pull != "missing" || status.Code(err) != codes.NotFound || !strings.Contains(status.Convert(err).Message(), "image") {
		return false, nil
	}
	fmt.Fprintf(c.Err, "Unable to find image '%s' locally\n", familiar(image))
	if err := c.pullImage(ctx, cl, image, req.Spec.Platform, false); err != nil {
		return false, err
	}
	return true, nil
}

// createContainer creates the container, pulling its image first when the
// pull policy asks for it, as Docker's `create` and `run` do.
func (c *CLI) createContainer(ctx context.Context, cl *Client, cmd *cobra.Command, f *createFlags, image string, args []string) (*berthv1.Container, error) {
	req, err := c.createRequest(ctx, cl, cmd, f, image, args)
	if err != nil {
		return nil, err
	}
	resp, err := cl.Containers.CreateContainer(ctx, req)
	if retry, perr := c.pullMissing(ctx, cl, f, image, req, err); perr != nil {
		return nil, perr
	} else if retry {
		resp, err = cl.Containers.CreateContainer(ctx, req)
	}
	if err != nil {
		return nil, err
	}
	return resp.Container, nil
}

func newRunCommand(c *CLI) *cobra.Command {
	var (
		f      createFlags
		detach bool
	)
	cmd := &cobra.Command{
		Use:   "run [OPTIONS] IMAGE [COMMAND] [ARG...]",
		Short: "Create and run a new container from an image",
		Args:  args(1, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, err := c.Client()
			if err != nil {
				return runError{exitRunFailed, err}
			}
			ctx := cmd.Context()
			if f.tty && !detach && f.interactive && !term.IsTerminal(int(os.Stdin.Fd())) {
				return runError{exitRunFailed, errors.New("the input device is not a TTY")}
			}
			if !detach {
				return c.runAttached(ctx, cl, cmd, &f, a[0], a[1:])
			}
			ctr, err := c.createContainer(ctx, cl, cmd, &f, a[0], a[1:])
			if err != nil {
				return runError{exitRunFailed, err}
			}
			if _, err := cl.Tasks.CreateTask(ctx, &berthv1.CreateTaskRequest{ContainerId: ctr.Id}); err != nil {
				c.cleanupFailedRun(cl, ctr, f.rm)
				return runError{startFailureCode(err), err}
			}
			if _, err := cl.Tasks.StartTask(ctx, &berthv1.StartTaskRequest{ContainerId: ctr.Id}); err != nil {
				c.cleanupFailedRun(cl, ctr, f.rm)
				return runError{startFailureCode(err), err}
			}
			fmt.Fprintln(c.Out, ctr.Id)
			return nil
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().BoolVarP(&detach, "detach", "d", false, "run container in background and print container ID")
	return cmd
}

// runAttached is run without --detach: one Attach call creates the
// container and its task, attaches and starts it (AttachOpen.
// create_container), and the agent cleans up after a failed start.
func (c *CLI) runAttached(ctx context.Context, cl *Client, cmd *cobra.Command, f *createFlags, image string, args []string) error {
	req, err := c.createRequest(ctx, cl, cmd, f, image, args)
	if err != nil {
		return runError{exitRunFailed, err}
	}
	opts := attachOptions{
		create:       req,
		stdin:        f.interactive,
		stdout:       true,
		tty:          f.tty,
		proxySignals: true,
		detachKeys:   defaultDetachKeys,
		start:        true,
	}
	code, err := c.attach(ctx, cl, opts)
	var se *startError
	if errors.As(err, &se) {
		if retry, perr := c.pullMissing(ctx, cl, f, image, req, se.err); perr != nil {
			return runError{exitRunFailed, perr}
		} else if retry {
			code, err = c.attach(ctx, cl, opts)
		}
	}
	if errors.Is(err, errDetached) {
		return nil
	}
	if errors.As(err, &se) {
		return runError{startFailureCode(se.err), se.err}
	}
	if err != nil {
		return runError{exitRunFailed, err}
	}
	if code != 0 {
		return exitCode(code)
	}
	return nil
}

// cleanupFailedRun removes what a run that never started left behind, when
// --rm asked for it; otherwise the container stays, in state Created, as
// with Docker, for the user to inspect.
func (c *CLI) cleanupFailedRun(cl *Client, ctr *berthv1.Container, rm bool) {
	ctx, cancel := shortContext(context.Background())
	defer cancel()
	cl.Tasks.DeleteTask(ctx, &berthv1.DeleteTaskRequest{ContainerId: ctr.Id, Force: true})
	if rm {
		cl.Containers.DeleteContainer(ctx, &berthv1.DeleteContainerRequest{Id: ctr.Id, Force: true})
	}
}

// pullImage pulls ref for run and create, its progress on stderr.
func (c *CLI) pullImage(ctx context.Context, cl *Client, ref string, platform *berthv1.Platform, quiet bool) error {
	return c.pullTo(ctx, c.Err, ref, platform, quiet, false)
}

// familiar is the short form of a reference Docker shows ("busybox:latest").
func familiar(ref string) string {
	r, ok := parseRef(ref)
	if !ok {
		return ref
	}
	r = r.defaultTag()
	return r.withTagAndDigest(r.familiarName())
}
