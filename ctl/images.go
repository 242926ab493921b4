package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// newImageCommands returns the top-level image commands (pull, images,
// rmi, tag, push, save, load, login, logout) and the `image` group that
// holds them under Docker's management-command names.
func newImageCommands(c *CLI) []*cobra.Command {
	group := &cobra.Command{Use: "image", Short: "Manage images"}
	ls := newImagesCommand(c)
	ls.Use, ls.Aliases = "ls", []string{"list"}
	rm := newRmiCommand(c)
	rm.Use, rm.Aliases = "rm IMAGE [IMAGE...]", []string{"rmi", "remove"}
	group.AddCommand(ls, newPullCommand(c), newPushCommand(c), rm, newInspectImageCommand(c),
		newTagCommand(c), newSaveCommand(c), newLoadCommand(c), newImagePruneCommand(c))
	return []*cobra.Command{group, newPullCommand(c), newImagesCommand(c), newRmiCommand(c), newTagCommand(c),
		newPushCommand(c), newSaveCommand(c), newLoadCommand(c), newLoginCommand(c), newLogoutCommand(c)}
}

// registryAuth finds credentials for the registry of ref the way docker
// does: ~/.docker/config.json (or $DOCKER_CONFIG) and its credential
// helpers. They travel in the request only; berthd never stores them.
func registryAuth(domain string) (*berthv1.RegistryAuth, error) {
	reg, err := name.NewRegistry(domain, name.WeakValidation)
	if err != nil {
		return nil, nil
	}
	a, err := authn.DefaultKeychain.Resolve(reg)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", domain, err)
	}
	cfg, err := authn.Authorization(context.Background(), a)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", domain, err)
	}
	if cfg.Auth != "" && cfg.Username == "" {
		if u, p, ok := decodeAuth(cfg.Auth); ok {
			cfg.Username, cfg.Password = u, p
		}
	}
	return &berthv1.RegistryAuth{Username: cfg.Username, Password: cfg.Password, IdentityToken: cfg.IdentityToken, RegistryToken: cfg.RegistryToken}, nil
}

func refDomain(ref string) (domain, familiar string, tagOrDigest string) {
	r, ok := parseRef(ref)
	if !ok {
		return "", ref, ""
	}
	tagOrDigest = r.defaultTag().tag
	if r.digest != "" {
		tagOrDigest = r.digest
	}
	return r.domain, r.familiarName(), tagOrDigest
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func parsePlatform(s string) (*berthv1.Platform, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return nil, usageError{fmt.Errorf("--platform %q: want os/arch[/variant], e.g. linux/arm64", s)}
	}
	p := &berthv1.Platform{Os: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

var statusText = map[berthv1.ProgressStatus]string{
	berthv1.ProgressStatus_PROGRESS_STATUS_WAITING:           "Pulling fs layer",
	berthv1.ProgressStatus_PROGRESS_STATUS_DOWNLOADING:       "Downloading",
	berthv1.ProgressStatus_PROGRESS_STATUS_VERIFYING:         "Verifying Checksum",
	berthv1.ProgressStatus_PROGRESS_STATUS_DOWNLOAD_COMPLETE: "Download complete",
	berthv1.ProgressStatus_PROGRESS_STATUS_EXTRACTING:        "Extracting",
	berthv1.ProgressStatus_PROGRESS_STATUS_PULL_COMPLETE:     "Pull complete",
	berthv1.ProgressStatus_PROGRESS_STATUS_ALREADY_EXISTS:    "Already exists",
	berthv1.ProgressStatus_PROGRESS_STATUS_PREPARING:         "Preparing",
	berthv1.ProgressStatus_PROGRESS_STATUS_PUSHING:           "Pushing",
	berthv1.ProgressStatus_PROGRESS_STATUS_PUSHED:            "Pushed",
	berthv1.ProgressStatus_PROGRESS_STATUS_LAYER_EXISTS:      "Layer already exists",
	berthv1.ProgressStatus_PROGRESS_STATUS_MOUNTED:           "Mounted from another repository",
}

// progressView prints per-layer progress: live lines with bars on a
// terminal, one line per status change otherwise (logs and pipes).
type progressView struct {
	out   io.Writer
	tty   bool
	order []string
	lines map[string]string
	last  map[string]berthv1.ProgressStatus
	drawn int
}

func newProgressView(out io.Writer) *progressView {
	return &progressView{out: out, tty: isTerminal(out), lines: map[string]string{}, last: map[string]berthv1.ProgressStatus{}}
}

func bar(cur, total int64) string {
	const width = 50
	if total <= 0 {
		return ""
	}
	n := int(cur * width / total)
	n = min(max(n, 0), width)
	b := strings.Repeat("=", n)
	if n < width {
		b += ">" + strings.Repeat(" ", width-n-1)
	}
	return fmt.Sprintf("[%s]  %s/%s", b, humanBytes(cur), humanBytes(total))
}

func (v *progressView) update(p *berthv1.Progress) {
	if _, ok := v.lines[p.Id]; !ok {
		v.order = append(v.order, p.Id)
	}
	text := statusText[p.Status]
	if p.Status == berthv1.ProgressStatus_PROGRESS_STATUS_DOWNLOADING || p.Status == berthv1.ProgressStatus_PROGRESS_STATUS_PUSHING {
		text += "  " + bar(p.Current, p.Total)
	}
	v.lines[p.Id] = p.Id + ": " + text
	if !v.tty {
		// Docker prints status changes only; the byte counts of
		// Downloading, Extracting and Pushing are for terminals.
		switch p.Status {
		case berthv1.ProgressStatus_PROGRESS_STATUS_DOWNLOADING, berthv1.ProgressStatus_PROGRESS_STATUS_EXTRACTING:
			return
		}
		if v.last[p.Id] != p.Status {
			fmt.Fprintf(v.out, "%s: %s\n", p.Id, statusText[p.Status])
		}
		v.last[p.Id] = p.Status
		return
	}
	v.redraw()
}

func (v *progressView) redraw() {
	if v.drawn > 0 {
		fmt.Fprintf(v.out, "\x1b[%dA", v.drawn)
	}
	for _, id := range v.order {
		fmt.Fprintf(v.out, "\x1b[2K%s\n", v.lines[id])
	}
	v.drawn = len(v.order)
}

func newPullCommand(c *CLI) *cobra.Command {
	var platform string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "pull [OPTIONS] NAME[:TAG|@DIGEST]",
		Short: "Download an image from a registry",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			plat, err := parsePlatform(platform)
			if err != nil {
				return err
			}
			return c.pull(cmd.Context(), a[0], plat, quiet)
		},
	}
	cmd.Flags().StringVar(&platform, "platform", "", "platform os/arch[/variant] (default: the host's)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the image name")
	return cmd
}

// pull runs a pull with Docker's output on stdout.
func (c *CLI) pull(ctx context.Context, ref string, plat *berthv1.Platform, quiet bool) error {
	return c.pullTo(ctx, c.Out, ref, plat, quiet, true)
}

// pullTo runs a pull with Docker's output on out; run and create call it
// with stderr, and without the final name line, as Docker does.
func (c *CLI) pullTo(ctx context.Context, out io.Writer, ref string, plat *berthv1.Platform, quiet, printName bool) error {
	cl, err := c.Client()
	if err != nil {
		return err
	}
	domain, familiar, tag := refDomain(ref)
	auth, err := registryAuth(domain)
	if err != nil {
		return err
	}
	stream, err := cl.Images.Pull(ctx, &berthv1.PullRequest{Reference: ref, Platform: plat, Auth: auth})
	if err != nil {
		return err
	}
	view := newProgressView(out)
	if !quiet {
		fmt.Fprintf(out, "%s: Pulling from %s\n", tag, pathOf(ref, familiar))
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("pull %s: berthd ended the stream without a result", ref)
		}
		if err != nil {
			return err
		}
		switch u := resp.Update.(type) {
		case *berthv1.PullResponse_Progress:
			if !quiet {
				view.update(u.Progress)
			}
		case *berthv1.PullResponse_Done:
			img := u.Done.Image
			if quiet {
				fmt.Fprintln(out, img.Name)
				return nil
			}
			fmt.Fprintf(out, "Digest: %s\n", img.GetTarget().GetDigest())
			short := familiarName(img.Name)
			if u.Done.UpToDate {
				fmt.Fprintf(out, "Status: Image is up to date for %s\n", short)
			} else {
				fmt.Fprintf(out, "Status: Downloaded newer image for %s\n", short)
			}
			if printName {
				fmt.Fprintln(out, img.Name)
			}
			return nil
		}
	}
}

// pathOf is the repository path Docker prints after "Pulling from".
func pathOf(ref, familiar string) string {
	r, ok := parseRef(ref)
	if !ok {
		return familiar
	}
	return r.path
}

func familiarName(name string) string {
	r, ok := parseRef(name)
	if !ok {
		return name
	}
	return r.withTagAndDigest(r.familiarName())
}

// repoTag splits a stored name into Docker's REPOSITORY and TAG columns.
func repoTag(name string) (string, string) {
	r, ok := parseRef(name)
	if !ok {
		return name, "<none>"
	}
	tag := "<none>"
	if r.tag != "" {
		tag = r.tag
	}
	return r.familiarName(), tag
}

// shortID is the 12 hex digits Docker shows as IMAGE ID.
func shortID(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

func imageIDOf(img *berthv1.Image) string {
	if d := img.GetConfigDescriptor().GetDigest(); d != "" {
		return d
	}
	return img.GetTarget().GetDigest()
}

func imageSize(img *berthv1.Image) int64 {
	if img.GetUnpackedSize() > 0 {
		return img.GetUnpackedSize()
	}
	return img.GetSize()
}

// siBytes is Docker's size display: SI units, 3 significant digits
// ("4.26MB").
func siBytes(n int64) string {
	units := []string{"B", "kB", "MB", "GB", "TB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	return fmt.Sprintf("%.3g%s", f, units[i])
}

func newImagesCommand(c *CLI) *cobra.Command {
	var quiet, digests bool
	var format string
	var filters []string
	cmd := &cobra.Command{
		Use:   "images [OPTIONS] [REPOSITORY[:TAG]]",
		Short: "List images",
		Args:  args(0, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			f := &berthv1.ImageFilter{}
			if len(a) == 1 {
				f.Reference = a[0]
			}
			for _, fl := range filters {
				k, v, ok := strings.Cut(fl, "=")
				switch {
				case !ok:
					return usageError{fmt.Errorf("--filter %q: want key=value", fl)}
				case k == "reference":
					f.Reference = v
				case k == "label":
					f.Labels = append(f.Labels, v)
				case k == "dangling":
					f.Dangling = v == "true"
				default:
					return usageError{fmt.Errorf("--filter %q: supported keys are reference, label and dangling", fl)}
				}
			}
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx, cancel := shortContext(cmd.Context())
			defer cancel()
			resp, err := cl.Images.ListImages(ctx, &berthv1.ListImagesRequest{Filter: f})
			if err != nil {
				return err
			}
			list := resp.Images
			if f.Dangling {
				list = nil // names are references: Berth keeps no untagged images
			}
			sort.SliceStable(list, func(i, j int) bool {
				return list[i].GetImageCreated().AsTime().After(list[j].GetImageCreated().AsTime())
			})
			if quiet {
				seen := map[string]bool{}
				for _, img := range list {
					id := shortID(imageIDOf(img))
					if !seen[id] {
						seen[id] = true
						fmt.Fprintln(c.Out, id)
					}
				}
				return nil
			}
			items := make([]any, len(list))
			for i, img := range list {
				items[i] = img
			}
			p := &printer{out: c.Out, format: format}
			if done, err := p.structured(items); done {
				return err
			}
			header := []string{"REPOSITORY", "TAG"}
			if digests {
				header = append(header, "DIGEST")
			}
			header = append(header, "IMAGE ID", "CREATED", "SIZE")
			rows := make([][]string, len(list))
			for i, img := range list {
				repo, tag := repoTag(img.Name)
				row := []string{repo, tag}
				if digests {
					row = append(row, img.GetTarget().GetDigest())
				}
				created := "N/A"
				if img.GetImageCreated() != nil {
					created = ago(img.GetImageCreated().AsTime())
				}
				rows[i] = append(row, shortID(imageIDOf(img)), created, siBytes(imageSize(img)))
			}
			return p.table(header, rows)
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&quiet, "quiet", "q", false, "only show image IDs")
	fl.BoolVar(&digests, "digests", false, "show digests")
	fl.StringVar(&format, "format", "", "output format: table, json or a Go template")
	fl.StringArrayVarP(&filters, "filter", "f", nil, "filter: reference=PATTERN, label=KEY[=VALUE], dangling=true")
	return cmd
}

func newInspectImageCommand(c *CLI) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "inspect [OPTIONS] IMAGE [IMAGE...]",
		Short: "Show images in detail (JSON)",
		Args:  args(1, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx, cancel := shortContext(cmd.Context())
			defer cancel()
			var items []any
			var firstErr error
			for _, n := range a {
				resp, err := cl.Images.GetImage(ctx, &berthv1.GetImageRequest{Name: n})
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				items = append(items, resp.Image)
			}
			if format == "" {
				format = "json"
			}
			p := &printer{out: c.Out, format: format}
			if format == "json" {
				if items == nil {
					items = []any{}
				}
				if err := writeJSON(c.Out, items); err != nil {
					return err
				}
			} else if _, err := p.structured(items); err != nil {
				return err
			}
			return firstErr
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "output format: json (default) or a Go template")
	return cmd
}

func newRmiCommand(c *CLI) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rmi [OPTIONS] IMAGE [IMAGE...]",
		Short: "Remove images",
		Args:  args(1, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx, cancel := shortContext(cmd.Context())
			defer cancel()
			var errs []error
			for _, n := range a {
				resp, err := cl.Images.RemoveImage(ctx, &berthv1.RemoveImageRequest{Name: n, Force: force})
				if err != nil {
					errs = append(errs, c.explain(err))
					continue
				}
				for _, u := range resp.Untagged {
					fmt.Fprintln(c.Out, "Untagged:", u)
				}
				for _, d := range resp.Deleted {
					fmt.Fprintln(c.Out, "Deleted:", d)
				}
			}
			if len(errs) > 0 {
				for _, e := range errs[:len(errs)-1] {
					fmt.Fprintln(c.Err, e)
				}
				return errs[len(errs)-1]
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even if containers use the image, and every name of an image given by ID")
	return cmd
}

func newTagCommand(c *CLI) *cobra.Command {
	return &cobra.Command{
		Use:   "tag SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]",
		Short: "Give an image another name",
		Args:  args(2, 2),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx, cancel := shortContext(cmd.Context())
			defer cancel()
			_, err = cl.Images.TagImage(ctx, &berthv1.TagImageRequest{Source: a[0], Target: a[1]})
			return err
		},
	}
}

func newImagePruneCommand(c *CLI) *cobra.Command {
	var all, force bool
	cmd := &cobra.Command{
		Use:   "prune [OPTIONS]",
		Short: "Remove unused images (-a) and collect garbage",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.prune(cmd.Context(), all, false)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "remove every image no container uses, not only dangling ones")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation (berthctl never asks)")
	return cmd
}

// prune removes images no container uses (with all) and collects
// garbage; Berth keeps no dangling (untagged) images, so without all only
// garbage goes.
func (c *CLI) prune(ctx context.Context, all, allIngests bool) error {
	cl, err := c.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if all {
		list, err := cl.Images.ListImages(ctx, &berthv1.ListImagesRequest{})
		if err != nil {
			return err
		}
		ctrs, err := cl.Containers.ListContainers(ctx, &berthv1.ListContainersRequest{})
		if err != nil {
			return err
		}
		used := map[string]bool{}
		for _, ct := range ctrs.Containers {
			used[ct.GetImageDigest()] = true
			if r, ok := parseRef(ct.GetSpec().GetImage()); ok {
				r = r.defaultTag()
				used[r.withTagAndDigest(r.name())] = true
			}
		}
		header := false
		for _, img := range list.Images {
			if used[img.Name] || used[img.GetTarget().GetDigest()] {
				continue
			}
			resp, err := cl.Images.RemoveImage(ctx, &berthv1.RemoveImageRequest{Name: img.Name})
			if err != nil {
				fmt.Fprintln(c.Err, c.explain(err))
				continue
			}
			if !header {
				fmt.Fprintln(c.Out, "Deleted Images:")
				header = true
			}
			for _, u := range resp.Untagged {
				fmt.Fprintln(c.Out, "untagged:", u)
			}
			for _, d := range resp.Deleted {
				fmt.Fprintln(c.Out, "deleted:", d)
			}
		}
		if header {
			fmt.Fprintln(c.Out)
		}
	}
	res, err := cl.System.GarbageCollect(ctx, &berthv1.GarbageCollectRequest{AllIngests: allIngests})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.Out, "Total reclaimed space: %s\n", siBytes(res.BytesFreed))
	return nil
}

// newSystemDfCommand and newSystemPruneCommand live under `system`.
func newSystemCommand(c *CLI) *cobra.Command {
	group := &cobra.Command{Use: "system", Short: "Manage berthd"}
	var format string
	df := &cobra.Command{
		Use:   "df",
		Short: "Show disk usage",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx, cancel := shortContext(cmd.Context())
			defer cancel()
			resp, err := cl.System.DiskUsage(ctx, &berthv1.DiskUsageRequest{})
			if err != nil {
				return err
			}
			p := &printer{out: c.Out, format: format}
			if done, err := p.structured(any(resp)); done {
				return err
			}
			names := map[string]string{"images": "Images", "containers": "Containers", "content": "Content store", "snapshots": "Snapshots"}
			rows := make([][]string, len(resp.Entries))
			for i, e := range resp.Entries {
				pct := ""
				if e.SizeBytes > 0 {
					pct = fmt.Sprintf(" (%d%%)", e.ReclaimableBytes*100/e.SizeBytes)
				}
				rows[i] = []string{names[e.Kind], fmt.Sprint(e.Total), fmt.Sprint(e.Active), siBytes(e.SizeBytes), siBytes(e.ReclaimableBytes) + pct}
			}
			return p.table([]string{"TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"}, rows)
		},
	}
	df.Flags().StringVar(&format, "format", "", "output format: table, json or a Go template")
	var all, force bool
	prune := &cobra.Command{
		Use:   "prune [OPTIONS]",
		Short: "Remove unused data: garbage, unfinished downloads, and with -a unused images",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.prune(cmd.Context(), all, true)
		},
	}
	prune.Flags().BoolVar(&all, "all", false, "also remove every image no container uses")
	prune.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation (berthctl never asks)")
	group.AddCommand(df, prune)
	return group
}
