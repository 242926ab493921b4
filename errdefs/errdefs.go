// Package errdefs holds the sentinel errors every Berth package wraps with
// %w, so that callers test kinds of failure with errors.Is and the API edge
// alone maps them to gRPC status codes.
//
// It is a top-level package, not part of agent/, because the metadata
// store, the snapshotters, the content store and the shim all return these
// kinds and none of them may import the agent.
package errdefs

import "errors"

// The kinds of failure. Wrap them with context that names the object and,
// where there is one, the fix: fmt.Errorf("container %q: %w", id, ErrNotFound).
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrUnavailable        = errors.New("unavailable")
	ErrNotImplemented     = errors.New("not implemented")
	ErrPermissionDenied   = errors.New("permission denied")
	ErrUnauthenticated    = errors.New("authentication required")
	ErrAborted            = errors.New("aborted")
	ErrDataLoss           = errors.New("data loss")
	ErrResourceExhausted  = errors.New("resource exhausted")
)

// IsNotFound reports whether err is, or wraps, ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsAlreadyExists reports whether err is, or wraps, ErrAlreadyExists.
func IsAlreadyExists(err error) bool { return errors.Is(err, ErrAlreadyExists) }

// IsInvalidArgument reports whether err is, or wraps, ErrInvalidArgument.
func IsInvalidArgument(err error) bool { return errors.Is(err, ErrInvalidArgument) }

// IsFailedPrecondition reports whether err is, or wraps, ErrFailedPrecondition.
func IsFailedPrecondition(err error) bool { return errors.Is(err, ErrFailedPrecondition) }
