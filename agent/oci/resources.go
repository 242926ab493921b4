package oci

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// minMemory is Docker's smallest memory limit: below it the container's
// own runtime and init do not fit and it dies at start.
const minMemory = 6 << 20

// cfsPeriod is the CFS period Docker uses for --cpus (100ms in µs).
const cfsPeriod uint64 = 100000

// resources maps the user's limits to cgroup settings with Docker's
// semantics and validation (moby daemon_unix verifyPlatformContainerResources,
// adaptContainerSettings and WithResources).
func resources(r *berthv1.Resources, numCPU int) (*specs.LinuxResources, error) {
	out := &specs.LinuxResources{}
	if r == nil {
		return out, nil
	}

	// Memory. memory_swap is memory plus swap: -1 unlimited swap, 0 "twice
	// the memory" when a memory limit is set.
	mem, swap, res := r.GetMemoryBytes(), r.GetMemorySwapBytes(), r.GetMemoryReservationBytes()
	switch {
	case mem < 0:
		return nil, fmt.Errorf("resources.memory_bytes: %d is negative (0 means no limit): %w", mem, errdefs.ErrInvalidArgument)
	case mem > 0 && mem < minMemory:
		return nil, fmt.Errorf("resources.memory_bytes: minimum memory limit allowed is 6MB, got %d: %w", mem, errdefs.ErrInvalidArgument)
	case swap < -1:
		return nil, fmt.Errorf("resources.memory_swap_bytes: %d is invalid (-1 unlimited, 0 default, or memory+swap bytes): %w", swap, errdefs.ErrInvalidArgument)
	case swap != 0 && mem == 0:
		return nil, fmt.Errorf("resources.memory_swap_bytes: a swap limit needs a memory limit (set memory_bytes too): %w", errdefs.ErrInvalidArgument)
	case swap > 0 && swap < mem:
		return nil, fmt.Errorf("resources.memory_swap_bytes: %d is less than memory_bytes %d; it is memory plus swap, so it must be at least the memory limit: %w", swap, mem, errdefs.ErrInvalidArgument)
	case res < 0:
		return nil, fmt.Errorf("resources.memory_reservation_bytes: %d is negative: %w", res, errdefs.ErrInvalidArgument)
	case mem > 0 && res > mem:
		return nil, fmt.Errorf("resources.memory_reservation_bytes: %d is above the memory limit %d: %w", res, mem, errdefs.ErrInvalidArgument)
	}
	if mem > 0 || res > 0 {
		out.Memory = &specs.LinuxMemory{}
		if mem > 0 {
			out.Memory.Limit = i64(mem)
			if swap == 0 {
				swap = 2 * mem
			}
			out.Memory.Swap = i64(swap)
		}
		if res > 0 {
			out.Memory.Reservation = i64(res)
		}
	}

	// CPU.
	cpu := &specs.LinuxCPU{}
	setCPU := false
	nano, quota, period := r.GetNanoCpus(), r.GetCpuQuota(), r.GetCpuPeriod()
	switch {
	case nano < 0:
		return nil, fmt.Errorf("resources.nano_cpus: %d is negative: %w", nano, errdefs.ErrInvalidArgument)
	case nano > 0 && (quota != 0 || period != 0):
		return nil, fmt.Errorf("resources.nano_cpus: conflicting options: --cpus and --cpu-period/--cpu-quota cannot both be set: %w", errdefs.ErrInvalidArgument)
	case nano > int64(numCPU)*1e9:
		return nil, fmt.Errorf("resources.nano_cpus: range of CPUs is from 0.01 to %d.00, as there are only %d CPUs available: %w", numCPU, numCPU, errdefs.ErrInvalidArgument)
	case period != 0 && (period < 1000 || period > 1000000):
		return nil, fmt.Errorf("resources.cpu_period: %d µs is outside 1000-1000000 (1ms to 1s): %w", period, errdefs.ErrInvalidArgument)
	case quota != 0 && quota != -1 && quota < 1000:
		return nil, fmt.Errorf("resources.cpu_quota: %d µs is below 1000 (1ms), or use -1 for no limit: %w", quota, errdefs.ErrInvalidArgument)
	}
	if nano > 0 {
		p := cfsPeriod
		q := nano * int64(p) / 1e9
		if q < 1000 {
			// The kernel's floor is 1ms of quota; Docker lets 0.001 CPUs
			// through and the write fails at start.
			return nil, fmt.Errorf("resources.nano_cpus: %d is below 0.01 CPUs: %w", nano, errdefs.ErrInvalidArgument)
		}
		cpu.Period, cpu.Quota, setCPU = &p, &q, true
	}
	if period != 0 {
		p := period
		cpu.Period, setCPU = &p, true
	}
	if quota != 0 {
		cpu.Quota, setCPU = i64(quota), true
	}
	if s := r.GetCpuShares(); s != 0 {
		if s < 2 || s > 262144 {
			return nil, fmt.Errorf("resources.cpu_shares: %d is outside 2-262144 (1024 is the default weight): %w", s, errdefs.ErrInvalidArgument)
		}
		cpu.Shares, setCPU = &s, true
	}
	if c := r.GetCpusetCpus(); c != "" {
		if err := checkCPUList("resources.cpuset_cpus", c); err != nil {
			return nil, err
		}
		cpu.Cpus, setCPU = c, true
	}
	if m := r.GetCpusetMems(); m != "" {
		if err := checkCPUList("resources.cpuset_mems", m); err != nil {
			return nil, err
		}
		cpu.Mems, setCPU = m, true
	}
	if setCPU {
		out.CPU = cpu
	}

	// Pids: proto's 0 is "no limit"; Docker also takes negative values as
	// "unlimited" and writes -1 so that an update clears an old limit.
	switch p := r.GetPidsLimit(); {
	case p > 0:
		out.Pids = &specs.LinuxPids{Limit: i64(p)}
	case p < 0:
		out.Pids = &specs.LinuxPids{Limit: i64(-1)}
	}

	if w := r.GetBlkioWeight(); w != 0 {
		if w < 10 || w > 1000 {
			return nil, fmt.Errorf("resources.blkio_weight: range of blkio weight is from 10 to 1000, got %d: %w", w, errdefs.ErrInvalidArgument)
		}
		wt := uint16(w)
		out.BlockIO = &specs.LinuxBlockIO{Weight: &wt}
	}
	return out, nil
}

// checkCPUList validates the cpuset list format "0-3,5,7-8".
func checkCPUList(field, s string) error {
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.ParseUint(lo, 10, 16)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.ParseUint(hi, 10, 16)
		}
		if err1 != nil || err2 != nil || b < a {
			return fmt.Errorf("%s: invalid list %q (use e.g. 0-3,5): %w", field, s, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// rlimitNames are the ulimit names Docker accepts (docker/go-units). "as"
// is left out as there: an address-space limit breaks the runtime's own
// start-up long before it protects anything.
var rlimitNames = map[string]int{
	"core":       unix.RLIMIT_CORE,
	"cpu":        unix.RLIMIT_CPU,
	"data":       unix.RLIMIT_DATA,
	"fsize":      unix.RLIMIT_FSIZE,
	"locks":      unix.RLIMIT_LOCKS,
	"memlock":    unix.RLIMIT_MEMLOCK,
	"msgqueue":   unix.RLIMIT_MSGQUEUE,
	"nice":       unix.RLIMIT_NICE,
	"nofile":     unix.RLIMIT_NOFILE,
	"nproc":      unix.RLIMIT_NPROC,
	"rss":        unix.RLIMIT_RSS,
	"rtprio":     unix.RLIMIT_RTPRIO,
	"rttime":     unix.RLIMIT_RTTIME,
	"sigpending": unix.RLIMIT_SIGPENDING,
	"stack":      unix.RLIMIT_STACK,
}

// HostHardLimit returns the agent's own hard limit for an RLIMIT_* type,
// which is the most a container can get without CAP_SYS_RESOURCE.
func HostHardLimit(rlimitType string) (uint64, error) {
	name := strings.ToLower(strings.TrimPrefix(rlimitType, "RLIMIT_"))
	res, ok := rlimitNames[name]
	if !ok {
		return 0, fmt.Errorf("unknown rlimit %q: %w", rlimitType, errdefs.ErrInvalidArgument)
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(res, &rl); err != nil {
		return 0, fmt.Errorf("getrlimit %s: %w", rlimitType, err)
	}
	return rl.Max, nil
}

// rlimits returns Docker's default RLIMIT_NOFILE and the user's ulimits
// (which replace a default of the same name), each lowered to the host's
// hard limit. Raising a hard limit needs CAP_SYS_RESOURCE, which an agent
// in a VM or a user namespace may lack; setrlimit would then fail with
// EPERM at start, so the limit is clamped and the clamp logged instead.
func rlimits(ulimits []*berthv1.Ulimit, hostHard func(string) (uint64, error), clamped func(typ string, asked, got uint64)) ([]specs.POSIXRlimit, error) {
	var out []specs.POSIXRlimit
	seen := map[string]bool{}
	for i, u := range ulimits {
		field := fmt.Sprintf("ulimits[%d]", i)
		name := strings.ToLower(strings.TrimSpace(u.GetName()))
		if _, ok := rlimitNames[name]; !ok {
			return nil, fmt.Errorf("%s: invalid ulimit type %q (use e.g. nofile, nproc, core, memlock, stack): %w", field, u.GetName(), errdefs.ErrInvalidArgument)
		}
		if seen[name] {
			return nil, fmt.Errorf("%s: ulimit %q given twice: %w", field, name, errdefs.ErrInvalidArgument)
		}
		seen[name] = true
		if u.GetSoft() > u.GetHard() {
			return nil, fmt.Errorf("%s: ulimit %s soft limit %d is above its hard limit %d: %w", field, name, u.GetSoft(), u.GetHard(), errdefs.ErrInvalidArgument)
		}
		out = append(out, specs.POSIXRlimit{Type: "RLIMIT_" + strings.ToUpper(name), Soft: u.GetSoft(), Hard: u.GetHard()})
	}
	if !seen["nofile"] {
		out = append(out, specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Soft: DefaultNofile, Hard: DefaultNofile})
	}
	for i := range out {
		max, err := hostHard(out[i].Type)
		if err != nil {
			return nil, err
		}
		if out[i].Hard > max {
			clamped(out[i].Type, out[i].Hard, max)
			out[i].Hard = max
		}
		if out[i].Soft > out[i].Hard {
			out[i].Soft = out[i].Hard
		}
	}
	return out, nil
}

// AgentOOMScoreAdj reads berthd's own oom_score_adj. A container's cannot
// be set below it without CAP_SYS_RESOURCE.
func AgentOOMScoreAdj() (int, error) {
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// sysctlAllowed is Docker's list of sysctls that are namespaced and thus
// safe to set per container (docker/cli opts.ValidateSysctl); net.* needs
// the container's own network namespace.
func checkSysctl(key string, hostNetwork bool) error {
	switch key {
	case "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
		"kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced":
		return nil
	}
	if strings.HasPrefix(key, "fs.mqueue.") {
		return nil
	}
	if strings.HasPrefix(key, "net.") {
		if hostNetwork {
			return fmt.Errorf("sysctls: %q cannot be set with the host network, it would change the host: %w", key, errdefs.ErrInvalidArgument)
		}
		return nil
	}
	return fmt.Errorf("sysctls: %q is not namespaced and so cannot be set per container (allowed: net.*, fs.mqueue.*, kernel.msg*, kernel.sem, kernel.shm*): %w", key, errdefs.ErrInvalidArgument)
}

// sysctlExists tells whether the host kernel has a sysctl; runtimes fail
// on an unknown one, so defaults are only added where they exist. Only a
// couple of keys are ever asked and the answer does not change while the
// agent runs, so it is remembered.
var sysctlExists = func(key string) bool {
	if v, ok := sysctlSeen.Load(key); ok {
		return v.(bool)
	}
	_, err := os.Stat("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
	sysctlSeen.Store(key, err == nil)
	return err == nil
}

var sysctlSeen sync.Map

var numCPU = runtime.NumCPU
