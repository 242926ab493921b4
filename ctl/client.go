// Package ctl is berthctl: Docker's command habits over Berth's gRPC API.
package ctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// DefaultAddress is where berthd listens unless told otherwise.
const DefaultAddress = "unix:///run/berth/berth.sock"

// Client holds one connection to berthd and a stub per service.
type Client struct {
	conn    *grpc.ClientConn
	display string // the address as the user knows it, for errors

	System     berthv1.SystemServiceClient
	Namespaces berthv1.NamespacesServiceClient
	Containers berthv1.ContainersServiceClient
	Images     berthv1.ImagesServiceClient
	Tasks      berthv1.TasksServiceClient
	Events     berthv1.EventsServiceClient
	Networks   berthv1.NetworksServiceClient
}

// parseAddress turns "unix:///path", "/path" or "tcp://host:port" into a
// gRPC target and the form shown to users.
func parseAddress(addr string) (target, display string, err error) {
	switch {
	case strings.HasPrefix(addr, "unix://"):
		p := strings.TrimPrefix(addr, "unix://")
		if p == "" {
			return "", "", fmt.Errorf("address %q has no socket path", addr)
		}
		return "unix://" + p, p, nil
	case strings.HasPrefix(addr, "tcp://"):
		hp := strings.TrimPrefix(addr, "tcp://")
		if _, _, err := net.SplitHostPort(hp); err != nil {
			return "", "", fmt.Errorf("address %q: want tcp://host:port", addr)
		}
		return "dns:///" + hp, hp, nil
	case strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, "."):
		return "unix://" + addr, addr, nil
	}
	return "", "", fmt.Errorf("address %q: use unix:///path/to/berth.sock, a socket path, or tcp://host:port", addr)
}

// TLSFiles name the PEM files of a TCP connection with mutual TLS.
type TLSFiles struct {
	CA, Cert, Key string
}

func (f TLSFiles) enabled() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// credentials returns TLS transport credentials presenting the client
// certificate and trusting only the given CA.
func (f TLSFiles) credentials(serverName string) (credentials.TransportCredentials, error) {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return nil, fmt.Errorf("TLS needs --tlscacert, --tlscert and --tlskey together")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("--tlscert %s / --tlskey %s: %v", f.Cert, f.Key, err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("--tlscacert: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("--tlscacert %s holds no PEM certificate", f.CA)
	}
	return credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   serverName,
		MinVersion:   tls.VersionTLS12,
	}), nil
}

// Dial connects lazily: nothing is sent until the first call, whose
// failure to connect is then reported as ErrNoDaemon by Explain. TLS is
// used for tcp:// addresses when any TLS file is given.
func Dial(addr, namespace string, tlsFiles TLSFiles) (*Client, error) {
	target, display, err := parseAddress(addr)
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if tlsFiles.enabled() {
		if !strings.HasPrefix(addr, "tcp://") {
			return nil, fmt.Errorf("TLS flags apply to tcp:// addresses only, not %s", addr)
		}
		host, _, _ := net.SplitHostPort(display)
		if creds, err = tlsFiles.credentials(host); err != nil {
			return nil, err
		}
	}
	if namespace == "" {
		namespace = namespaces.Default
	}
	withNS := func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, namespaces.GRPCHeader, namespace)
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(creds),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(withNS(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(withNS(ctx), desc, cc, method, opts...)
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)),
	)
	if err != nil {
		return nil, err
	}
	// Dial now, in the background, while the command builds its request:
	// a connection otherwise starts with the first call.
	conn.Connect()
	return &Client{
		conn: conn, display: display,
		System:     berthv1.NewSystemServiceClient(conn),
		Namespaces: berthv1.NewNamespacesServiceClient(conn),
		Containers: berthv1.NewContainersServiceClient(conn),
		Images:     berthv1.NewImagesServiceClient(conn),
		Tasks:      berthv1.NewTasksServiceClient(conn),
		Events:     berthv1.NewEventsServiceClient(conn),
		Networks:   berthv1.NewNetworksServiceClient(conn),
	}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// ErrNoDaemon is reported when berthd cannot be reached at all.
var ErrNoDaemon = errors.New("cannot connect to berthd")

// Explain turns a gRPC error into what a user should read: the agent's
// message without the RPC wrapping, or a plain sentence when the agent is
// not there at all.
func (c *Client) Explain(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() == codes.OK {
		return err
	}
	if st.Code() == codes.Unavailable && isDialFailure(st.Message()) {
		return fmt.Errorf("%w at %s: is it running?", ErrNoDaemon, c.display)
	}
	return &APIError{Code: st.Code(), Message: st.Message()}
}

func isDialFailure(msg string) bool {
	for _, s := range []string{"connection refused", "no such file or directory", "connection error", "dial", "permission denied", "no route", "i/o timeout", "handshake", "certificate", "tls:"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// APIError is an error the agent answered with.
type APIError struct {
	Code    codes.Code
	Message string
}

func (e *APIError) Error() string {
	return "Error response from berthd: " + e.Message
}

// timeout is the deadline of short calls, so a wedged agent does not hang
// the CLI forever.
const timeout = 30 * time.Second

func shortContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, timeout)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
