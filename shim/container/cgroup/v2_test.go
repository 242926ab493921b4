package cgroup

import (
	"errors"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
)

func ptr[T any](v T) *T { return &v }

func TestV2Files(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    *specs.LinuxResources
		files []v2File
		ctrl  []string
	}{
		{
			name: "docker --cpus 0.5 --cpu-shares 1024 --cpuset-cpus 0-1",
			in: &specs.LinuxResources{CPU: &specs.LinuxCPU{
				Shares: ptr(uint64(1024)), Quota: ptr(int64(50000)), Period: ptr(uint64(100000)), Cpus: "0-1",
			}},
			files: []v2File{{File: "cpu.weight", Value: "100"}, {File: "cpu.max", Value: "50000 100000"}, {File: "cpuset.cpus", Value: "0-1"}},
			ctrl:  []string{"cpu", "cpuset"},
		},
		{
			name:  "quota without period uses the default period; -1 is max",
			in:    &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr(int64(-1))}},
			files: []v2File{{File: "cpu.max", Value: "max 100000"}},
			ctrl:  []string{"cpu"},
		},
		{
			name: "memory 32m, memory+swap 64m",
			in: &specs.LinuxResources{Memory: &specs.LinuxMemory{
				Limit: ptr(int64(32 << 20)), Swap: ptr(int64(64 << 20)), Reservation: ptr(int64(16 << 20)),
			}},
			files: []v2File{{File: "memory.low", Value: "16777216"}, {File: "memory.swap.max", Value: "33554432"}, {File: "memory.max", Value: "33554432"}},
			ctrl:  []string{"memory"},
		},
		{
			name:  "swap equal to memory disables swap",
			in:    &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(1 << 20)), Swap: ptr(int64(1 << 20))}},
			files: []v2File{{File: "memory.swap.max", Value: "0"}, {File: "memory.max", Value: "1048576"}},
			ctrl:  []string{"memory"},
		},
		{
			name:  "unlimited swap is max, not a negative number",
			in:    &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(1 << 20)), Swap: ptr(int64(-1))}},
			files: []v2File{{File: "memory.swap.max", Value: "max"}, {File: "memory.max", Value: "1048576"}},
			ctrl:  []string{"memory"},
		},
		{
			name:  "pids",
			in:    &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr(int64(10))}},
			files: []v2File{{File: "pids.max", Value: "10"}},
			ctrl:  []string{"pids"},
		},
		{
			name:  "pids 0 is unlimited",
			in:    &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr(int64(0))}},
			files: []v2File{{File: "pids.max", Value: "max"}},
			ctrl:  []string{"pids"},
		},
		{
			name: "blkio weight and throttles",
			in: &specs.LinuxResources{BlockIO: &specs.LinuxBlockIO{
				Weight:                  ptr(uint16(500)),
				ThrottleReadBpsDevice:   []specs.LinuxThrottleDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 8, Minor: 0}, Rate: 1048576}},
				ThrottleWriteIOPSDevice: []specs.LinuxThrottleDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 8, Minor: 0}, Rate: 100}},
			}},
			files: []v2File{
				{File: "io.bfq.weight", Value: "500", Alt: "io.weight", AltVal: "default 4950"},
				{File: "io.max", Value: "8:0 rbps=1048576"},
				{File: "io.max", Value: "8:0 wiops=100"},
			},
			ctrl: []string{"io"},
		},
		{
			name:  "unified passes through",
			in:    &specs.LinuxResources{Unified: map[string]string{"memory.high": "1000000", "cgroup.freeze": "0"}},
			files: []v2File{{File: "cgroup.freeze", Value: "0"}, {File: "memory.high", Value: "1000000"}},
			ctrl:  []string{"memory"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files, ctrl, err := v2Files(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(files, tc.files) {
				t.Errorf("files\n got %+v\nwant %+v", files, tc.files)
			}
			if !reflect.DeepEqual(ctrl, tc.ctrl) {
				t.Errorf("controllers %v, want %v", ctrl, tc.ctrl)
			}
		})
	}
}

func TestV2FilesInvalid(t *testing.T) {
	for name, in := range map[string]*specs.LinuxResources{
		"swap without memory": {Memory: &specs.LinuxMemory{Swap: ptr(int64(1 << 20))}},
		"swap below memory":   {Memory: &specs.LinuxMemory{Limit: ptr(int64(2 << 20)), Swap: ptr(int64(1 << 20))}},
		"unified escape":      {Unified: map[string]string{"../x": "1"}},
	} {
		if _, _, err := v2Files(in); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", name, err)
		}
	}
}

func TestGroupPath(t *testing.T) {
	for _, tc := range []struct{ parent, id, want string }{
		{"", "web", "/berth/web"},
		{"custom", "web", "/custom/web"},
		{"/a/b/", "web", "/a/b/web"},
	} {
		got, err := GroupPath(tc.parent, tc.id)
		if err != nil || got != tc.want {
			t.Errorf("GroupPath(%q, %q) = %q, %v; want %q", tc.parent, tc.id, got, err, tc.want)
		}
	}
	for _, id := range []string{"", "..", "a/b"} {
		if _, err := GroupPath("", id); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("GroupPath(%q) err = %v", id, err)
		}
	}
}
