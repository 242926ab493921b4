package ctl

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// newNetworkCommand is `berthctl network`: create, ls, inspect and rm of
// user-defined bridge networks, with Docker's flags and output.
func newNetworkCommand(c *CLI) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Manage networks",
	}

	var subnet, gateway, driver string
	var internal bool
	var labels []string
	create := &cobra.Command{
		Use:   "create [OPTIONS] NAME",
		Short: "Create a network",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			lm, err := parseLabels(labels)
			if err != nil {
				return err
			}
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx, cancel := shortContext(cmd.Context())
			defer cancel()
			resp, err := cl.Networks.CreateNetwork(ctx, &berthv1.CreateNetworkRequest{
				Name: a[0], Driver: driver, Subnet: subnet, Gateway: gateway, Internal: internal, Labels: lm,
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(c.Out, resp.Network.Id)
			return nil
		},
	}
	create.Flags().StringVar(&subnet, "subnet", "", "IPv4 subnet in CIDR format (default: a free /24 of the subnet pool)")
	create.Flags().StringVar(&gateway, "gateway", "", "IPv4 gateway of the subnet (default: its first address)")
	create.Flags().StringVarP(&driver, "driver", "d", "bridge", "driver to manage the network (only bridge)")
	create.Flags().BoolVar(&internal, "internal", false, "restrict external access to the network")
	create.Flags().StringArrayVarP(&labels, "label", "l", nil, "set metadata on a network (key=value)")

	var format string
	var quiet, noTrunc bool
	ls := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List networks",
		Args:    args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx, cancel := shortContext(cmd.Context())
			defer cancel()
			resp, err := cl.Networks.ListNetworks(ctx, &berthv1.ListNetworksRequest{})
			if err != nil {
				return err
			}
			if quiet {
				for _, n := range resp.Networks {
					fmt.Fprintln(c.Out, trunc(n.Id, !noTrunc))
				}
				return nil
			}
			items := make([]any, len(resp.Networks))
			for i, n := range resp.Networks {
				items[i] = n
			}
			p := &printer{out: c.Out, format: format}
			if done, err := p.structured(items); done {
				return err
			}
			rows := make([][]string, len(resp.Networks))
			for i, n := range resp.Networks {
				scope := "external"
				if n.Internal {
					scope = "internal"
				}
				rows[i] = []string{trunc(n.Id, !noTrunc), n.Name, n.Driver, n.Subnet, n.Bridge, scope, fmt.Sprint(len(n.Containers))}
			}
			return p.table([]string{"NETWORK ID", "NAME", "DRIVER", "SUBNET", "BRIDGE", "ACCESS", "CONTAINERS"}, rows)
		},
	}
	ls.Flags().StringVarP(&format, "format", "f", "", "output format: table, json or a Go template")
	ls.Flags().BoolVarP(&quiet, "quiet", "q", false, "only display network IDs")
	ls.Flags().BoolVar(&noTrunc, "no-trunc", false, "do not truncate the output")

	var inspectFormat string
	inspect := &cobra.Command{
		Use:   "inspect [OPTIONS] NETWORK [NETWORK...]",
		Short: "Display detailed information on one or more networks",
		Args:  args(1, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			var items []any
			var failed error
			for _, name := range a {
				ctx, cancel := shortContext(cmd.Context())
				resp, err := cl.Networks.GetNetwork(ctx, &berthv1.GetNetworkRequest{Name: name})
				cancel()
				if err != nil {
					fmt.Fprintln(c.Err, c.explain(err))
					failed = errAlreadyReported
					continue
				}
				items = append(items, resp.Network)
			}
			p := &printer{out: c.Out, format: inspectFormat}
			if p.format == "" {
				p.format = "json"
			}
			if len(items) > 0 {
				if _, err := p.structured(items); err != nil {
					return err
				}
			} else if inspectFormat == "" {
				fmt.Fprintln(c.Out, "[]")
			}
			return failed
		},
	}
	inspect.Flags().StringVarP(&inspectFormat, "format", "f", "", "format with a Go template (default JSON)")

	rm := &cobra.Command{
		Use:     "rm NETWORK [NETWORK...]",
		Aliases: []string{"remove"},
		Short:   "Remove one or more networks",
		Args:    args(1, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return c.forEachName(cmd.Context(), a, func(ctx context.Context, cl *Client, name string) error {
				ctx, cancel := shortContext(ctx)
				defer cancel()
				_, err := cl.Networks.RemoveNetwork(ctx, &berthv1.RemoveNetworkRequest{Name: name})
				return err
			})
		},
	}
	cmd.AddCommand(create, ls, inspect, rm)
	return cmd
}
