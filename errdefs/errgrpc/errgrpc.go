// Package errgrpc maps errdefs kinds to gRPC status codes. It is the one
// mapping both API edges use: berthd's public API and the shim's API.
// Inside either process errors stay plain Go errors wrapped with %w.
package errgrpc

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/errdefs"
)

// kinds are checked in order; the first that err wraps decides the code.
var kinds = []struct {
	err  error
	code codes.Code
}{
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{errdefs.ErrNotFound, codes.NotFound},
	{errdefs.ErrAlreadyExists, codes.AlreadyExists},
	{errdefs.ErrInvalidArgument, codes.InvalidArgument},
	{errdefs.ErrFailedPrecondition, codes.FailedPrecondition},
	{errdefs.ErrUnavailable, codes.Unavailable},
	{errdefs.ErrNotImplemented, codes.Unimplemented},
	{errdefs.ErrPermissionDenied, codes.PermissionDenied},
	{errdefs.ErrUnauthenticated, codes.Unauthenticated},
	{errdefs.ErrAborted, codes.Aborted},
	{errdefs.ErrDataLoss, codes.DataLoss},
	{errdefs.ErrResourceExhausted, codes.ResourceExhausted},
}

// ToStatus returns err as a gRPC status error: unchanged if it already is
// one, else with the code of the errdefs kind it wraps (Unknown for none)
// and its message.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Unknown
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			code = k.code
			break
		}
	}
	return status.Error(code, err.Error())
}
