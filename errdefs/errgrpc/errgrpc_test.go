package errgrpc

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/errdefs"
)

func TestToStatus(t *testing.T) {
	if ToStatus(nil) != nil {
		t.Fatal("nil error became a status")
	}
	for _, k := range kinds {
		err := ToStatus(fmt.Errorf("container x: %w", k.err))
		if st := status.Convert(err); st.Code() != k.code || st.Message() != "container x: "+k.err.Error() {
			t.Errorf("%v: got %v %q", k.err, st.Code(), st.Message())
		}
	}
	if c := status.Code(ToStatus(errors.New("plain"))); c != codes.Unknown {
		t.Errorf("plain error: %v", c)
	}
	already := status.Error(codes.Aborted, "x")
	if ToStatus(already) != already {
		t.Error("a status error was rewrapped")
	}
	if c := status.Code(ToStatus(fmt.Errorf("wait: %w", errdefs.ErrNotFound))); c != codes.NotFound {
		t.Errorf("not found: %v", c)
	}
}
