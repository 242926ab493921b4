package container

// Capabilities without libcap: capset(2) with the v3 ABI for the
// effective, permitted and inheritable sets, prctl(2) for the bounding and
// ambient sets. Both act on the calling thread only, which is why the init
// runs locked to the thread that will execve.

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// CapabilityNumber returns the kernel's number for a capability name such
// as "CAP_NET_ADMIN" (the "CAP_" prefix and case are optional).
func CapabilityNumber(name string) (int, bool) {
	n := strings.ToUpper(name)
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	for i, c := range capNames {
		if c == n {
			return i, true
		}
	}
	return 0, false
}

// CapabilityMask turns names into the 64-bit mask /proc/<pid>/status
// shows (CapEff etc.). Unknown names are an error.
func CapabilityMask(names []string) (uint64, error) {
	var m uint64
	for _, n := range names {
		i, ok := CapabilityNumber(n)
		if !ok {
			return 0, fmt.Errorf("unknown capability %q: %w", n, unix.EINVAL)
		}
		m |= 1 << uint(i)
	}
	return m, nil
}

// hostCaps returns the kernel's last capability and this process's
// bounding set, read once: a preforked init reads them ahead (neither
// changes before its bootstrap), and the init then reads neither file nor
// the 41 bits again.
var hostCaps = sync.OnceValues(func() (last int, bounding uint64) {
	last = len(capNames) - 1
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			last = n
		}
	}
	for i := 0; i <= last && i < 64; i++ {
		if ok, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(i), 0, 0, 0); err == nil && ok == 1 {
			bounding |= 1 << uint(i)
		}
	}
	return last, bounding
})

// capSets is the spec's capabilities as masks, clamped to what this
// process may hold.
type capSets struct {
	bounding, effective, permitted, inheritable, ambient uint64
}

// resolveCaps clamps the spec's sets to the host's bounding set: a
// capability the host withholds (here CAP_SYS_RESOURCE) cannot be granted,
// and asking for it would make capset fail; it is dropped with a warning.
func resolveCaps(c *specs.LinuxCapabilities) (capSets, []string, error) {
	var s capSets
	if c == nil {
		return s, nil, nil
	}
	_, host := hostCaps()
	var warnings []string
	var dropped uint64
	for _, x := range []struct {
		names []string
		dst   *uint64
	}{
		{c.Bounding, &s.bounding}, {c.Effective, &s.effective}, {c.Permitted, &s.permitted},
		{c.Inheritable, &s.inheritable}, {c.Ambient, &s.ambient},
	} {
		m, err := CapabilityMask(x.names)
		if err != nil {
			return s, nil, err
		}
		dropped |= m &^ host
		*x.dst = m & host
	}
	if dropped != 0 {
		var names []string
		for i := 0; i < 64; i++ {
			if dropped&(1<<uint(i)) != 0 && i < len(capNames) {
				names = append(names, capNames[i])
			}
		}
		warnings = append(warnings, fmt.Sprintf("capabilities not in the host's bounding set, dropped: %s", strings.Join(names, ",")))
	}
	return s, warnings, nil
}

// dropBounding removes from the bounding set everything not in keep.
func dropBounding(keep uint64) error {
	last, had := hostCaps()
	for i := 0; i <= last && i < 64; i++ {
		if keep&(1<<uint(i)) != 0 || had&(1<<uint(i)) == 0 {
			continue // kept, or not there to drop
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(i), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop %s from the bounding set: %w", capName(i), err)
		}
	}
	return nil
}

// applyCaps sets the effective, permitted and inheritable sets, then the
// ambient set (whose members must already be permitted and inheritable).
func applyCaps(s capSets) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	for _, set := range []struct {
		m   uint64
		dst func(d *unix.CapUserData) *uint32
	}{
		{s.effective, func(d *unix.CapUserData) *uint32 { return &d.Effective }},
		{s.permitted, func(d *unix.CapUserData) *uint32 { return &d.Permitted }},
		{s.inheritable, func(d *unix.CapUserData) *uint32 { return &d.Inheritable }},
	} {
		*set.dst(&data[0]) = uint32(set.m)
		*set.dst(&data[1]) = uint32(set.m >> 32)
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && err != unix.EINVAL {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	for i := 0; i < 64; i++ {
		if s.ambient&(1<<uint(i)) == 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(i), 0, 0); err != nil {
			return fmt.Errorf("raise ambient %s (it must be permitted and inheritable too): %w", capName(i), err)
		}
	}
	return nil
}

func capName(i int) string {
	if i < len(capNames) {
		return capNames[i]
	}
	return "cap " + strconv.Itoa(i)
}
