package ctl

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func newPushCommand(c *CLI) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "push NAME[:TAG]",
		Short: "Upload an image to a registry",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			cl, err := c.Client()
			if err != nil {
				return err
			}
			domain, familiar, tag := refDomain(a[0])
			auth, err := registryAuth(domain)
			if err != nil {
				return err
			}
			stream, err := cl.Images.Push(cmd.Context(), &berthv1.PushRequest{Reference: a[0], Auth: auth})
			if err != nil {
				return err
			}
			fmt.Fprintf(c.Out, "The push refers to repository [%s]\n", familiar)
			view := newProgressView(c.Out)
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					return fmt.Errorf("push %s: berthd ended the stream without a result", a[0])
				}
				if err != nil {
					return err
				}
				switch u := resp.Update.(type) {
				case *berthv1.PushResponse_Progress:
					view.update(u.Progress)
				case *berthv1.PushResponse_Done:
					fmt.Fprintf(c.Out, "%s: digest: %s size: %d\n", tag, u.Done.Digest, u.Done.Size)
					return nil
				}
			}
		},
	}
	return cmd
}

func newSaveCommand(c *CLI) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "save [OPTIONS] IMAGE [IMAGE...]",
		Short: "Write images to a tar archive (OCI layout with Docker's manifest.json)",
		Args:  args(1, -1),
		RunE: func(cmd *cobra.Command, a []string) error {
			var w io.Writer = c.Out
			var f *os.File
			if output != "" {
				var err error
				// Write beside the target and rename at the end, so a failed
				// save never leaves a truncated archive under the name.
				f, err = os.CreateTemp(filepath.Dir(output), "."+filepath.Base(output)+".tmp-*")
				if err != nil {
					return err
				}
				defer func() {
					if f != nil {
						f.Close()
						os.Remove(f.Name())
					}
				}()
				w = f
			} else if isTerminal(c.Out) {
				return usageError{errors.New("refusing to write the archive to a terminal: use -o FILE or redirect")}
			}
			cl, err := c.Client()
			if err != nil {
				return err
			}
			stream, err := cl.Images.Export(cmd.Context(), &berthv1.ExportRequest{Names: a})
			if err != nil {
				return err
			}
			bw := bufio.NewWriterSize(w, 1<<20)
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return err
				}
				if _, err := bw.Write(resp.Chunk); err != nil {
					return err
				}
			}
			if err := bw.Flush(); err != nil {
				return err
			}
			if f != nil {
				if err := f.Sync(); err != nil {
					return err
				}
				if err := f.Close(); err != nil {
					return err
				}
				if err := os.Rename(f.Name(), output); err != nil {
					return err
				}
				f = nil
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write to FILE instead of stdout")
	return cmd
}

func newLoadCommand(c *CLI) *cobra.Command {
	var input string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "load [OPTIONS]",
		Short: "Load images from a tar archive (OCI layout or `docker save`)",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var r io.Reader = os.Stdin
			if input != "" {
				f, err := os.Open(input)
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			cl, err := c.Client()
			if err != nil {
				return err
			}
			stream, err := cl.Images.Import(cmd.Context())
			if err != nil {
				return err
			}
			if err := stream.Send(&berthv1.ImportRequest{Part: &berthv1.ImportRequest_Options{Options: &berthv1.ImportOptions{}}}); err != nil {
				return err
			}
			buf := make([]byte, 1<<20)
			for {
				n, rerr := r.Read(buf)
				if n > 0 {
					if err := stream.Send(&berthv1.ImportRequest{Part: &berthv1.ImportRequest_Chunk{Chunk: append([]byte(nil), buf[:n]...)}}); err != nil {
						if errors.Is(err, io.EOF) {
							break // the server answered early: CloseAndRecv has why
						}
						return err
					}
				}
				if errors.Is(rerr, io.EOF) {
					break
				}
				if rerr != nil {
					return rerr
				}
			}
			resp, err := stream.CloseAndRecv()
			if err != nil {
				return err
			}
			for _, img := range resp.Images {
				if !quiet {
					fmt.Fprintf(c.Out, "Loaded image: %s\n", familiarName(img.Name))
				} else {
					fmt.Fprintln(c.Out, img.Name)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&input, "input", "i", "", "read from FILE instead of stdin")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the image names")
	return cmd
}

// dockerConfigPath is the file docker login writes: $DOCKER_CONFIG/config.json
// or ~/.docker/config.json.
func dockerConfigPath() (string, error) {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, "config.json"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the docker config: %w (set DOCKER_CONFIG)", err)
	}
	return filepath.Join(home, ".docker", "config.json"), nil
}

// authKey is the key docker uses in "auths" for a registry.
func authKey(registry string) string {
	if registry == "docker.io" {
		return "https://index.docker.io/v1/"
	}
	return registry
}

func normalizeRegistryArg(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	s, _, _ = strings.Cut(s, "/")
	switch s {
	case "", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return s
}

func decodeAuth(s string) (user, pass string, ok bool) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", "", false
	}
	return strings.Cut(string(b), ":")
}

// updateDockerConfig rewrites the docker config file with fn applied to
// its "auths", keeping every other key as it was; temp file + fsync +
// rename, mode 0600, so a crash never leaves a torn file.
func updateDockerConfig(fn func(auths map[string]json.RawMessage) error) (string, error) {
	path, err := dockerConfigPath()
	if err != nil {
		return "", err
	}
	doc := map[string]json.RawMessage{}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(strings.TrimSpace(string(data))) > 0 {
			if err := json.Unmarshal(data, &doc); err != nil {
				return "", fmt.Errorf("%s is not valid JSON: %w; fix or move it", path, err)
			}
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return "", err
	}
	auths := map[string]json.RawMessage{}
	if raw, ok := doc["auths"]; ok {
		if err := json.Unmarshal(raw, &auths); err != nil {
			return "", fmt.Errorf("%s: \"auths\": %w", path, err)
		}
	}
	if err := fn(auths); err != nil {
		return "", err
	}
	raw, _ := json.Marshal(auths)
	doc["auths"] = raw
	out, err := json.MarshalIndent(doc, "", "\t")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config.json.tmp-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(out, '\n')); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o600)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	return path, err
}

func newLoginCommand(c *CLI) *cobra.Command {
	var user, pass string
	var passStdin bool
	cmd := &cobra.Command{
		Use:   "login [OPTIONS] [SERVER]",
		Short: "Log in to a registry (credentials are stored in the docker config file, as docker login does)",
		Args:  args(0, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			server := "docker.io"
			if len(a) == 1 {
				server = normalizeRegistryArg(a[0])
			}
			if passStdin {
				if pass != "" {
					return usageError{errors.New("--password and --password-stdin are mutually exclusive")}
				}
				b, err := io.ReadAll(io.LimitReader(os.Stdin, 64<<10))
				if err != nil {
					return err
				}
				pass = strings.TrimRight(string(b), "\r\n")
			}
			in := bufio.NewReader(os.Stdin)
			if user == "" {
				fmt.Fprint(c.Out, "Username: ")
				line, _ := in.ReadString('\n')
				user = strings.TrimSpace(line)
			}
			if pass == "" && !passStdin && isTerminal(os.Stdin) {
				fmt.Fprint(c.Out, "Password: ")
				pass = readPassword(in)
				fmt.Fprintln(c.Out)
			}
			if user == "" || pass == "" {
				return usageError{errors.New("login needs a username and a password (-u USER and -p PASS or --password-stdin)")}
			}
			if !passStdin && cmd.Flags().Changed("password") {
				fmt.Fprintln(c.Err, "WARNING! Using --password via the CLI is insecure. Use --password-stdin.")
			}
			cl, err := c.Client()
			if err != nil {
				return err
			}
			ctx, cancel := shortContext(cmd.Context())
			defer cancel()
			resp, err := cl.Images.Authenticate(ctx, &berthv1.AuthenticateRequest{Registry: server, Auth: &berthv1.RegistryAuth{Username: user, Password: pass}})
			if err != nil {
				return err
			}
			path, err := updateDockerConfig(func(auths map[string]json.RawMessage) error {
				entry := map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}
				if resp.IdentityToken != "" {
					entry = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":")), "identitytoken": resp.IdentityToken}
				}
				raw, _ := json.Marshal(entry)
				auths[authKey(server)] = raw
				return nil
			})
			if err != nil {
				return fmt.Errorf("store credentials: %w", err)
			}
			fmt.Fprintf(c.Err, "WARNING! Your password will be stored unencrypted in %s.\n", path)
			fmt.Fprintln(c.Out, "Login Succeeded")
			return nil
		},
	}
	cmd.Flags().StringVarP(&user, "username", "u", "", "username")
	cmd.Flags().StringVarP(&pass, "password", "p", "", "password")
	cmd.Flags().BoolVar(&passStdin, "password-stdin", false, "read the password from stdin")
	return cmd
}

func newLogoutCommand(c *CLI) *cobra.Command {
	return &cobra.Command{
		Use:   "logout [SERVER]",
		Short: "Log out from a registry (removes its credentials from the docker config file)",
		Args:  args(0, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			server := "docker.io"
			if len(a) == 1 {
				server = normalizeRegistryArg(a[0])
			}
			found := false
			_, err := updateDockerConfig(func(auths map[string]json.RawMessage) error {
				_, found = auths[authKey(server)]
				delete(auths, authKey(server))
				return nil
			})
			if err != nil {
				return err
			}
			if !found {
				fmt.Fprintf(c.Out, "Not logged in to %s\n", server)
				return nil
			}
			fmt.Fprintf(c.Out, "Removing login credentials for %s\n", server)
			return nil
		},
	}
}

// readPassword reads a line from the terminal on stdin with echo off.
func readPassword(in *bufio.Reader) string {
	fd := int(os.Stdin.Fd())
	if old, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
		noEcho := *old
		noEcho.Lflag &^= unix.ECHO
		if unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho) == nil {
			defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
		}
	}
	line, _ := in.ReadString('\n')
	return strings.TrimRight(line, "\r\n")
}
