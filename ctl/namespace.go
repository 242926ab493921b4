package ctl

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func newNamespaceCommand(c *CLI) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "namespace",
		Aliases: []string{"ns"},
		Short:   "Manage namespaces",
	}
	var format string
	var quiet bool
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List namespaces",
		Args:    args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx, cancel := shortContext(cmd.Context())
			defer cancel()
			resp, err := cl.Namespaces.ListNamespaces(ctx, &berthv1.ListNamespacesRequest{})
			if err != nil {
				return err
			}
			if quiet {
				for _, ns := range resp.Namespaces {
					fmt.Fprintln(c.Out, ns.Name)
				}
				return nil
			}
			items := make([]any, len(resp.Namespaces))
			for i, ns := range resp.Namespaces {
				items[i] = ns
			}
			p := &printer{out: c.Out, format: format}
			if done, err := p.structured(items); done {
				return err
			}
			rows := make([][]string, len(resp.Namespaces))
			for i, ns := range resp.Namespaces {
				rows[i] = []string{ns.Name, ago(ns.CreatedAt.AsTime()), labelsString(ns.Labels)}
			}
			return p.table([]string{"NAME", "CREATED", "LABELS"}, rows)
		},
	}
	ls.Flags().StringVarP(&format, "format", "f", "", "output format: table, json or a Go template")
	ls.Flags().BoolVarP(&quiet, "quiet", "q", false, "only show names")

	var labels []string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a namespace",
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
			resp, err := cl.Namespaces.CreateNamespace(ctx, &berthv1.CreateNamespaceRequest{Name: a[0], Labels: lm})
			if err != nil {
				return err
			}
			fmt.Fprintln(c.Out, resp.Namespace.Name)
			return nil
		},
	}
	create.Flags().StringArrayVarP(&labels, "label", "l", nil, "set a label (key=value)")

	rm := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove empty namespaces",
		Args:    args(1, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return c.forEachName(cmd.Context(), a, func(ctx context.Context, cl *Client, name string) error {
				ctx, cancel := shortContext(ctx)
				defer cancel()
				_, err := cl.Namespaces.DeleteNamespace(ctx, &berthv1.DeleteNamespaceRequest{Name: name})
				return err
			})
		},
	}
	cmd.AddCommand(ls, create, rm)
	return cmd
}

// errAlreadyReported fails a command whose errors were printed as they came.
var errAlreadyReported = exitCode(ExitError)

func parseLabels(list []string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(list))
	for _, l := range list {
		k, v, _ := strings.Cut(l, "=")
		if k == "" {
			return nil, usageError{fmt.Errorf("invalid label %q: want key=value", l)}
		}
		m[k] = v
	}
	return m, nil
}
