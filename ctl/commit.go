package ctl

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func newCommitCommand(c *CLI) *cobra.Command {
	var message, author string
	var changes []string
	var pause bool
	cmd := &cobra.Command{
		Use:   "commit [OPTIONS] CONTAINER [REPOSITORY[:TAG]]",
		Short: "Create a new image from a container's changes",
		Args:  args(1, 2),
		RunE: func(cmd *cobra.Command, a []string) error {
			cfg := &berthv1.ImageConfig{}
			for _, ch := range changes {
				if err := applyChange(cfg, ch); err != nil {
					return usageError{err}
				}
			}
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctr, err := resolve(cmd.Context(), cl, a[0])
			if err != nil {
				return err
			}
			ref := ""
			if len(a) == 2 {
				ref = a[1]
			}
			resp, err := cl.Containers.CommitContainer(cmd.Context(), &berthv1.CommitContainerRequest{
				Id: ctr.Id, Reference: ref, Comment: message, Author: author, Config: cfg, Pause: pause,
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(c.Out, resp.GetDigest())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&message, "message", "m", "", "commit message")
	f.StringVarP(&author, "author", "a", "", `author (e.g. "Jane Doe <jane@example.com>")`)
	f.StringArrayVarP(&changes, "change", "c", nil, "apply a Dockerfile instruction to the image (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL)")
	f.BoolVarP(&pause, "pause", "p", true, "pause the container during the commit")
	return cmd
}

// applyChange applies one Dockerfile instruction of commit -c to cfg.
func applyChange(cfg *berthv1.ImageConfig, change string) error {
	instr, rest, _ := strings.Cut(strings.TrimSpace(change), " ")
	rest = strings.TrimSpace(rest)
	if rest == "" {
		return fmt.Errorf("invalid change %q: %s needs an argument", change, instr)
	}
	switch strings.ToUpper(instr) {
	case "CMD":
		cfg.Cmd = commandForm(rest)
	case "ENTRYPOINT":
		cfg.Entrypoint = commandForm(rest)
	case "ENV":
		kvs, err := keyValues(rest)
		if err != nil {
			return fmt.Errorf("invalid change %q: %v", change, err)
		}
		cfg.Env = append(cfg.Env, kvs...)
	case "LABEL":
		kvs, err := keyValues(rest)
		if err != nil {
			return fmt.Errorf("invalid change %q: %v", change, err)
		}
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		for _, kv := range kvs {
			k, v, _ := strings.Cut(kv, "=")
			cfg.Labels[k] = v
		}
	case "WORKDIR":
		cfg.WorkingDir = rest
	case "USER":
		cfg.User = rest
	case "STOPSIGNAL":
		cfg.StopSignal = rest
	case "EXPOSE":
		for _, p := range strings.Fields(rest) {
			if !strings.Contains(p, "/") {
				p += "/tcp"
			}
			cfg.ExposedPorts = append(cfg.ExposedPorts, p)
		}
	case "VOLUME":
		if strings.HasPrefix(rest, "[") {
			cfg.Volumes = append(cfg.Volumes, commandForm(rest)...)
		} else {
			cfg.Volumes = append(cfg.Volumes, strings.Fields(rest)...)
		}
	default:
		return fmt.Errorf("invalid change %q: %s is not supported by commit (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL are)", change, instr)
	}
	return nil
}

// commandForm reads the exec form (a JSON array) or the shell form, which
// runs under /bin/sh -c as in a Dockerfile.
func commandForm(s string) []string {
	if strings.HasPrefix(s, "[") {
		var list []string
		if err := json.Unmarshal([]byte(s), &list); err == nil {
			return list
		}
	}
	return []string{"/bin/sh", "-c", s}
}

// keyValues reads "K=V K2=V2" (values may be double-quoted) or the old
// "K V" form.
func keyValues(s string) ([]string, error) {
	if k, v, ok := strings.Cut(s, " "); ok && !strings.Contains(k, "=") {
		return []string{k + "=" + strings.TrimSpace(v)}, nil
	}
	var out []string
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		k, rest, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not KEY=VALUE", s)
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			end := strings.Index(rest[1:], `"`)
			if end < 0 {
				return nil, fmt.Errorf("unterminated quote in %q", s)
			}
			v, s = rest[1:end+1], rest[end+2:]
		} else {
			v, s, _ = strings.Cut(rest, " ")
		}
		out = append(out, k+"="+v)
	}
	return out, nil
}
