package oci

import (
	"fmt"
	"path"
	"strings"

	"github.com/berth-dev/berth/errdefs"
)

// mergeArgs applies Docker's rules for the command line (moby daemon
// merge + create):
//   - a user entrypoint replaces the image's and discards the image's cmd,
//     so `--entrypoint sh` does not run `sh <image cmd>`;
//   - without a user entrypoint, the user's cmd replaces the image's cmd
//     and the image's entrypoint stays;
//   - an entrypoint of exactly [""] is `--entrypoint ""`: it clears the
//     entrypoint (the image's too) and is how a proto3 list, which cannot
//     tell "unset" from "empty", says "reset". The image's cmd is then
//     still dropped unless the user gave a cmd, as in Docker.
//
// The result is entrypoint followed by cmd; an empty result is an error,
// as Docker's "no command specified".
func mergeArgs(userEntrypoint, userCmd, imageEntrypoint, imageCmd []string) ([]string, error) {
	var entrypoint, cmd []string
	if len(userEntrypoint) > 0 {
		entrypoint, cmd = userEntrypoint, userCmd
	} else {
		entrypoint, cmd = imageEntrypoint, userCmd
		if len(cmd) == 0 {
			cmd = imageCmd
		}
	}
	if len(entrypoint) == 1 && entrypoint[0] == "" {
		entrypoint = nil
	}
	args := make([]string, 0, len(entrypoint)+len(cmd))
	args = append(args, entrypoint...)
	args = append(args, cmd...)
	if len(args) == 0 {
		return nil, fmt.Errorf("cmd: no command specified: the image has no entrypoint or cmd, give one (berthctl run IMAGE COMMAND or --entrypoint): %w", errdefs.ErrInvalidArgument)
	}
	if args[0] == "" {
		return nil, fmt.Errorf("cmd: the command to run is an empty string: %w", errdefs.ErrInvalidArgument)
	}
	return args, nil
}

// mergeEnv builds the process environment as Docker does: PATH (default),
// HOSTNAME, and TERM=xterm with a tty come first; then the container's
// config env, which is the user's entries followed by the image's entries
// whose key the user did not set (moby daemon merge), replaces those or is
// appended (moby ReplaceOrAppendEnvValues). An entry without "=" unsets
// the key. Empty keys are refused.
func mergeEnv(userEnv, imageEnv []string, hostname string, tty bool) ([]string, error) {
	config := make([]string, 0, len(userEnv)+len(imageEnv))
	userKeys := make(map[string]bool, len(userEnv))
	for _, e := range userEnv {
		k, _, _ := strings.Cut(e, "=")
		if k == "" {
			return nil, fmt.Errorf("env: entry %q has no name (use KEY=VALUE): %w", e, errdefs.ErrInvalidArgument)
		}
		userKeys[k] = true
		config = append(config, e)
	}
	for _, e := range imageEnv {
		k, _, _ := strings.Cut(e, "=")
		if k == "" || userKeys[k] {
			continue
		}
		config = append(config, e)
	}

	env := make([]string, 0, 3+len(config))
	env = append(env, "PATH="+DefaultPath, "HOSTNAME="+hostname)
	if tty {
		env = append(env, "TERM=xterm")
	}
	index := make(map[string]int, cap(env))
	for i, e := range env {
		k, _, _ := strings.Cut(e, "=")
		index[k] = i
	}
	for _, e := range config {
		k, _, hasValue := strings.Cut(e, "=")
		i, exists := index[k]
		switch {
		case !hasValue && exists:
			env[i] = "" // removed below
		case !hasValue:
		case exists:
			env[i] = e
		default:
			index[k] = len(env)
			env = append(env, e)
		}
	}
	out := env[:0]
	for _, e := range env {
		if e != "" {
			out = append(out, e)
		}
	}
	return out, nil
}

// workingDir picks the user's working directory, else the image's, else
// "/". Docker refuses relative paths rather than guessing what they are
// relative to.
func workingDir(user, image string) (string, error) {
	wd := user
	if wd == "" {
		wd = image
	}
	if wd == "" {
		return "/", nil
	}
	if !path.IsAbs(wd) {
		return "", fmt.Errorf("working_dir: %q is not an absolute path (use e.g. /app): %w", wd, errdefs.ErrInvalidArgument)
	}
	return path.Clean(wd), nil
}

// validHostname accepts RFC 1123 labels, as the CLI does for --hostname:
// the kernel takes any 64 bytes, but a hostname with spaces or slashes
// breaks /etc/hosts and every tool that reads it.
func validHostname(field, h string) error {
	if len(h) > 64 {
		return fmt.Errorf("%s: %q is longer than 64 bytes: %w", field, h, errdefs.ErrInvalidArgument)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%s: %q is not a valid hostname (letters, digits, '-' and '.'): %w", field, h, errdefs.ErrInvalidArgument)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("%s: %q is not a valid hostname (letters, digits, '-' and '.'): %w", field, h, errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}
