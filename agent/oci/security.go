package oci

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/errdefs"
)

// securityOpts is the parsed --security-opt list.
type securityOpts struct {
	noNewPrivileges bool
	// seccomp is "" for Docker's default profile, "unconfined", or a JSON
	// profile (the CLI sends the file's content, as Docker's does).
	seccomp         string
	apparmor        string
	unmaskPaths     bool
	writableCgroups bool
}

// parseSecurityOpts reads Docker's --security-opt forms: "key=value", the
// legacy "key:value", and a bare "no-new-privileges".
func parseSecurityOpts(in []string) (securityOpts, error) {
	var s securityOpts
	for i, opt := range in {
		field := fmt.Sprintf("security_opt[%d]", i)
		if opt == "no-new-privileges" {
			s.noNewPrivileges = true
			continue
		}
		k, v, ok := strings.Cut(opt, "=")
		if !ok {
			k, v, ok = strings.Cut(opt, ":")
		}
		if !ok {
			return s, fmt.Errorf("%s: invalid security option %q (use key=value, e.g. seccomp=unconfined, no-new-privileges): %w", field, opt, errdefs.ErrInvalidArgument)
		}
		parseBool := func() (bool, error) {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return false, fmt.Errorf("%s: invalid value %q for %s (use true or false): %w", field, v, k, errdefs.ErrInvalidArgument)
			}
			return b, nil
		}
		var err error
		switch k {
		case "no-new-privileges":
			s.noNewPrivileges, err = parseBool()
		case "seccomp":
			switch {
			case v == "unconfined":
				s.seccomp = v
			case v == "builtin" || v == "":
				s.seccomp = ""
			case strings.HasPrefix(strings.TrimSpace(v), "{"):
				s.seccomp = v
			default:
				err = fmt.Errorf("%s: seccomp value %q is not \"unconfined\", \"builtin\" or a JSON profile (the client reads a profile file and sends its content): %w", field, v, errdefs.ErrInvalidArgument)
			}
		case "apparmor":
			s.apparmor = v
		case "systempaths":
			if v != "unconfined" {
				err = fmt.Errorf("%s: systempaths only takes \"unconfined\": %w", field, errdefs.ErrInvalidArgument)
			}
			s.unmaskPaths = true
		case "writable-cgroups":
			s.writableCgroups, err = parseBool()
		case "label":
			// SELinux: Berth does not label. "disable" asks for what Berth
			// does anyway; anything else would be silently not enforced.
			if v != "disable" {
				err = fmt.Errorf("%s: SELinux labels are not supported by Berth (only label=disable): %w", field, errdefs.ErrNotImplemented)
			}
		default:
			err = fmt.Errorf("%s: unknown security option %q (known: no-new-privileges, seccomp, apparmor, systempaths, writable-cgroups, label): %w", field, k, errdefs.ErrInvalidArgument)
		}
		if err != nil {
			return s, err
		}
	}
	return s, nil
}
