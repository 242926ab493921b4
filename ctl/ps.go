package ctl

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func newPsCommand(c *CLI) *cobra.Command {
	var (
		all, quiet, noTrunc, latest bool
		last                        int
		filters                     []string
		format                      string
	)
	cmd := &cobra.Command{
		Use:   "ps [OPTIONS]",
		Short: "List containers",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			filter, err := parseContainerFilters(filters)
			if err != nil {
				return err
			}
			if !all && len(filter.States) == 0 && !latest && last <= 0 {
				filter.States = []berthv1.ContainerState{berthv1.ContainerState_CONTAINER_STATE_RUNNING,
					berthv1.ContainerState_CONTAINER_STATE_PAUSED, berthv1.ContainerState_CONTAINER_STATE_RESTARTING}
			}
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx, cancel := shortContext(cmd.Context())
			defer cancel()
			resp, err := cl.Containers.ListContainers(ctx, &berthv1.ListContainersRequest{Filter: filter})
			if err != nil {
				return err
			}
			list := resp.Containers
			if latest {
				last = 1
			}
			if last > 0 && len(list) > last {
				list = list[:last]
			}
			if quiet {
				for _, ctr := range list {
					fmt.Fprintln(c.Out, trunc(ctr.Id, !noTrunc))
				}
				return nil
			}
			items := make([]any, len(list))
			for i, ctr := range list {
				items[i] = ctr
			}
			p := &printer{out: c.Out, format: format}
			if done, err := p.structured(items); done {
				return err
			}
			commands := imageCommands(ctx, cl)
			rows := make([][]string, len(list))
			for i, ctr := range list {
				command := strings.Join(append(append([]string{}, effectiveEntrypoint(ctr, commands)...), effectiveCmd(ctr, commands)...), " ")
				if !noTrunc && len(command) > 20 {
					command = command[:19] + "…"
				}
				rows[i] = []string{trunc(ctr.Id, !noTrunc), familiar(ctr.GetSpec().GetImage()), strconv.Quote(command),
					ago(ctr.CreatedAt.AsTime()), statusString(ctr.GetStatus(), time.Now()), portsString(ctr.GetStatus().GetPorts()), ctr.Name}
			}
			return p.table([]string{"CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"}, rows)
		},
	}
	fs := cmd.Flags()
	fs.BoolVarP(&all, "all", "a", false, "show all containers (default shows just running)")
	fs.BoolVarP(&quiet, "quiet", "q", false, "only display container IDs")
	fs.BoolVar(&noTrunc, "no-trunc", false, "don't truncate output")
	fs.BoolVarP(&latest, "latest", "l", false, "show the latest created container (includes all states)")
	fs.IntVarP(&last, "last", "n", -1, "show n last created containers (includes all states)")
	fs.StringArrayVarP(&filters, "filter", "f", nil, "filter output (id=, name=, label=, status=, ancestor=)")
	fs.StringVar(&format, "format", "", "output format: table, json or a Go template")
	return cmd
}

func trunc(id string, short bool) string {
	if short {
		return shortID(id)
	}
	return id
}

var stateNames = map[string]berthv1.ContainerState{
	"created":    berthv1.ContainerState_CONTAINER_STATE_CREATED,
	"running":    berthv1.ContainerState_CONTAINER_STATE_RUNNING,
	"paused":     berthv1.ContainerState_CONTAINER_STATE_PAUSED,
	"restarting": berthv1.ContainerState_CONTAINER_STATE_RESTARTING,
	"exited":     berthv1.ContainerState_CONTAINER_STATE_EXITED,
	"dead":       berthv1.ContainerState_CONTAINER_STATE_DEAD,
	"removing":   berthv1.ContainerState_CONTAINER_STATE_REMOVING,
}

func parseContainerFilters(list []string) (*berthv1.ContainerFilter, error) {
	f := &berthv1.ContainerFilter{}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return nil, usageError{fmt.Errorf("invalid filter %q: want key=value", kv)}
		}
		switch k {
		case "id":
			f.Ids = append(f.Ids, v)
		case "name":
			f.Names = append(f.Names, v)
		case "label":
			f.Labels = append(f.Labels, v)
		case "ancestor":
			f.Images = append(f.Images, v)
		case "status":
			s, ok := stateNames[v]
			if !ok {
				return nil, usageError{fmt.Errorf("invalid filter status=%s: use created, running, paused, restarting, exited, dead or removing", v)}
			}
			f.States = append(f.States, s)
		default:
			return nil, usageError{fmt.Errorf("invalid filter key %q: use id, name, label, status or ancestor", k)}
		}
	}
	return f, nil
}

// statusString is ps's STATUS column, as Docker writes it.
func statusString(s *berthv1.ContainerStatus, now time.Time) string {
	since := func(t interface{ AsTime() time.Time }) string {
		return humanDuration(now.Sub(t.AsTime()))
	}
	switch s.GetState() {
	case berthv1.ContainerState_CONTAINER_STATE_RUNNING:
		return "Up " + since(s.GetStartedAt())
	case berthv1.ContainerState_CONTAINER_STATE_PAUSED:
		return "Up " + since(s.GetStartedAt()) + " (Paused)"
	case berthv1.ContainerState_CONTAINER_STATE_RESTARTING:
		return fmt.Sprintf("Restarting (%d) %s ago", s.GetExitCode(), since(s.GetFinishedAt()))
	case berthv1.ContainerState_CONTAINER_STATE_EXITED:
		return fmt.Sprintf("Exited (%d) %s ago", s.GetExitCode(), since(s.GetFinishedAt()))
	case berthv1.ContainerState_CONTAINER_STATE_DEAD:
		return "Dead"
	case berthv1.ContainerState_CONTAINER_STATE_REMOVING:
		return "Removal In Progress"
	}
	return "Created"
}

func portsString(ports []*berthv1.PortMapping) string {
	var out []string
	for _, p := range ports {
		ip := p.HostIp
		if ip == "" {
			ip = "0.0.0.0"
		}
		out = append(out, fmt.Sprintf("%s:%d->%d/%s", ip, p.HostPort, p.ContainerPort, p.Protocol))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// imageCommands maps image names to their config, so ps can show the
// command a container really runs (the image's unless overridden).
func imageCommands(ctx context.Context, cl *Client) map[string]*berthv1.ImageConfig {
	out := map[string]*berthv1.ImageConfig{}
	resp, err := cl.Images.ListImages(ctx, &berthv1.ListImagesRequest{})
	if err != nil {
		return out
	}
	for _, img := range resp.Images {
		out[img.Name] = img.Config
	}
	return out
}

func effectiveEntrypoint(ctr *berthv1.Container, images map[string]*berthv1.ImageConfig) []string {
	if ep := ctr.GetSpec().GetEntrypoint(); len(ep) > 0 {
		if len(ep) == 1 && ep[0] == "" {
			return nil
		}
		return ep
	}
	return images[ctr.GetSpec().GetImage()].GetEntrypoint()
}

func effectiveCmd(ctr *berthv1.Container, images map[string]*berthv1.ImageConfig) []string {
	if cmd := ctr.GetSpec().GetCmd(); len(cmd) > 0 {
		return cmd
	}
	if len(ctr.GetSpec().GetEntrypoint()) > 0 {
		return nil // --entrypoint resets the image's cmd, as in Docker
	}
	return images[ctr.GetSpec().GetImage()].GetCmd()
}
