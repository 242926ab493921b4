package container

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/berth-dev/berth/errdefs"
)

// Stages of the init at which an InitError can happen.
const (
	StageBootstrap  = "bootstrap"
	StageNamespaces = "namespaces"
	StageRootfs     = "rootfs"
	StageConsole    = "console"
	StageProcess    = "process" // rlimits, hostname, sysctls, oom score
	StageLookup     = "lookup"  // finding the executable
	StageUser       = "user"    // uid/gid, capabilities, no_new_privs
	StageSeccomp    = "seccomp"
	StageExec       = "exec"
)

// InitError is a failure the container init reported before execve. It
// unwraps to its errno and to an errdefs kind, so callers can use
// errors.Is(err, errdefs.ErrNotFound) or errors.Is(err, syscall.ENOENT).
type InitError struct {
	Stage   string        `json:"stage"`
	Message string        `json:"message"`
	Errno   syscall.Errno `json:"errno,omitempty"`
}

func (e *InitError) Error() string {
	return fmt.Sprintf("container init (%s): %s", e.Stage, e.Message)
}

// Unwrap exposes the errno and the matching errdefs kind.
func (e *InitError) Unwrap() []error {
	var out []error
	if e.Errno != 0 {
		out = append(out, e.Errno)
	}
	switch e.Errno {
	case syscall.ENOENT:
		out = append(out, errdefs.ErrNotFound)
	case syscall.EACCES, syscall.EPERM:
		out = append(out, errdefs.ErrPermissionDenied)
	case syscall.EINVAL:
		out = append(out, errdefs.ErrInvalidArgument)
	}
	return out
}

// ExitCode is the exit status a shell would give for this failure, for a
// caller that reports the process as exited rather than failed: 127 when
// the executable does not exist, 126 when it exists but cannot be run,
// 128 otherwise (Docker's "container init failed" code is 128 too).
func (e *InitError) ExitCode() int {
	if e.Stage == StageLookup || e.Stage == StageExec {
		switch e.Errno {
		case syscall.ENOENT, syscall.ENOTDIR:
			return 127
		case syscall.EACCES, syscall.EPERM, syscall.ENOEXEC, syscall.EISDIR:
			return 126
		}
	}
	return 128
}

// newInitError wraps err for the parent, keeping its errno if it has one.
func newInitError(stage string, err error) *InitError {
	ie := &InitError{Stage: stage, Message: err.Error()}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		ie.Errno = errno
	}
	return ie
}
