package runtime

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/errdefs"
)

func TestParseBootstrapProtocol(t *testing.T) {
	b, err := parseBootstrap([]byte(`{"version":1,"address":"unix:///run/s.sock","pid":7,"protocol":"ttrpc"}`))
	if err != nil {
		t.Fatalf("ttrpc shim refused: %v", err)
	}
	if b.GetPid() != 7 || b.GetAddress() != "unix:///run/s.sock" {
		t.Fatalf("parsed %v", b)
	}
	for _, proto := range []string{"grpc", ""} {
		_, err := parseBootstrap([]byte(`{"version":1,"address":"unix:///run/s.sock","pid":7,"protocol":"` + proto + `"}`))
		if !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("protocol %q: got %v, want a failed precondition", proto, err)
		}
		if !strings.Contains(err.Error(), `"ttrpc"`) || !strings.Contains(err.Error(), `"`+proto+`"`) {
			t.Fatalf("protocol %q: the error should name both protocols: %v", proto, err)
		}
	}
	if _, err := parseBootstrap([]byte(`{"version":2,"protocol":"ttrpc"}`)); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("version 2: got %v, want a failed precondition", err)
	}
}

func TestTransportStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{ttrpc.ErrClosed, codes.Unavailable},
		{context.Canceled, codes.Canceled},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{status.Error(codes.NotFound, "no such exec"), codes.NotFound},
	} {
		if got := status.Code(transportStatus(tc.err)); got != tc.want {
			t.Errorf("%v: code %v, want %v", tc.err, got, tc.want)
		}
	}
	if transportStatus(nil) != nil {
		t.Error("nil error got a status")
	}
	// The errdefs kind follows the status through fromStatus.
	if err := fromStatus(ttrpc.ErrClosed, "state"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("closed connection: %v is not unavailable", err)
	}
}
