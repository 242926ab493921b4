package ctl

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func newInspectCommand(c *CLI) *cobra.Command {
	var typ, format string
	cmd := &cobra.Command{
		Use:   "inspect [OPTIONS] NAME|ID [NAME|ID...]",
		Short: "Return low-level information on containers and images, as JSON",
		Args:  args(1, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx, cancel := shortContext(cmd.Context())
			defer cancel()
			var items []any
			var failed bool
			for _, ref := range a {
				item, err := inspectOne(ctx, cl, ref, typ)
				if err != nil {
					fmt.Fprintln(c.Err, c.explain(err))
					failed = true
					continue
				}
				items = append(items, item)
			}
			p := &printer{out: c.Out, format: format}
			if format == "" {
				p.format = "json"
			}
			if len(items) > 0 {
				if _, err := p.structured(items); err != nil {
					return err
				}
			} else if format == "" {
				fmt.Fprintln(c.Out, "[]")
			}
			if failed {
				return errAlreadyReported
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&typ, "type", "", "only inspect objects of this type: container or image")
	cmd.Flags().StringVarP(&format, "format", "f", "", "format with a Go template (default JSON)")
	return cmd
}

func inspectOne(ctx context.Context, cl *Client, ref, typ string) (any, error) {
	if typ != "image" {
		ctr, err := resolve(ctx, cl, ref)
		if err == nil {
			return ctr, nil
		}
		if typ == "container" || status.Code(err) != codes.NotFound && status.Code(err) != codes.InvalidArgument {
			return nil, err
		}
	}
	img, err := cl.Images.GetImage(ctx, &berthv1.GetImageRequest{Name: ref})
	if err != nil {
		if status.Code(err) == codes.NotFound {
			return nil, fmt.Errorf("no such object: %s", ref)
		}
		return nil, err
	}
	return img.Image, nil
}

func newTopCommand(c *CLI) *cobra.Command {
	return &cobra.Command{
		Use:   "top CONTAINER",
		Short: "Display the running processes of a container",
		Args:  args(1, 1),
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
			resp, err := cl.Tasks.ListPids(ctx, &berthv1.ListPidsRequest{ContainerId: ctr.Id})
			if err != nil {
				return err
			}
			rows := make([][]string, len(resp.Processes))
			for i, p := range resp.Processes {
				started := ""
				if p.StartedAt != nil {
					started = p.StartedAt.AsTime().Local().Format("15:04")
				}
				rows[i] = []string{strconv.Itoa(int(p.Uid)), strconv.Itoa(int(p.Pid)), strconv.Itoa(int(p.Ppid)), started,
					(time.Duration(p.CpuTimeNs) * time.Nanosecond).Truncate(time.Second).String(), p.Command}
			}
			return (&printer{out: c.Out}).table([]string{"UID", "PID", "PPID", "STIME", "TIME", "CMD"}, rows)
		},
	}
}

func newStatsCommand(c *CLI) *cobra.Command {
	var noStream, all bool
	cmd := &cobra.Command{
		Use:   "stats [OPTIONS] [CONTAINER...]",
		Short: "Display a live stream of container resource usage statistics",
		Args:  args(0, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			refs := a
			if len(refs) == 0 {
				f := &berthv1.ContainerFilter{}
				if !all {
					f.States = []berthv1.ContainerState{berthv1.ContainerState_CONTAINER_STATE_RUNNING, berthv1.ContainerState_CONTAINER_STATE_PAUSED}
				}
				resp, err := cl.Containers.ListContainers(ctx, &berthv1.ListContainersRequest{Filter: f})
				if err != nil {
					return err
				}
				for _, ctr := range resp.Containers {
					refs = append(refs, ctr.Id)
				}
			}
			type sample struct {
				cpu uint64
				at  time.Time
			}
			prev := map[string]sample{}
			for {
				rows := [][]string{}
				for _, ref := range refs {
					ctr, err := resolve(ctx, cl, ref)
					if err != nil {
						return err
					}
					st, err := cl.Tasks.Stats(ctx, &berthv1.StatsRequest{ContainerId: ctr.Id})
					if err != nil {
						rows = append(rows, []string{shortID(ctr.Id), ctr.Name, "--", "-- / --", "--", "-- / --", "--"})
						continue
					}
					now := st.Timestamp.AsTime()
					cpu := "0.00%"
					if p, ok := prev[ctr.Id]; ok && now.After(p.at) {
						cpu = fmt.Sprintf("%.2f%%", float64(st.Cpu.GetUsageTotalNs()-p.cpu)/float64(now.Sub(p.at).Nanoseconds())*100)
					}
					prev[ctr.Id] = sample{st.Cpu.GetUsageTotalNs(), now}
					mem, limit := st.Memory.GetUsageBytes(), st.Memory.GetLimitBytes()
					memPct := "0.00%"
					if limit > 0 && limit < 1<<62 {
						memPct = fmt.Sprintf("%.2f%%", float64(mem)/float64(limit)*100)
					}
					limitStr := humanBytes(int64(limit))
					if limit == 0 || limit >= 1<<62 {
						limitStr = "unlimited"
					}
					rows = append(rows, []string{shortID(ctr.Id), ctr.Name, cpu, humanBytes(int64(mem)) + " / " + limitStr, memPct,
						humanBytes(int64(st.Io.GetReadBytes())) + " / " + humanBytes(int64(st.Io.GetWriteBytes())), strconv.FormatUint(st.Pids.GetCurrent(), 10)})
				}
				if !noStream {
					fmt.Fprint(c.Out, "\033[2J\033[H")
				}
				tw := tabwriter.NewWriter(c.Out, 0, 0, 3, ' ', 0)
				fmt.Fprintln(tw, strings.Join([]string{"CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "BLOCK I/O", "PIDS"}, "\t"))
				for _, r := range rows {
					fmt.Fprintln(tw, strings.Join(r, "\t"))
				}
				tw.Flush()
				if noStream {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Second):
				}
			}
		},
	}
	cmd.Flags().BoolVar(&noStream, "no-stream", false, "disable streaming stats and only pull the first result")
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show all containers (default shows just running)")
	return cmd
}
