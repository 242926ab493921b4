// Package integration runs Berth's real binaries as root: a berthd per test
// in a private root and state dir on its own socket, driven through
// berthctl, grpcurl and gRPC clients. Every test stops what it started and
// removes its directories, even when it fails.
package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/berth-dev/berth/integration/fixture"
	"github.com/berth-dev/berth/metadata/namespaces"
)

// binDir holds berthd, berth-shim and berthctl: $BERTH_BIN (make test
// builds them there) or a fresh build for this run.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration tests run as root: they create namespaces, mounts and cgroups (run 'sudo make test')")
		return 1
	}
	binDir = os.Getenv("BERTH_BIN")
	if binDir == "" {
		dir, err := os.MkdirTemp("", "berth-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		for _, b := range []string{"berthd", "berth-shim", "berthctl"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b), "../cmd/"+b)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintln(os.Stderr, "build", b, err)
				return 1
			}
		}
		binDir = dir
	}
	code := m.Run()
	removeTestBridge(testBridge)
	return code
}

// Test daemons whose config has no [network] section get this default
// network rather than the host's berth0: a private bridge and subnet
// that the end of the run removes, with its iptables rules.
const (
	testBridge       = "bit-def"
	testBridgeSubnet = "10.202.250.0/24"
)

// removeTestBridge deletes bridge and every iptables rule naming it.
func removeTestBridge(bridge string) {
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		return
	}
	table := ""
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "*") {
			table = l[1:]
		}
		if strings.HasPrefix(l, "-A ") && strings.Contains(l, " "+bridge+" ") {
			args := append([]string{"-w", "5", "-t", table, "-D"}, splitRule(l[3:])...)
			if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "cleanup: iptables %v: %v %s\n", args, err, out)
			}
		}
	}
	exec.Command("ip", "link", "del", bridge).Run()
}

// daemon is one berthd under test.
type daemon struct {
	t       testing.TB
	root    string
	state   string
	socket  string
	config  string
	extra   []string
	cmd     *exec.Cmd
	logs    *syncBuffer
	exited  chan struct{}
	exitErr error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemonOption changes how newDaemon sets berthd up.
type daemonOption func(*daemon)

// withConfig writes a config file for berthd and passes --config.
func withConfig(toml string) daemonOption {
	return func(d *daemon) {
		d.config = filepath.Join(d.root, "..", "config.toml")
		if err := os.WriteFile(d.config, []byte(toml), 0o644); err != nil {
			d.t.Fatal(err)
		}
	}
}

// newDaemon prepares (but does not start) a berthd with private dirs. The
// state dir lives under /tmp with a short name: a socket path must fit in
// sun_path's 108 bytes.
func newDaemon(t testing.TB, opts ...daemonOption) *daemon {
	t.Helper()
	base, err := os.MkdirTemp("", "berth-it-")
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{
		t:      t,
		root:   filepath.Join(base, "root"),
		state:  filepath.Join(base, "state"),
		socket: filepath.Join(base, "state", "berth.sock"),
	}
	for _, o := range opts {
		o(d)
	}
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			if d.logs != nil {
				t.Logf("berthd log:\n%s", d.logs.String())
			}
			d.cleanupAfterFailure(base)
		}
		os.RemoveAll(base)
	})
	return d
}

// cleanupAfterFailure removes what a failed test may have left running:
// shims outlive berthd by design, and a test that stopped half-way did
// not remove its containers. This daemon's shims are killed (their
// containers die with them); a fresh berthd then settles their tasks
// (unmounts, cgroups, networks) and removes every container; what is
// still mounted under base is unmounted last.
func (d *daemon) cleanupAfterFailure(base string) {
	killShimsOf(d.state)
	d.logs = &syncBuffer{}
	cmd := exec.Command(filepath.Join(binDir, "berthd"), d.args()...)
	cmd.Stdout, cmd.Stderr = d.logs, d.logs
	if cmd.Start() == nil {
		d.cmd, d.exited = cmd, make(chan struct{})
		go func() { d.exitErr = cmd.Wait(); close(d.exited) }()
		for i := 0; i < 500; i++ {
			if _, code := d.ctlQuiet("version"); code == 0 {
				nss, _ := d.ctlQuiet("namespace", "ls", "-q")
				for _, ns := range append(strings.Fields(nss), "default") {
					if out, code := d.ctlQuiet("ps", "-aq", "--namespace", ns); code == 0 {
						for _, id := range strings.Fields(out) {
							d.ctlQuiet("rm", "-f", "--namespace", ns, id)
						}
					}
				}
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		d.stop()
		killShimsOf(d.state) // the warm ones a stop leaves are gone already
	}
	for _, m := range mountsUnder(base) {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
}

// killShimsOf kills, with SIGKILL, every process started with --state
// state (the shims of one test's daemon).
func killShimsOf(state string) {
	pids, _ := fixture.Processes(func(_ int, args []string) bool {
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "--state" && args[i+1] == state {
				return true
			}
		}
		return false
	})
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// startDaemon starts a berthd and waits until it answers.
func startDaemon(t testing.TB, opts ...daemonOption) *daemon {
	d := newDaemon(t, opts...)
	d.start()
	return d
}

// defaultNetworkConfig gives a daemon whose config says nothing about
// networking the test bridge (see testBridge).
func (d *daemon) defaultNetworkConfig() {
	if d.config == "" {
		d.config = filepath.Join(d.root, "..", "config.toml")
	}
	old, err := os.ReadFile(d.config)
	if err != nil && !os.IsNotExist(err) {
		d.t.Fatal(err)
	}
	if strings.Contains(string(old), "[network]") {
		return
	}
	add := fmt.Sprintf("\n[network]\nbridge = %q\ndefault_subnet = %q\n", testBridge, testBridgeSubnet)
	if err := os.WriteFile(d.config, append(old, add...), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

func (d *daemon) args() []string {
	a := []string{"--root", d.root, "--state", d.state, "--address", d.socket, "--log-level", "debug"}
	if d.config != "" {
		a = append(a, "--config", d.config)
	}
	return append(a, d.extra...)
}

// start runs berthd and waits for its health check to answer.
func (d *daemon) start() {
	d.t.Helper()
	d.defaultNetworkConfig()
	d.logs = &syncBuffer{}
	cmd := exec.Command(filepath.Join(binDir, "berthd"), d.args()...)
	cmd.Stdout, cmd.Stderr = d.logs, d.logs
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.cmd = cmd
	d.exited = make(chan struct{})
	go func() { d.exitErr = d.cmd.Wait(); close(d.exited) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-d.exited:
			d.t.Fatalf("berthd exited at start (%v):\n%s", d.exitErr, d.logs.String())
		default:
		}
		if _, code := d.ctlQuiet("version"); code == 0 {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("berthd did not answer within 20s:\n%s", d.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits; berthd must exit cleanly.
func (d *daemon) stop() {
	if d.cmd == nil {
		return
	}
	select {
	case <-d.exited:
	default:
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(30 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
			d.t.Errorf("berthd did not stop within 30s of SIGTERM")
		}
	}
	d.cmd = nil
}

// kill sends SIGKILL, as a crash would.
func (d *daemon) kill() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Kill()
	<-d.exited
	d.cmd = nil
}

func (d *daemon) restart() {
	d.t.Helper()
	d.stop()
	d.start()
}

// result is what a command printed and how it exited.
type result struct {
	Stdout, Stderr string
	Code           int
}

func runCmd(ctx context.Context, env []string, name string, args ...string) result {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), env...)
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		errb.WriteString(err.Error())
	}
	return result{out.String(), errb.String(), code}
}

// ctl runs berthctl against this daemon.
func (d *daemon) ctl(args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return runCmd(ctx, nil, filepath.Join(binDir, "berthctl"), append([]string{"--address", d.socket}, args...)...)
}

func (d *daemon) ctlQuiet(args ...string) (string, int) {
	r := d.ctl(args...)
	return r.Stdout, r.Code
}

// mustCtl runs berthctl and fails the test unless it exits 0.
func (d *daemon) mustCtl(args ...string) string {
	d.t.Helper()
	r := d.ctl(args...)
	if r.Code != 0 {
		d.t.Fatalf("berthctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// conn dials the daemon's socket with gRPC; the connection closes with the test.
func (d *daemon) conn(opts ...grpc.DialOption) *grpc.ClientConn {
	d.t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	c, err := grpc.NewClient("unix://"+d.socket, opts...)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { c.Close() })
	return c
}

// inNamespace returns a context whose calls go to namespace ns.
func inNamespace(ctx context.Context, ns string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, namespaces.GRPCHeader, ns)
}
