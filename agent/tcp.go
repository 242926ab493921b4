package agent

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"

	"github.com/berth-dev/berth/errdefs"
)

// ListenTCP opens the TCP listener for remote clients. With TLS it demands
// a client certificate that chains to the configured CA (mutual TLS):
// whoever can call berthd controls the host, so a server certificate
// alone is not enough. Plain TCP is served only when configured insecure.
//
// TLS is terminated on the listener rather than with gRPC transport
// credentials because one grpc.Server also serves the Unix socket, which
// needs none.
func (a *Agent) ListenTCP() error {
	c := a.cfg.TCP
	var l net.Listener
	var err error
	if c.Insecure {
		l, err = net.Listen("tcp", c.Address)
		if err == nil {
			a.log.Warn("serving plain TCP without TLS: anyone who can reach this port controls the host", "address", c.Address)
		}
	} else {
		var cfg *tls.Config
		if cfg, err = serverTLS(c.TLSCert, c.TLSKey, c.TLSCA); err != nil {
			return err
		}
		l, err = tls.Listen("tcp", c.Address, cfg)
	}
	if err != nil {
		return fmt.Errorf("listen on tcp %s: %w", c.Address, err)
	}
	a.listeners = append(a.listeners, l)
	a.log.Info("serving", "address", "tcp://"+l.Addr().String(), "tls", !c.Insecure)
	return nil
}

func serverTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls cert %s / key %s: %v: %w", certFile, keyFile, err, errdefs.ErrInvalidArgument)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls ca %s: %w", caFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("tls ca %s holds no PEM certificate: %w", caFile, errdefs.ErrInvalidArgument)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
		// gRPC clients require HTTP/2 to be negotiated by ALPN.
		NextProtos: []string{"h2"},
	}, nil
}
