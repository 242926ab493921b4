package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// pki writes a CA and certificates signed by it into dir.
type pki struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T, dir, name string) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{dir: dir, cert: cert, key: key}
	writePEM(t, filepath.Join(dir, name+".pem"), "CERTIFICATE", der)
	return p
}

// issue writes <name>.pem and <name>-key.pem; server certificates are for 127.0.0.1.
func (p *pki) issue(t *testing.T, name string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestRemoteClientsNeedACertificateFromTheCA(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir, "ca")
	serverCert, serverKey := ca.issue(t, "server", true)
	clientCert, clientKey := ca.issue(t, "client", false)
	rogue := newCA(t, dir, "rogue-ca")
	rogueCert, rogueKey := rogue.issue(t, "rogue", false)
	caFile := filepath.Join(dir, "ca.pem")

	addr := freePort(t)
	d := newDaemon(t)
	d.extra = []string{"--tcp-address", addr, "--tls-cert", serverCert, "--tls-key", serverKey, "--tls-ca", caFile}
	d.start()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctl := filepath.Join(binDir, "berthctl")
	ok := runCmd(ctx, nil, ctl, "-a", "tcp://"+addr, "--tlscacert", caFile, "--tlscert", clientCert, "--tlskey", clientKey, "info")
	if ok.Code != 0 || !strings.Contains(ok.Stdout, "Root Dir: "+d.root) {
		t.Fatalf("client with a certificate from the CA: %+v", ok)
	}
	env := runCmd(ctx, []string{"BERTH_ADDRESS=tcp://" + addr, "BERTH_TLS_CA=" + caFile, "BERTH_TLS_CERT=" + clientCert, "BERTH_TLS_KEY=" + clientKey}, ctl, "version")
	if env.Code != 0 || !strings.Contains(env.Stdout, "Server:") {
		t.Fatalf("TLS from the environment: %+v", env)
	}

	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	call := func(cfg *tls.Config) error {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			return err
		}
		defer conn.Close()
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		_, err = berthv1.NewSystemServiceClient(conn).Version(cctx, &berthv1.VersionRequest{})
		return err
	}
	if err := call(&tls.Config{RootCAs: pool}); err == nil {
		t.Fatal("a client with no certificate was served on the TLS port")
	}
	rogueKeyPair, err := tls.LoadX509KeyPair(rogueCert, rogueKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := call(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{rogueKeyPair}}); err == nil {
		t.Fatal("a client with a certificate from another CA was served")
	}
	goodPair, _ := tls.LoadX509KeyPair(clientCert, clientKey)
	if err := call(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{goodPair}}); err != nil {
		t.Fatalf("good client: %v", err)
	}
	// berthctl without TLS flags against the TLS port cannot connect.
	plain := runCmd(ctx, nil, ctl, "-a", "tcp://"+addr, "info")
	if plain.Code != 1 || !strings.Contains(plain.Stderr, "cannot connect to berthd at "+addr) {
		t.Fatalf("plaintext client on the TLS port: %+v", plain)
	}
}

func TestPlainTCPOnlyWhenInsecure(t *testing.T) {
	addr := freePort(t)
	d := newDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d.extra = []string{"--tcp-address", addr}
	r := runCmd(ctx, nil, filepath.Join(binDir, "berthd"), d.args()...)
	if r.Code == 0 || !strings.Contains(r.Stderr, "mutual TLS") || !strings.Contains(r.Stderr, "insecure") {
		t.Fatalf("plain TCP without --insecure-tcp: %+v", r)
	}
	d.extra = []string{"--tcp-address", addr, "--insecure-tcp"}
	d.start()
	r = runCmd(ctx, nil, filepath.Join(binDir, "berthctl"), "-a", "tcp://"+addr, "info")
	if r.Code != 0 || !strings.Contains(r.Stdout, "Root Dir: "+d.root) {
		t.Fatalf("insecure TCP: %+v", r)
	}
}
