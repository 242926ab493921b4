package ctl

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func newEventsCommand(c *CLI) *cobra.Command {
	var (
		filters []string
		format  string
		all     bool
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Stream events from berthd as they happen",
		Long: `Stream events from berthd as they happen.

Filters (--filter, repeatable; the same key ORs, different keys AND):
  type=container|image|task|namespace
  event=create|start|exit|delete|...   (the last part of the topic)
  container=ID                         (the event's subject)
  image=NAME`,
		Args: args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &berthv1.SubscribeRequest{AllNamespaces: all}
			var eventNames []string
			for _, f := range filters {
				k, v, ok := strings.Cut(f, "=")
				if !ok || v == "" {
					return usageError{fmt.Errorf("invalid filter %q: want key=value", f)}
				}
				switch k {
				case "type":
					req.Topics = append(req.Topics, "/"+v+"s/")
				case "event":
					eventNames = append(eventNames, v)
				case "container", "image", "namespace", "id":
					req.Ids = append(req.Ids, v)
				default:
					return usageError{fmt.Errorf("invalid filter key %q: use type, event, container, image or namespace", k)}
				}
			}
			cl, err := c.Client()
			if err != nil {
				return err
			}
			stream, err := cl.Events.Subscribe(cmd.Context(), req)
			if err != nil {
				return err
			}
			for {
				msg, err := stream.Recv()
				if err != nil {
					if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
						return nil
					}
					return err
				}
				if lost := msg.GetLost(); lost != nil {
					fmt.Fprintf(c.Err, "berthctl: %d events were lost: this client read too slowly\n", lost.Count)
					continue
				}
				e := msg.GetEvent()
				if len(eventNames) > 0 && !anyMatch(eventNames, func(n string) bool { return strings.HasSuffix(e.Topic, "/"+n) }) {
					continue
				}
				if format == "json" {
					if err := writeJSONLine(c.Out, e); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintln(c.Out, formatEvent(e))
			}
		},
	}
	cmd.Flags().StringArrayVarP(&filters, "filter", "f", nil, "filter output (type=, event=, container=, image=)")
	cmd.Flags().StringVar(&format, "format", "", "output format: json (one object per line)")
	cmd.Flags().BoolVar(&all, "all-namespaces", false, "show events of every namespace")
	return cmd
}

// formatEvent renders an event as Docker's `events` does:
// "2026-11-26T20:50:44.323456789Z container create 3f2a… (image=busybox, name=web)".
func formatEvent(e *berthv1.Event) string {
	parts := strings.Split(strings.Trim(e.Topic, "/"), "/")
	typ, action := parts[0], parts[len(parts)-1]
	typ = strings.TrimSuffix(typ, "s")
	attrs := make([]string, 0, len(e.Attributes)+1)
	for k, v := range e.Attributes {
		attrs = append(attrs, k+"="+v)
	}
	sort.Strings(attrs)
	if e.Namespace != "" {
		attrs = append(attrs, "namespace="+e.Namespace)
	}
	return fmt.Sprintf("%s %s %s %s (%s)", e.Timestamp.AsTime().Format(time.RFC3339Nano), typ, action, e.Id, strings.Join(attrs, ", "))
}

func anyMatch(list []string, f func(string) bool) bool {
	for _, s := range list {
		if f(s) {
			return true
		}
	}
	return false
}

func writeJSONLine(w io.Writer, e *berthv1.Event) error {
	b, err := jsonCompact(e)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}
