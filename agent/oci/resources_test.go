package oci

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func TestCPUs(t *testing.T) {
	old := numCPU
	numCPU = func() int { return 4 }
	defer func() { numCPU = old }()

	s := generate(t, testInput(t, &berthv1.ContainerSpec{Resources: &berthv1.Resources{NanoCpus: 500_000_000}}))
	cpu := s.Linux.Resources.CPU
	if cpu == nil || cpu.Quota == nil || cpu.Period == nil || *cpu.Quota != 50000 || *cpu.Period != 100000 {
		t.Fatalf("--cpus 0.5: cpu %+v, want quota 50000 period 100000", cpu)
	}

	s = generate(t, testInput(t, &berthv1.ContainerSpec{Resources: &berthv1.Resources{
		CpuShares: 512, CpuQuota: 20000, CpuPeriod: 50000, CpusetCpus: "0-1,3", CpusetMems: "0",
	}}))
	cpu = s.Linux.Resources.CPU
	if *cpu.Shares != 512 || *cpu.Quota != 20000 || *cpu.Period != 50000 || cpu.Cpus != "0-1,3" || cpu.Mems != "0" {
		t.Errorf("cpu %+v", cpu)
	}

	for _, tc := range []struct {
		r     *berthv1.Resources
		words []string
	}{
		{&berthv1.Resources{NanoCpus: 5_000_000_000}, []string{"resources.nano_cpus", "4 CPUs"}},
		{&berthv1.Resources{NanoCpus: 1_000_000_000, CpuQuota: 1000}, []string{"resources.nano_cpus", "conflicting"}},
		{&berthv1.Resources{NanoCpus: 1_000_000}, []string{"resources.nano_cpus", "0.01"}},
		{&berthv1.Resources{CpuPeriod: 10}, []string{"resources.cpu_period"}},
		{&berthv1.Resources{CpuQuota: 10}, []string{"resources.cpu_quota"}},
		{&berthv1.Resources{CpuShares: 1}, []string{"resources.cpu_shares"}},
		{&berthv1.Resources{CpusetCpus: "0-"}, []string{"resources.cpuset_cpus", "0-"}},
		{&berthv1.Resources{CpusetMems: "a"}, []string{"resources.cpuset_mems"}},
		{&berthv1.Resources{BlkioWeight: 5}, []string{"resources.blkio_weight"}},
		{&berthv1.Resources{OomScoreAdj: 1001}, []string{"resources.oom_score_adj"}},
	} {
		_, err := Generate(t.Context(), testInput(t, &berthv1.ContainerSpec{Resources: tc.r}))
		wantInvalid(t, err, tc.words...)
	}
}

func TestMemory(t *testing.T) {
	const m = 512 << 20
	for _, tc := range []struct {
		name              string
		mem, swap, res    int64
		wantLimit         int64
		wantSwap, wantRes *int64
	}{
		{name: "swap 0 is twice the memory", mem: m, wantLimit: m, wantSwap: i64(2 * m)},
		{name: "swap -1 is unlimited", mem: m, swap: -1, wantLimit: m, wantSwap: i64(-1)},
		{name: "swap is memory plus swap", mem: m, swap: 3 * m, wantLimit: m, wantSwap: i64(3 * m)},
		{name: "swap equal to memory disables swap", mem: m, swap: m, wantLimit: m, wantSwap: i64(m)},
		{name: "reservation", mem: m, res: m / 2, wantLimit: m, wantSwap: i64(2 * m), wantRes: i64(m / 2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := generate(t, testInput(t, &berthv1.ContainerSpec{Resources: &berthv1.Resources{
				MemoryBytes: tc.mem, MemorySwapBytes: tc.swap, MemoryReservationBytes: tc.res,
			}}))
			mem := s.Linux.Resources.Memory
			if mem == nil || mem.Limit == nil || *mem.Limit != tc.wantLimit {
				t.Fatalf("memory %+v, want limit %d", mem, tc.wantLimit)
			}
			if (mem.Swap == nil) != (tc.wantSwap == nil) || mem.Swap != nil && *mem.Swap != *tc.wantSwap {
				t.Errorf("swap %v, want %v", mem.Swap, tc.wantSwap)
			}
			if (mem.Reservation == nil) != (tc.wantRes == nil) || mem.Reservation != nil && *mem.Reservation != *tc.wantRes {
				t.Errorf("reservation %v, want %v", mem.Reservation, tc.wantRes)
			}
		})
	}
	for _, tc := range []struct {
		r    *berthv1.Resources
		word string
	}{
		{&berthv1.Resources{MemoryBytes: 1 << 20}, "resources.memory_bytes"},
		{&berthv1.Resources{MemoryBytes: -1}, "resources.memory_bytes"},
		{&berthv1.Resources{MemorySwapBytes: m}, "resources.memory_swap_bytes"},
		{&berthv1.Resources{MemoryBytes: m, MemorySwapBytes: m / 2}, "resources.memory_swap_bytes"},
		{&berthv1.Resources{MemoryBytes: m, MemorySwapBytes: -2}, "resources.memory_swap_bytes"},
		{&berthv1.Resources{MemoryBytes: m, MemoryReservationBytes: 2 * m}, "resources.memory_reservation_bytes"},
	} {
		_, err := Generate(t.Context(), testInput(t, &berthv1.ContainerSpec{Resources: tc.r}))
		wantInvalid(t, err, tc.word)
	}
}

func TestPidsAndBlkio(t *testing.T) {
	s := generate(t, testInput(t, &berthv1.ContainerSpec{Resources: &berthv1.Resources{PidsLimit: 100, BlkioWeight: 300}}))
	r := s.Linux.Resources
	if r.Pids == nil || *r.Pids.Limit != 100 || r.BlockIO == nil || *r.BlockIO.Weight != 300 {
		t.Errorf("pids %+v blkio %+v", r.Pids, r.BlockIO)
	}
	s = generate(t, testInput(t, &berthv1.ContainerSpec{Resources: &berthv1.Resources{PidsLimit: -5}}))
	if r := s.Linux.Resources; r.Pids == nil || *r.Pids.Limit != -1 {
		t.Errorf("negative pids limit: %+v, want -1 (unlimited)", r.Pids)
	}
}

func TestRlimits(t *testing.T) {
	ul := func(name string, soft, hard uint64) *berthv1.Ulimit {
		return &berthv1.Ulimit{Name: name, Soft: soft, Hard: hard}
	}
	for _, tc := range []struct {
		name    string
		hostMax uint64
		ulimits []*berthv1.Ulimit
		want    []specs.POSIXRlimit
	}{
		{"default nofile fits", 1 << 21, nil, []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 1048576, Hard: 1048576}}},
		{"default nofile clamped", 20000, nil, []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 20000, Hard: 20000}}},
		{"user nofile replaces the default", 20000, []*berthv1.Ulimit{ul("nofile", 1024, 4096)}, []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 1024, Hard: 4096}}},
		{"user limits clamped, soft follows", 5000,
			[]*berthv1.Ulimit{ul("NPROC", 100, 1000000), ul("core", 9000, 9000)},
			[]specs.POSIXRlimit{{Type: "RLIMIT_NPROC", Soft: 100, Hard: 5000}, {Type: "RLIMIT_CORE", Soft: 5000, Hard: 5000}, {Type: "RLIMIT_NOFILE", Soft: 5000, Hard: 5000}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := testInput(t, &berthv1.ContainerSpec{Ulimits: tc.ulimits})
			in.HostHardLimit = func(string) (uint64, error) { return tc.hostMax, nil }
			equal(t, "rlimits", generate(t, in).Process.Rlimits, tc.want)
		})
	}
	for _, tc := range []struct {
		u     []*berthv1.Ulimit
		words []string
	}{
		{[]*berthv1.Ulimit{ul("nofiles", 1, 1)}, []string{"ulimits[0]", "nofiles"}},
		{[]*berthv1.Ulimit{ul("nofile", 10, 5)}, []string{"ulimits[0]", "soft"}},
		{[]*berthv1.Ulimit{ul("core", 0, 0), ul("core", 1, 1)}, []string{"ulimits[1]", "twice"}},
	} {
		_, err := Generate(t.Context(), testInput(t, &berthv1.ContainerSpec{Ulimits: tc.u}))
		wantInvalid(t, err, tc.words...)
	}
}

// TestRlimitClampSubprocess lowers its own hard RLIMIT_NOFILE in a child
// process (a process may always lower it) and checks that Generate, using
// the real host limit, never asks for more.
func TestRlimitClampSubprocess(t *testing.T) {
	if os.Getenv("BERTH_OCI_RLIMIT_CHILD") == "1" {
		lim := unix.Rlimit{Cur: 512, Max: 512}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
		in := testInput(t, &berthv1.ContainerSpec{Ulimits: []*berthv1.Ulimit{{Name: "nproc", Soft: 1 << 62, Hard: 1 << 62}}})
		in.HostHardLimit = nil
		s := generate(t, in)
		json.NewEncoder(os.Stdout).Encode(s.Process.Rlimits)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRlimitClampSubprocess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BERTH_OCI_RLIMIT_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var got []specs.POSIXRlimit
	dec := json.NewDecoder(bytes.NewReader(out))
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	var nproc unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &nproc); err != nil {
		t.Fatal(err)
	}
	want := []specs.POSIXRlimit{
		{Type: "RLIMIT_NPROC", Soft: min(1<<62, nproc.Max), Hard: min(1<<62, nproc.Max)},
		{Type: "RLIMIT_NOFILE", Soft: 512, Hard: 512},
	}
	equal(t, "rlimits", got, want)
}

func TestOOMScoreAdj(t *testing.T) {
	for _, tc := range []struct{ floor, asked, want int }{
		{0, 0, 0},
		{0, 500, 500},
		{0, -500, 0},
		{-500, -200, -200},
		{300, 100, 300},
	} {
		in := testInput(t, &berthv1.ContainerSpec{Resources: &berthv1.Resources{OomScoreAdj: int32(tc.asked)}})
		in.AgentOOMScoreAdj = &tc.floor
		if got := *generate(t, in).Process.OOMScoreAdj; got != tc.want {
			t.Errorf("agent %d, asked %d: got %d, want %d", tc.floor, tc.asked, got, tc.want)
		}
	}
	// The real agent value is readable here.
	in := testInput(t, &berthv1.ContainerSpec{})
	in.AgentOOMScoreAdj = nil
	generate(t, in)
}
