package oci

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/berth-dev/berth/errdefs"
)

// knownCaps are the capabilities Linux defines, indexed by their number,
// up to CAP_CHECKPOINT_RESTORE (5.9). Privileged containers get them in
// this order, as Docker's do.
var knownCaps = []string{
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_DAC_READ_SEARCH",
	"CAP_FOWNER",
	"CAP_FSETID",
	"CAP_KILL",
	"CAP_SETGID",
	"CAP_SETUID",
	"CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST",
	"CAP_NET_ADMIN",
	"CAP_NET_RAW",
	"CAP_IPC_LOCK",
	"CAP_IPC_OWNER",
	"CAP_SYS_MODULE",
	"CAP_SYS_RAWIO",
	"CAP_SYS_CHROOT",
	"CAP_SYS_PTRACE",
	"CAP_SYS_PACCT",
	"CAP_SYS_ADMIN",
	"CAP_SYS_BOOT",
	"CAP_SYS_NICE",
	"CAP_SYS_RESOURCE",
	"CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG",
	"CAP_MKNOD",
	"CAP_LEASE",
	"CAP_AUDIT_WRITE",
	"CAP_AUDIT_CONTROL",
	"CAP_SETFCAP",
	"CAP_MAC_OVERRIDE",
	"CAP_MAC_ADMIN",
	"CAP_SYSLOG",
	"CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND",
	"CAP_AUDIT_READ",
	"CAP_PERFMON",
	"CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// KnownCapabilities returns every capability name Berth knows, in kernel
// order. The slice is new on each call.
func KnownCapabilities() []string {
	return append([]string(nil), knownCaps...)
}

// AgentCapabilities returns the capabilities in berthd's own effective
// set, in kernel order. A container cannot be given more than its agent
// holds (the kernel refuses to raise them), so, as Docker does, these are
// what --privileged and --cap-add ALL mean. When /proc cannot be read,
// every known capability is returned and the runtime has the last word.
// The set is read once; the slice is new on each call.
func AgentCapabilities() []string {
	return append([]string(nil), agentCaps()...)
}

var agentCaps = sync.OnceValue(func() []string {
	eff, err := readCapEff("/proc/self/status")
	if err != nil {
		return KnownCapabilities()
	}
	var out []string
	for i, name := range knownCaps {
		if eff&(1<<uint(i)) != 0 {
			out = append(out, name)
		}
	}
	return out
})

func readCapEff(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no CapEff line", path)
}

// normalizeCaps upper-cases names and adds the CAP_ prefix, as Docker
// accepts "net_admin", "NET_ADMIN" and "CAP_NET_ADMIN" alike. "ALL" passes
// through. Unknown names, and names the agent itself lacks, are refused.
func normalizeCaps(field string, in []string, available map[string]bool) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, c := range in {
		c = strings.ToUpper(strings.TrimSpace(c))
		if c == "ALL" {
			out = append(out, c)
			continue
		}
		if !strings.HasPrefix(c, "CAP_") {
			c = "CAP_" + c
		}
		if !isKnownCap(c) {
			return nil, fmt.Errorf("%s: unknown capability %q (names are like NET_ADMIN or CAP_NET_ADMIN; see capabilities(7)): %w", field, c, errdefs.ErrInvalidArgument)
		}
		if !available[c] {
			return nil, fmt.Errorf("%s: capability %q is not supported by the kernel or not held by berthd, so no container can have it: %w", field, c, errdefs.ErrInvalidArgument)
		}
		out = append(out, c)
	}
	return out, nil
}

func isKnownCap(c string) bool {
	for _, k := range knownCaps {
		if k == c {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// capabilitySet applies Docker's rules (moby oci/caps.TweakCapabilities):
// privileged means every available capability; "ALL" in cap_add means every
// available one except those dropped; "ALL" in cap_drop means only those
// added; otherwise the defaults minus the drops plus the adds. Unlike
// Docker the result has no duplicates (cap_add of a default capability).
func capabilitySet(adds, drops []string, privileged bool, available []string) ([]string, error) {
	if privileged {
		return append([]string(nil), available...), nil
	}
	avail := make(map[string]bool, len(available))
	for _, c := range available {
		avail[c] = true
	}
	add, err := normalizeCaps("cap_add", adds, avail)
	if err != nil {
		return nil, err
	}
	drop, err := normalizeCaps("cap_drop", drops, avail)
	if err != nil {
		return nil, err
	}
	var out []string
	appendNew := func(c string) {
		if c != "ALL" && !contains(out, c) {
			out = append(out, c)
		}
	}
	switch {
	case contains(add, "ALL"):
		for _, c := range available {
			if !contains(drop, c) {
				appendNew(c)
			}
		}
	case contains(drop, "ALL"):
		for _, c := range add {
			appendNew(c)
		}
	default:
		for _, c := range DefaultCapabilities() {
			if !contains(drop, c) {
				appendNew(c)
			}
		}
		for _, c := range add {
			appendNew(c)
		}
	}
	if out == nil {
		out = []string{}
	}
	return out, nil
}
