package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// resolve finds a container by ID, unique ID prefix or name (berthd does
// the matching, and reports ambiguous prefixes with their matches).
func resolve(ctx context.Context, cl *Client, ref string) (*berthv1.Container, error) {
	resp, err := cl.Containers.GetContainer(ctx, &berthv1.GetContainerRequest{Id: ref})
	if err != nil {
		return nil, err
	}
	return resp.Container, nil
}

// forEachName runs fn for every name as Docker's multi-target commands
// do: print the name on success, the error on failure, go on, and fail the
// command at the end if anything failed.
func (c *CLI) forEachName(ctx context.Context, names []string, fn func(ctx context.Context, cl *Client, name string) error) error {
	cl, err := c.Client()
	if err != nil {
		return err
	}
	var failed bool
	for _, name := range names {
		if err := fn(ctx, cl, name); err != nil {
			if errors.Is(err, context.Canceled) {
				return err
			}
			fmt.Fprintln(c.Err, c.explain(err))
			failed = true
			continue
		}
		fmt.Fprintln(c.Out, name)
	}
	if failed {
		return errAlreadyReported
	}
	return nil
}

// eachContainer is forEachName over containers, resolved first by ID,
// unique prefix or name.
func (c *CLI) eachContainer(ctx context.Context, refs []string, fn func(ctx context.Context, cl *Client, ctr *berthv1.Container) error) error {
	return c.forEachName(ctx, refs, func(ctx context.Context, cl *Client, ref string) error {
		ctr, err := resolve(ctx, cl, ref)
		if err != nil {
			return err
		}
		return fn(ctx, cl, ctr)
	})
}

func newStartCommand(c *CLI) *cobra.Command {
	var attach, interactive bool
	cmd := &cobra.Command{
		Use:   "start [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Start one or more stopped containers",
		Args:  args(1, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			if attach || interactive {
				if len(a) > 1 {
					return usageError{errors.New("you cannot start and attach multiple containers at once")}
				}
				cl, err := c.Client()
				if err != nil {
					return err
				}
				ctr, err := resolve(ctx, cl, a[0])
				if err != nil {
					return err
				}
				if err := ensureTask(ctx, cl, ctr.Id); err != nil {
					return err
				}
				code, err := c.attach(ctx, cl, attachOptions{
					containerID: ctr.Id, stdin: interactive, stdout: true, tty: ctr.GetSpec().GetTty(),
					proxySignals: true, detachKeys: defaultDetachKeys, start: true,
				})
				if errors.Is(err, errDetached) {
					return nil
				}
				var se *startError
				if errors.As(err, &se) {
					return se.err
				}
				if err != nil {
					return err
				}
				if code != 0 {
					return exitCode(code)
				}
				return nil
			}
			return c.eachContainer(ctx, a, func(ctx context.Context, cl *Client, ctr *berthv1.Container) error {
				if ctr.GetStatus().GetState() == berthv1.ContainerState_CONTAINER_STATE_RUNNING {
					return nil // Docker: starting a running container is not an error
				}
				if err := ensureTask(ctx, cl, ctr.Id); err != nil {
					return err
				}
				_, err := cl.Tasks.StartTask(ctx, &berthv1.StartTaskRequest{ContainerId: ctr.Id})
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&attach, "attach", "a", false, "attach STDOUT/STDERR and forward signals")
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "attach container's STDIN")
	return cmd
}

// ensureTask gives a stopped or created container a fresh task: the old
// one (if any) is deleted first, as a restart must.
func ensureTask(ctx context.Context, cl *Client, id string) error {
	t, err := cl.Tasks.GetTask(ctx, &berthv1.GetTaskRequest{ContainerId: id})
	if err == nil {
		switch t.Task.Status {
		case berthv1.TaskStatus_TASK_STATUS_CREATED:
			return nil
		case berthv1.TaskStatus_TASK_STATUS_RUNNING, berthv1.TaskStatus_TASK_STATUS_PAUSED:
			return fmt.Errorf("container %s is already running", shortID(id))
		}
		if _, err := cl.Tasks.DeleteTask(ctx, &berthv1.DeleteTaskRequest{ContainerId: id}); err != nil {
			return err
		}
	}
	_, err = cl.Tasks.CreateTask(ctx, &berthv1.CreateTaskRequest{ContainerId: id})
	return err
}

func newStopCommand(c *CLI, restart bool) *cobra.Command {
	var timeout int
	use, short := "stop", "Stop one or more running containers"
	if restart {
		use, short = "restart", "Restart one or more containers"
	}
	cmd := &cobra.Command{
		Use:   use + " [OPTIONS] CONTAINER [CONTAINER...]",
		Short: short,
		Args:  args(1, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			t := int32(-1)
			if cmd.Flags().Changed("time") {
				t = int32(timeout)
			}
			return c.eachContainer(cmd.Context(), a, func(ctx context.Context, cl *Client, ctr *berthv1.Container) error {
				// Stopping waits up to the timeout plus the kill: no short deadline.
				if _, err := cl.Tasks.StopTask(ctx, &berthv1.StopTaskRequest{ContainerId: ctr.Id, TimeoutSeconds: t}); err != nil && !isNotRunning(err) {
					return err
				}
				if !restart {
					return nil
				}
				if err := ensureTask(ctx, cl, ctr.Id); err != nil {
					return err
				}
				_, err := cl.Tasks.StartTask(ctx, &berthv1.StartTaskRequest{ContainerId: ctr.Id})
				return err
			})
		},
	}
	cmd.Flags().IntVarP(&timeout, "time", "t", 10, "seconds to wait before killing the container")
	return cmd
}

func isNotRunning(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "not running") || strings.Contains(msg, "no task") || strings.Contains(msg, "not found")
}

func newKillCommand(c *CLI) *cobra.Command {
	var sig string
	cmd := &cobra.Command{
		Use:   "kill [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Kill one or more running containers",
		Args:  args(1, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return c.eachContainer(cmd.Context(), a, func(ctx context.Context, cl *Client, ctr *berthv1.Container) error {
				_, err := cl.Tasks.KillTask(ctx, &berthv1.KillTaskRequest{ContainerId: ctr.Id, Signal: sig})
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&sig, "signal", "s", "KILL", "signal to send to the container")
	return cmd
}

func newRmCommand(c *CLI) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [OPTIONS] CONTAINER [CONTAINER...]",
		Aliases: []string{"remove"},
		Short:   "Remove one or more containers",
		Args:    args(1, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return c.eachContainer(cmd.Context(), a, func(ctx context.Context, cl *Client, ctr *berthv1.Container) error {
				_, err := cl.Containers.DeleteContainer(ctx, &berthv1.DeleteContainerRequest{Id: ctr.Id, Force: force})
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "force the removal of a running container (uses SIGKILL)")
	return cmd
}

func simpleTaskCommand(c *CLI, use, short string, call func(ctx context.Context, cl *Client, id string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use + " CONTAINER [CONTAINER...]",
		Short: short,
		Args:  args(1, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return c.eachContainer(cmd.Context(), a, func(ctx context.Context, cl *Client, ctr *berthv1.Container) error {
				return call(ctx, cl, ctr.Id)
			})
		},
	}
}

func newPauseCommands(c *CLI) []*cobra.Command {
	return []*cobra.Command{
		simpleTaskCommand(c, "pause", "Pause all processes within one or more containers", func(ctx context.Context, cl *Client, id string) error {
			_, err := cl.Tasks.PauseTask(ctx, &berthv1.PauseTaskRequest{ContainerId: id})
			return err
		}),
		simpleTaskCommand(c, "unpause", "Unpause all processes within one or more containers", func(ctx context.Context, cl *Client, id string) error {
			_, err := cl.Tasks.ResumeTask(ctx, &berthv1.ResumeTaskRequest{ContainerId: id})
			return err
		}),
	}
}

func newWaitCommand(c *CLI) *cobra.Command {
	return &cobra.Command{
		Use:   "wait CONTAINER [CONTAINER...]",
		Short: "Block until one or more containers stop, then print their exit codes",
		Args:  args(1, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			var failed bool
			for _, ref := range a {
				ctr, err := resolve(cmd.Context(), cl, ref)
				if err == nil {
					var w *berthv1.WaitTaskResponse
					if w, err = cl.Tasks.WaitTask(cmd.Context(), &berthv1.WaitTaskRequest{ContainerId: ctr.Id}); err == nil {
						fmt.Fprintln(c.Out, w.ExitStatus)
						continue
					}
				}
				fmt.Fprintln(c.Err, c.explain(err))
				failed = true
			}
			if failed {
				return errAlreadyReported
			}
			return nil
		},
	}
}

func newRenameCommand(c *CLI) *cobra.Command {
	return &cobra.Command{
		Use:   "rename CONTAINER NEW_NAME",
		Short: "Rename a container",
		Args:  args(2, 2),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx, cancel := shortContext(cmd.Context())
			defer cancel()
			ctr, err := resolve(ctx, cl, a[0])
			if err != nil {
				return err
			}
			_, err = cl.Containers.UpdateContainer(ctx, &berthv1.UpdateContainerRequest{
				Container:  &berthv1.Container{Id: ctr.Id, Name: a[1]},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}},
			})
			return err
		},
	}
}

func newLogsCommand(c *CLI) *cobra.Command {
	var (
		follow, timestamps bool
		tail               string
		since, until       string
	)
	cmd := &cobra.Command{
		Use:   "logs [OPTIONS] CONTAINER",
		Short: "Fetch the logs of a container",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			ctr, err := resolve(ctx, cl, a[0])
			if err != nil {
				return err
			}
			req := &berthv1.LogsRequest{ContainerId: ctr.Id, Follow: follow, Stdout: true, Stderr: true}
			if tail != "all" && tail != "" {
				n, err := strconv.ParseInt(tail, 10, 64)
				if err != nil || n < 0 {
					return usageError{fmt.Errorf("invalid --tail %q: a number or \"all\"", tail)}
				}
				req.Tail = &n
			}
			if since != "" {
				t, err := parseTimeArg(since)
				if err != nil {
					return usageError{fmt.Errorf("invalid --since %q: %v", since, err)}
				}
				req.Since = timestamppb.New(t)
			}
			if until != "" {
				t, err := parseTimeArg(until)
				if err != nil {
					return usageError{fmt.Errorf("invalid --until %q: %v", until, err)}
				}
				req.Until = timestamppb.New(t)
			}
			stream, err := cl.Tasks.Logs(ctx, req)
			if err != nil {
				return err
			}
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				for _, e := range resp.Entries {
					w := c.Out
					if e.Stream == berthv1.Stream_STREAM_STDERR {
						w = c.Err
					}
					if timestamps {
						fmt.Fprint(w, e.Time.AsTime().Format(time.RFC3339Nano)+" ")
					}
					w.Write(e.Data)
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow log output")
	cmd.Flags().BoolVarP(&timestamps, "timestamps", "t", false, "show timestamps")
	cmd.Flags().StringVarP(&tail, "tail", "n", "all", "number of lines to show from the end of the logs")
	cmd.Flags().StringVar(&since, "since", "", "show logs since a timestamp (2013-01-02T13:23:37Z) or relative (42m)")
	cmd.Flags().StringVar(&until, "until", "", "show logs before a timestamp or relative (42m)")
	return cmd
}

// parseTimeArg reads an RFC 3339 time, a Unix timestamp, or a duration
// before now ("10m"), as Docker's --since does.
func parseTimeArg(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, time.RFC3339, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		sec := int64(f)
		return time.Unix(sec, int64((f-float64(sec))*1e9)), nil
	}
	return time.Time{}, errors.New("want a duration (10m), an RFC 3339 time or a Unix timestamp")
}

func newExecCommand(c *CLI) *cobra.Command {
	var (
		detach, interactive, tty, privileged bool
		env                                  []string
		user, workdir                        string
	)
	cmd := &cobra.Command{
		Use:   "exec [OPTIONS] CONTAINER COMMAND [ARG...]",
		Short: "Execute a command in a running container",
		Args:  args(2, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			ctr, err := resolve(ctx, cl, a[0])
			if err != nil {
				return err
			}
			var envList []string
			for _, e := range env {
				v, err := envEntry(e)
				if err != nil {
					return usageError{fmt.Errorf("-e %q: %v", e, err)}
				}
				if v != "" {
					envList = append(envList, v)
				}
			}
			proc := &berthv1.ProcessSpec{Args: a[1:], Env: envList, Cwd: workdir, User: user, Terminal: tty, Stdin: interactive, Privileged: privileged}
			ex, err := cl.Tasks.Exec(ctx, &berthv1.ExecRequest{ContainerId: ctr.Id, Process: proc})
			if err != nil {
				return err
			}
			start := func(ctx context.Context) error {
				_, err := cl.Tasks.StartTask(ctx, &berthv1.StartTaskRequest{ContainerId: ctr.Id, ExecId: ex.ExecId})
				return err
			}
			if detach {
				return start(ctx)
			}
			code, err := c.attach(ctx, cl, attachOptions{
				containerID: ctr.Id, execID: ex.ExecId, stdin: interactive, stdout: true, tty: tty,
				proxySignals: true, detachKeys: defaultDetachKeys, start: true,
			})
			var se *startError
			if errors.As(err, &se) {
				return runError{startFailureCode(se.err), se.err}
			}
			if errors.Is(err, errDetached) {
				return nil
			}
			if err != nil {
				return err
			}
			if code != 0 {
				return exitCode(code)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.SetInterspersed(false)
	fs.BoolVarP(&detach, "detach", "d", false, "run the command in the background")
	fs.BoolVarP(&interactive, "interactive", "i", false, "keep STDIN open even if not attached")
	fs.BoolVarP(&tty, "tty", "t", false, "allocate a pseudo-TTY")
	fs.BoolVar(&privileged, "privileged", false, "give extended privileges to the command")
	fs.StringArrayVarP(&env, "env", "e", nil, "set environment variables")
	fs.StringVarP(&user, "user", "u", "", "username or UID (format: <name|uid>[:<group|gid>])")
	fs.StringVarP(&workdir, "workdir", "w", "", "working directory inside the container")
	return cmd
}

func newAttachCommand(c *CLI) *cobra.Command {
	var noStdin, sigProxy bool
	cmd := &cobra.Command{
		Use:   "attach [OPTIONS] CONTAINER",
		Short: "Attach local standard input, output, and error streams to a running container",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctr, err := resolve(cmd.Context(), cl, a[0])
			if err != nil {
				return err
			}
			if ctr.GetStatus().GetState() != berthv1.ContainerState_CONTAINER_STATE_RUNNING && ctr.GetStatus().GetState() != berthv1.ContainerState_CONTAINER_STATE_PAUSED {
				return fmt.Errorf("you cannot attach to a stopped container, start it first")
			}
			code, err := c.attach(cmd.Context(), cl, attachOptions{
				containerID: ctr.Id, stdin: !noStdin && ctr.GetSpec().GetOpenStdin(), stdout: true,
				tty: ctr.GetSpec().GetTty(), proxySignals: sigProxy, detachKeys: defaultDetachKeys,
			})
			if errors.Is(err, errDetached) {
				return nil
			}
			if err != nil {
				return err
			}
			if code != 0 {
				return exitCode(code)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&noStdin, "no-stdin", false, "do not attach STDIN")
	cmd.Flags().BoolVar(&sigProxy, "sig-proxy", true, "proxy all received signals to the process")
	return cmd
}
