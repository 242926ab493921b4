package oci

import (
	"testing"

	"golang.org/x/sys/unix"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

func TestStopSignal(t *testing.T) {
	for _, tc := range []struct {
		user, image string
		want        unix.Signal
	}{
		{"", "", unix.SIGTERM},
		{"", "SIGQUIT", unix.SIGQUIT},
		{"sigint", "SIGQUIT", unix.SIGINT},
		{"KILL", "", unix.SIGKILL},
		{"15", "", unix.SIGTERM},
		{"SIGRTMIN+3", "", 37},
		{"RTMAX-1", "", 63},
	} {
		got, err := StopSignal(&berthv1.ContainerSpec{StopSignal: tc.user}, &berthv1.ImageConfig{StopSignal: tc.image})
		if err != nil || got != tc.want {
			t.Errorf("user %q image %q: %v, %v; want %v", tc.user, tc.image, got, err, tc.want)
		}
	}
	for _, bad := range []string{"SIGFOO", "0", "65", "RTMIN+40", "RTMIN+x"} {
		_, err := StopSignal(&berthv1.ContainerSpec{StopSignal: bad}, nil)
		wantInvalid(t, err, "stop_signal", bad)
	}
	_, err := StopSignal(nil, &berthv1.ImageConfig{StopSignal: "nope"})
	wantInvalid(t, err, "image stop_signal", "nope")
}

func TestGenerateRefusesBadStopSignal(t *testing.T) {
	_, err := Generate(t.Context(), testInput(t, &berthv1.ContainerSpec{StopSignal: "SIGNOPE"}))
	wantInvalid(t, err, "stop_signal", "SIGNOPE")
}
