package oci

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// VolumeResolver returns the host directory that backs a named volume,
// creating the volume when it does not exist yet. An empty name asks for
// a new anonymous volume.
type VolumeResolver func(ctx context.Context, name string) (hostPath string, err error)

var propagationModes = map[string]bool{
	"private": true, "rprivate": true,
	"shared": true, "rshared": true,
	"slave": true, "rslave": true,
}

// userMounts turns the ContainerSpec's mounts into OCI mounts, validated,
// in an order where a parent is mounted before what lies under it.
func userMounts(ctx context.Context, in []*berthv1.Mount, resolve VolumeResolver) ([]specs.Mount, error) {
	out := make([]specs.Mount, 0, len(in))
	seen := make(map[string]bool, len(in))
	for i, m := range in {
		field := fmt.Sprintf("mounts[%d]", i)
		if m == nil {
			return nil, fmt.Errorf("%s: empty mount: %w", field, errdefs.ErrInvalidArgument)
		}
		dst, err := mountDestination(field, m.GetDestination())
		if err != nil {
			return nil, err
		}
		if seen[dst] {
			return nil, fmt.Errorf("%s: duplicate mount point %s (each destination may be mounted once): %w", field, dst, errdefs.ErrInvalidArgument)
		}
		seen[dst] = true

		switch m.GetType() {
		case "bind", "volume":
			src := m.GetSource()
			if m.GetType() == "volume" {
				if resolve == nil {
					return nil, fmt.Errorf("%s: volume %q: volumes are not available in this agent (use a bind mount): %w", field, src, errdefs.ErrNotImplemented)
				}
				if src, err = resolve(ctx, m.GetSource()); err != nil {
					return nil, fmt.Errorf("%s: volume %q: %w", field, m.GetSource(), err)
				}
			}
			if !path.IsAbs(src) {
				return nil, fmt.Errorf("%s: bind source %q is not an absolute host path (use -v /host/dir:%s): %w", field, src, dst, errdefs.ErrInvalidArgument)
			}
			opts, err := bindOptions(field, m.GetOptions(), m.GetReadOnly(), m.GetType() == "volume")
			if err != nil {
				return nil, err
			}
			out = append(out, specs.Mount{Destination: dst, Type: "bind", Source: path.Clean(src), Options: opts})
		case "tmpfs":
			if m.GetSource() != "" {
				return nil, fmt.Errorf("%s: a tmpfs mount takes no source (got %q): %w", field, m.GetSource(), errdefs.ErrInvalidArgument)
			}
			opts, err := tmpfsOptions(field, m.GetOptions(), m.GetReadOnly())
			if err != nil {
				return nil, err
			}
			out = append(out, specs.Mount{Destination: dst, Type: "tmpfs", Source: "tmpfs", Options: opts})
		default:
			return nil, fmt.Errorf("%s: mount type %q is not one of bind, tmpfs, volume: %w", field, m.GetType(), errdefs.ErrInvalidArgument)
		}
	}
	// Docker sorts by the number of path elements so that /a is mounted
	// before /a/b whatever order the user gave; stable keeps the rest.
	sort.SliceStable(out, func(i, j int) bool {
		return depth(out[i].Destination) < depth(out[j].Destination)
	})
	return out, nil
}

func depth(p string) int {
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}

func mountDestination(field, dst string) (string, error) {
	if dst == "" {
		return "", fmt.Errorf("%s: destination is empty: %w", field, errdefs.ErrInvalidArgument)
	}
	if !path.IsAbs(dst) {
		return "", fmt.Errorf("%s: destination %q is not an absolute path in the container (use e.g. /data): %w", field, dst, errdefs.ErrInvalidArgument)
	}
	dst = path.Clean(dst)
	if dst == "/" {
		return "", fmt.Errorf("%s: destination can't be '/' (mount under it, or change the image): %w", field, errdefs.ErrInvalidArgument)
	}
	return dst, nil
}

// bindOptions returns rbind (or bind), ro when asked, and a propagation
// mode, rprivate by default, as Docker's -v.
func bindOptions(field string, in []string, readOnly, volume bool) ([]string, error) {
	bindMode, prop := "rbind", ""
	for _, o := range in {
		switch o = strings.TrimSpace(o); {
		case o == "ro" || o == "readonly":
			readOnly = true
		case o == "rw":
			readOnly = false
		case o == "bind" || o == "rbind":
			bindMode = o
		case propagationModes[o]:
			if prop != "" && prop != o {
				return nil, fmt.Errorf("%s: conflicting propagation modes %q and %q: %w", field, prop, o, errdefs.ErrInvalidArgument)
			}
			prop = o
		case o == "z" || o == "Z":
			// SELinux relabelling: Berth has no SELinux support; Docker
			// ignores these where SELinux is off, and so does Berth.
		case o == "nocopy" && volume:
			// Docker's "don't copy image content into a new volume";
			// the volume resolver owns that choice.
		default:
			return nil, fmt.Errorf("%s: unknown bind option %q (use ro, rw, bind, rbind, [r]private, [r]shared, [r]slave): %w", field, o, errdefs.ErrInvalidArgument)
		}
	}
	if prop == "" {
		prop = "rprivate"
	}
	opts := []string{bindMode}
	if readOnly {
		opts = append(opts, "ro")
	}
	opts = append(opts, prop)
	return opts, nil
}

// tmpfsSizeRE is what the kernel's tmpfs takes for size=: bytes with an
// optional k/m/g/t/p/e suffix, or a percentage of RAM.
var tmpfsSizeRE = regexp.MustCompile(`^[0-9]+([kKmMgGtTpPeE]|%)?$`)

var tmpfsFlags = map[string]string{
	// flag: the flag it cancels
	"exec": "noexec", "noexec": "exec",
	"suid": "nosuid", "nosuid": "suid",
	"dev": "nodev", "nodev": "dev",
	"ro": "rw", "rw": "ro",
	"atime": "noatime", "noatime": "atime",
	"relatime": "norelatime", "norelatime": "relatime",
	"strictatime": "nostrictatime", "nostrictatime": "strictatime",
	"diratime": "nodiratime", "nodiratime": "diratime",
	"sync": "async", "async": "sync",
	"dirsync": "",
	"mand":    "nomand", "nomand": "mand",
}

// tmpfsOptions starts from Docker's noexec,nosuid,nodev,rprivate and lets
// the user's options override them (--tmpfs /run:exec,size=64m), as moby's
// MergeTmpfsOptions: a later flag cancels its opposite, a later key=value
// replaces the same key. Sizes, modes and ids are checked here so that a
// typo fails at create, not as EINVAL from mount(2) at start.
func tmpfsOptions(field string, in []string, readOnly bool) ([]string, error) {
	var all []string
	for _, o := range in {
		// --tmpfs /run:size=64m,mode=1777 may arrive as one string.
		for _, p := range strings.Split(o, ",") {
			if p = strings.TrimSpace(p); p != "" {
				all = append(all, p)
			}
		}
	}
	opts := []string{"noexec", "nosuid", "nodev", "rprivate"}
	if readOnly {
		all = append(all, "ro")
	}
	for _, o := range all {
		if k, v, ok := strings.Cut(o, "="); ok {
			if err := checkTmpfsData(field, k, v); err != nil {
				return nil, err
			}
			opts = removeOption(opts, func(s string) bool { return strings.HasPrefix(s, k+"=") })
			opts = append(opts, o)
			continue
		}
		if propagationModes[o] {
			opts = removeOption(opts, func(s string) bool { return propagationModes[s] })
			opts = append(opts, o)
			continue
		}
		opposite, ok := tmpfsFlags[o]
		if !ok {
			return nil, fmt.Errorf("%s: unknown tmpfs option %q (use e.g. size=64m,mode=1777,exec,ro): %w", field, o, errdefs.ErrInvalidArgument)
		}
		opts = removeOption(opts, func(s string) bool { return s == o || (opposite != "" && s == opposite) })
		opts = append(opts, o)
	}
	return opts, nil
}

func removeOption(opts []string, drop func(string) bool) []string {
	out := opts[:0]
	for _, o := range opts {
		if !drop(o) {
			out = append(out, o)
		}
	}
	return out
}

func checkTmpfsData(field, k, v string) error {
	switch k {
	case "size", "nr_blocks", "nr_inodes":
		if !tmpfsSizeRE.MatchString(v) || (k != "size" && strings.HasSuffix(v, "%")) {
			return fmt.Errorf("%s: bad tmpfs %s %q (use bytes with an optional k, m or g suffix, e.g. size=64m): %w", field, k, v, errdefs.ErrInvalidArgument)
		}
	case "mode":
		if n, err := strconv.ParseUint(v, 8, 32); err != nil || n > 0o7777 {
			return fmt.Errorf("%s: bad tmpfs mode %q (use octal, e.g. mode=1777): %w", field, v, errdefs.ErrInvalidArgument)
		}
	case "uid", "gid":
		if n, err := strconv.ParseUint(v, 10, 32); err != nil || n > maxID {
			return fmt.Errorf("%s: bad tmpfs %s %q (use a number): %w", field, k, v, errdefs.ErrInvalidArgument)
		}
	case "huge", "mpol", "noswap", "inode64", "inode32":
	default:
		return fmt.Errorf("%s: unknown tmpfs option %q: %w", field, k+"="+v, errdefs.ErrInvalidArgument)
	}
	return nil
}

// ramInBytesRE is docker/go-units RAMInBytes: a number, an optional
// space, then b, k, m, g, t or p with optional "i" and "b", binary units.
var ramInBytesRE = regexp.MustCompile(`^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$`)

// parseSize reads a size as Docker's --shm-size and --memory do ("64m",
// "1g", "512MiB", "1048576").
func parseSize(field, s string) (int64, error) {
	m := ramInBytesRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("%s: invalid size %q (use bytes or a number with k, m, g suffix, e.g. 64m): %w", field, s, errdefs.ErrInvalidArgument)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("%s: invalid size %q: %w", field, s, errdefs.ErrInvalidArgument)
	}
	mult := map[string]float64{"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}[strings.ToLower(m[2])]
	v := n * mult
	if v >= 1<<63 {
		return 0, fmt.Errorf("%s: size %q is too large: %w", field, s, errdefs.ErrInvalidArgument)
	}
	return int64(v), nil
}
