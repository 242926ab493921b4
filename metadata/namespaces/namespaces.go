// Package namespaces carries the Berth namespace of a request in its
// context, and names the gRPC metadata key clients put it in.
//
// Every object (image, container, task) lives in one namespace, so two
// clients (berthctl and, later, the CRI) can share one agent without
// seeing each other's objects.
package namespaces

import (
	"context"

	"github.com/berth-dev/berth/metadata/identifiers"
)

const (
	// GRPCHeader is the gRPC metadata key that carries the namespace.
	GRPCHeader = "berth-namespace"
	// Default is the namespace of requests that name none.
	Default = "default"
)

type key struct{}

// WithNamespace returns a context carrying namespace ns.
func WithNamespace(ctx context.Context, ns string) context.Context {
	return context.WithValue(ctx, key{}, ns)
}

// FromContext returns the context's namespace, or Default when it has none.
func FromContext(ctx context.Context) string {
	if ns, ok := ctx.Value(key{}).(string); ok && ns != "" {
		return ns
	}
	return Default
}

// Validate checks a namespace name.
func Validate(ns string) error { return identifiers.Validate("namespace", ns) }
