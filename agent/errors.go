package agent

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/errdefs/errgrpc"
	"github.com/berth-dev/berth/metadata/namespaces"
)

// toStatus maps an internal error to a gRPC status at the API edge: inside
// berthd errors stay plain Go errors wrapped with %w.
func toStatus(err error) error { return errgrpc.ToStatus(err) }

// namespaceExempt lists the services whose calls are not about objects in
// a namespace, so the namespace need not exist for them.
var namespaceExempt = []string{
	"/berth.v1.NamespacesService/",
	"/berth.v1.SystemService/",
	"/grpc.health.v1.Health/",
	"/grpc.reflection.",
}

// requestContext puts the request's namespace into ctx, validated. For
// calls about namespaced objects the namespace must exist (the default one
// springs into existence on first write).
func (a *Agent) requestContext(ctx context.Context, method string) (context.Context, error) {
	ns := namespaces.Default
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(namespaces.GRPCHeader); len(v) > 0 && v[0] != "" {
			ns = v[0]
		}
	}
	if err := namespaces.Validate(ns); err != nil {
		return ctx, err
	}
	ctx = namespaces.WithNamespace(ctx, ns)
	for _, p := range namespaceExempt {
		if strings.HasPrefix(method, p) {
			return ctx, nil
		}
	}
	if ns != namespaces.Default {
		if _, err := a.db.Namespaces().Get(ctx, ns); err != nil {
			return ctx, err
		}
	}
	return ctx, nil
}

func (a *Agent) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := a.requestContext(ctx, info.FullMethod)
	if err != nil {
		return nil, toStatus(err)
	}
	begin := time.Now()
	resp, err := handler(ctx, req)
	if err != nil {
		a.logCallError(info.FullMethod, err)
	}
	a.log.Debug("call", "method", info.FullMethod, "took", time.Since(begin))
	return resp, toStatus(err)
}

type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

func (a *Agent) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := a.requestContext(ss.Context(), info.FullMethod)
	if err != nil {
		return toStatus(err)
	}
	begin := time.Now()
	err = handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
	a.log.Debug("call", "method", info.FullMethod, "took", time.Since(begin))
	if err != nil && !errors.Is(err, context.Canceled) {
		a.logCallError(info.FullMethod, err)
	}
	return toStatus(err)
}

// logCallError logs failures the client may not report: internal errors
// at error level, the client's own mistakes at debug.
func (a *Agent) logCallError(method string, err error) {
	level := slog.LevelError
	for _, kind := range []error{errdefs.ErrNotFound, errdefs.ErrAlreadyExists, errdefs.ErrInvalidArgument,
		errdefs.ErrFailedPrecondition, errdefs.ErrNotImplemented, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, kind) {
			level = slog.LevelDebug
			break
		}
	}
	a.log.Log(context.Background(), level, "call failed", "method", method, "error", err)
}
