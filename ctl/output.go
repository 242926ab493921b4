package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// printer writes a command's result as an aligned table (the default),
// JSON (--format json) or a Go template (--format '{{.Name}}').
type printer struct {
	out    io.Writer
	format string
}

// table writes rows under a header, columns aligned as Docker's are.
func (p *printer) table(header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(p.out, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// structured handles --format json and templates. It reports false when
// the format is the default table, which the caller then prints.
func (p *printer) structured(items any) (bool, error) {
	switch {
	case p.format == "" || p.format == "table":
		return false, nil
	case p.format == "json":
		return true, writeJSON(p.out, items)
	}
	tmpl, err := template.New("format").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := toJSON(v)
			return string(b), err
		},
	}).Parse(p.format)
	if err != nil {
		return true, fmt.Errorf("--format: %w", err)
	}
	list, ok := items.([]any)
	if !ok {
		list = []any{items}
	}
	for _, it := range list {
		if err := tmpl.Execute(p.out, templateData(it)); err != nil {
			return true, fmt.Errorf("--format: %w", err)
		}
		fmt.Fprintln(p.out)
	}
	return true, nil
}

// templateData gives templates the JSON field names ({{.name}}) as well as
// Go's ({{.Name}}) for proto messages.
func templateData(v any) any {
	if m, ok := v.(proto.Message); ok {
		b, err := protojson.Marshal(m)
		if err == nil {
			var out map[string]any
			if json.Unmarshal(b, &out) == nil {
				for k, val := range out {
					out[strings.ToUpper(k[:1])+k[1:]] = val
				}
				return out
			}
		}
	}
	return v
}

func toJSON(v any) ([]byte, error) {
	if m, ok := v.(proto.Message); ok {
		return protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: false}.Marshal(m)
	}
	if list, ok := v.([]any); ok {
		parts := make([]json.RawMessage, len(list))
		for i, it := range list {
			b, err := toJSON(it)
			if err != nil {
				return nil, err
			}
			parts[i] = b
		}
		return json.MarshalIndent(parts, "", "  ")
	}
	return json.MarshalIndent(v, "", "  ")
}

func writeJSON(w io.Writer, v any) error {
	b, err := toJSON(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// ago renders a past time as Docker does: "3 minutes ago".
func ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return humanDuration(time.Since(t)) + " ago"
}

// humanDuration is Docker's go-units HumanDuration, in our words.
func humanDuration(d time.Duration) string {
	switch s := int(d.Seconds()); {
	case s < 1:
		return "Less than a second"
	case s == 1:
		return "1 second"
	case s < 60:
		return fmt.Sprintf("%d seconds", s)
	}
	switch m := int(d.Minutes()); {
	case m == 1:
		return "About a minute"
	case m < 60:
		return fmt.Sprintf("%d minutes", m)
	}
	switch h := int(d.Hours() + 0.5); {
	case h == 1:
		return "About an hour"
	case h < 48:
		return fmt.Sprintf("%d hours", h)
	case h < 24*7*2:
		return fmt.Sprintf("%d days", h/24)
	case h < 24*30*2:
		return fmt.Sprintf("%d weeks", h/24/7)
	case h < 24*365*2:
		return fmt.Sprintf("%d months", h/24/30)
	default:
		return fmt.Sprintf("%d years", int(d.Hours())/24/365)
	}
}

func labelsString(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	sortStrings(parts)
	return strings.Join(parts, ",")
}

func jsonCompact(m proto.Message) ([]byte, error) { return protojson.Marshal(m) }
