package oci

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// FuzzGenerate feeds arbitrary user-controlled strings through Generate:
// it must never panic, and every refusal must be a kind the API maps.
func FuzzGenerate(f *testing.F) {
	f.Add("bob:staff", "A=1", "/data", "size=64m", "NET_ADMIN", "64m", "nofile")
	f.Add("", "=", "rel", "size=", "ALL", "", "")
	f.Add(":", "X", "/", "mode=99999", "cap_", "1.5q", "NOFILE")
	f.Fuzz(func(t *testing.T, user, env, dst, tmpfsOpt, capName, shm, ulimit string) {
		in := testInput(t, &berthv1.ContainerSpec{
			User:    user,
			Env:     []string{env},
			Mounts:  []*berthv1.Mount{{Type: "tmpfs", Destination: dst, Options: []string{tmpfsOpt}}},
			CapAdd:  []string{capName},
			ShmSize: shm,
			Ulimits: []*berthv1.Ulimit{{Name: ulimit, Soft: 1, Hard: 2}},
		})
		writeFile(t, filepath.Join(in.Rootfs, "etc/passwd"), testPasswd)
		writeFile(t, filepath.Join(in.Rootfs, "etc/group"), testGroup)
		_, err := Generate(t.Context(), in)
		if err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Fatalf("unexpected kind of error: %v", err)
		}
	})
}
