package oci

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// StopSignal returns the signal that stops the container: the user's
// stop_signal, else the image's, else SIGTERM, as Docker. The OCI spec has
// no field for it; berthd keeps it with the container and the shim sends
// it. Names are taken with or without "SIG", in any case ("SIGTERM",
// "term"), as are numbers ("15") and "RTMIN+3" forms.
func StopSignal(cs *berthv1.ContainerSpec, img *berthv1.ImageConfig) (unix.Signal, error) {
	field, v := "stop_signal", cs.GetStopSignal()
	if v == "" {
		field, v = "image stop_signal", img.GetStopSignal()
	}
	if v == "" {
		return unix.SIGTERM, nil
	}
	sig, ok := parseSignal(v)
	if !ok {
		return 0, fmt.Errorf("%s: invalid signal %q (use a name like SIGTERM or SIGQUIT, or a number): %w", field, v, errdefs.ErrInvalidArgument)
	}
	return sig, nil
}

func parseSignal(v string) (unix.Signal, bool) {
	if n, err := strconv.Atoi(v); err == nil {
		return unix.Signal(n), n > 0 && n <= sigRTMax
	}
	name := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(v)), "SIG")
	for _, rt := range []struct {
		prefix string
		base   int
		sign   int
	}{{"RTMIN+", sigRTMin, 1}, {"RTMAX-", sigRTMax, -1}} {
		if rest, ok := strings.CutPrefix(name, rt.prefix); ok {
			n, err := strconv.Atoi(rest)
			s := rt.base + rt.sign*n
			return unix.Signal(s), err == nil && n >= 0 && s >= sigRTMin && s <= sigRTMax
		}
	}
	switch name {
	case "RTMIN":
		return sigRTMin, true
	case "RTMAX":
		return sigRTMax, true
	}
	s := unix.SignalNum("SIG" + name)
	return s, s != 0
}

// The real-time signal range as user space sees it (glibc and musl keep
// 32 and 33 for themselves).
const (
	sigRTMin = 34
	sigRTMax = 64
)
