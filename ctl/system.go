package ctl

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
	"github.com/berth-dev/berth/version"
)

func newVersionCommand(c *CLI) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the client's and the server's version",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			client := &berthv1.VersionResponse{
				Version: version.Version, GitCommit: version.GitCommit, GoVersion: version.GoVersion(),
				ApiVersion: version.APIVersion, Os: runtime.GOOS, Arch: runtime.GOARCH,
			}
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx, cancel := shortContext(cmd.Context())
			defer cancel()
			server, serr := cl.System.Version(ctx, &berthv1.VersionRequest{})
			p := &printer{out: c.Out, format: format}
			if format != "" {
				v := map[string]any{"client": client}
				if serr == nil {
					v["server"] = server
				}
				if err := writeJSONOrTemplate(p, v); err != nil {
					return err
				}
				return serr
			}
			printVersion(c, "Client", client)
			if serr != nil {
				fmt.Fprintln(c.Out)
				return serr
			}
			fmt.Fprintln(c.Out)
			printVersion(c, "Server", server)
			return nil
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "output format: json or a Go template")
	return cmd
}

func writeJSONOrTemplate(p *printer, v map[string]any) error {
	if p.format == "json" {
		out := map[string]any{}
		for k, m := range v {
			out[k] = templateData(m)
		}
		return writeJSON(p.out, out)
	}
	data := map[string]any{}
	for k, m := range v {
		data[k] = templateData(m)
		data[capitalize(k)] = data[k]
	}
	_, err := p.structured(any(data))
	return err
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

func printVersion(c *CLI, title string, v *berthv1.VersionResponse) {
	fmt.Fprintf(c.Out, "%s:\n", title)
	fmt.Fprintf(c.Out, " Version:    %s\n", v.Version)
	fmt.Fprintf(c.Out, " API:        %s\n", v.ApiVersion)
	fmt.Fprintf(c.Out, " Go version: %s\n", v.GoVersion)
	fmt.Fprintf(c.Out, " Git commit: %s\n", v.GitCommit)
	fmt.Fprintf(c.Out, " OS/Arch:    %s/%s\n", v.Os, v.Arch)
}

func newInfoCommand(c *CLI) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "info",
		Short: "Show how berthd is set up and what it holds",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx, cancel := shortContext(cmd.Context())
			defer cancel()
			info, err := cl.System.Info(ctx, &berthv1.InfoRequest{})
			if err != nil {
				return err
			}
			p := &printer{out: c.Out, format: format}
			if done, err := p.structured(info); done {
				return err
			}
			w := c.Out
			fmt.Fprintf(w, "Server:\n")
			fmt.Fprintf(w, " Namespace: %s\n", info.Namespace)
			fmt.Fprintf(w, " Containers: %d\n", info.Containers)
			fmt.Fprintf(w, "  Running: %d\n", info.ContainersRunning)
			fmt.Fprintf(w, "  Paused: %d\n", info.ContainersPaused)
			fmt.Fprintf(w, "  Stopped: %d\n", info.ContainersStopped)
			fmt.Fprintf(w, " Images: %d\n", info.Images)
			fmt.Fprintf(w, " Namespaces: %d\n", info.Namespaces)
			fmt.Fprintf(w, " Server Version: %s\n", info.ServerVersion)
			fmt.Fprintf(w, " Snapshotter: %s\n", info.Snapshotter)
			fmt.Fprintf(w, " Logging Driver: %s\n", info.LogDriver)
			fmt.Fprintf(w, " Cgroup Driver: %s\n", info.CgroupDriver)
			fmt.Fprintf(w, " Cgroup Version: %s\n", info.CgroupVersion)
			fmt.Fprintf(w, " Cgroup Parent: %s\n", info.CgroupParent)
			fmt.Fprintf(w, " Kernel Version: %s\n", info.KernelVersion)
			fmt.Fprintf(w, " Operating System: %s\n", info.OperatingSystem)
			fmt.Fprintf(w, " Architecture: %s\n", info.Architecture)
			fmt.Fprintf(w, " CPUs: %d\n", info.Cpus)
			fmt.Fprintf(w, " Total Memory: %s\n", humanBytes(info.MemoryBytes))
			fmt.Fprintf(w, " Name: %s\n", info.Hostname)
			fmt.Fprintf(w, " Root Dir: %s\n", info.Root)
			fmt.Fprintf(w, " State Dir: %s\n", info.State)
			return nil
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "output format: json or a Go template")
	return cmd
}

// humanBytes renders sizes as Docker does: binary units, 3 significant digits.
func humanBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	f := float64(n)
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.4g%s", f, units[i])
}
