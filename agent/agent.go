// Package agent is berthd: the gRPC API services over the metadata store,
// the event exchange and (as they land) the content store, snapshotter and
// runtime manager.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/berth-dev/berth/agent/config"
	"github.com/berth-dev/berth/agent/events"
	"github.com/berth-dev/berth/agent/images"
	"github.com/berth-dev/berth/agent/network"
	"github.com/berth-dev/berth/agent/runtime"
	"github.com/berth-dev/berth/content"
	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata"
	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
	"github.com/berth-dev/berth/snapshotter"
)

// LockFile is the file under root whose flock marks the root as in use.
const LockFile = "berthd.lock"

// Agent is a running berthd.
type Agent struct {
	cfg    *config.Config
	log    *slog.Logger
	db     *metadata.DB
	events *events.Exchange
	lock   *os.File
	// content holds image blobs by digest, under <root>/content.
	content *content.LocalStore
	// snapshots holds unpacked layers and container rootfs, under
	// <root>/snapshots/<driver>.
	snapshots   snapshotter.Snapshotter
	snapshotter string
	// images pulls, pushes, imports, exports and collects garbage.
	images *images.Service
	// network gives containers their namespaces, CNI networks and /etc
	// files; its state is under <state>/net.
	network *network.Manager
	server  *grpc.Server
	health  *health.Server
	start   time.Time

	listeners []net.Listener
	closeOnce sync.Once

	// runtime runs tasks through their shims.
	runtime *runtime.Manager
	// restarts applies restart policies.
	restarts *restarter
	// statusMu serialises setStatus's read-modify-write of container
	// statuses, so that concurrent updates (an exit event, StartTask,
	// a release) never lose one another's fields.
	statusMu sync.Mutex
	// taskLocks serialise task creation and deletion per container.
	taskLocks taskLocks
	// removals are the container removals in progress.
	removals removals
	// bg tracks background work (--rm removals) that Shutdown waits for.
	bg sync.WaitGroup
	// debug serves pprof when BERTH_DEBUG_SOCKET is set.
	debug *http.Server
}

// New prepares an agent: it takes the root's lock, opens the metadata
// database and builds the gRPC server. Nothing listens until Serve.
func New(cfg *config.Config, log *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, dir := range []string{cfg.Root, cfg.State} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	lock, err := lockRoot(cfg.Root)
	if err != nil {
		return nil, err
	}
	db, err := metadata.Open(filepath.Join(cfg.Root, "meta.db"))
	if err != nil {
		lock.Close()
		return nil, err
	}
	// The default namespace always exists, so `namespace ls` shows where
	// objects go when a client names none.
	if _, err := db.Namespaces().Get(context.Background(), namespaces.Default); errdefs.IsNotFound(err) {
		_, err = db.Namespaces().Create(context.Background(), namespaces.Default, nil)
		if err != nil && !errdefs.IsAlreadyExists(err) {
			db.Close()
			lock.Close()
			return nil, err
		}
	}
	// Each store opened below is closed again if a later one fails, so a
	// refused start leaves nothing open or locked.
	undo := []func(){func() { lock.Close() }, func() { db.Close() }}
	fail := func(err error) (*Agent, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return nil, err
	}
	cs, err := content.NewStore(filepath.Join(cfg.Root, "content"))
	if err != nil {
		return fail(err)
	}
	undo = append(undo, func() { cs.Close() })
	sn, driver, err := openSnapshotter(cfg, log)
	if err != nil {
		return fail(err)
	}
	undo = append(undo, func() { sn.Close() })
	hosts := map[string]images.Host{}
	for domain, h := range cfg.Registry {
		hosts[domain] = images.Host{Mirrors: h.Mirrors, PlainHTTP: h.PlainHTTP, SkipVerify: h.SkipVerify}
	}
	imgs, err := images.New(images.Options{
		Content: cs, Snapshots: sn, DB: db, Hosts: hosts, Log: log,
		MaxConcurrentDownloads: cfg.Images.MaxConcurrentDownloads,
		MaxConcurrentUnpacks:   cfg.Images.MaxConcurrentUnpacks,
		IngestExpiry:           cfg.Images.IngestExpiry.Duration,
		TempDir:                cfg.State,
	})
	if err != nil {
		return fail(err)
	}
	nm, err := openNetwork(cfg, log)
	if err != nil {
		return fail(err)
	}
	// What a crash or a killed pull left behind goes now (partial
	// downloads younger than ingest_expiry stay, to be resumed).
	if _, err := imgs.GarbageCollect(context.Background(), images.GCOptions{}); err != nil {
		log.Warn("garbage collection at start", "error", err)
	}
	a := &Agent{
		images:      imgs,
		network:     nm,
		content:     cs,
		snapshots:   sn,
		snapshotter: driver,
		cfg:         cfg,
		log:         log,
		db:          db,
		events:      events.New(cfg.Events.SubscriberBuffer),
		lock:        lock,
		health:      health.NewServer(),
		start:       time.Now(),
	}
	a.restarts = newRestarter(a)
	a.runtime = runtime.New(runtime.Config{
		State: cfg.State, ShimBinary: shimBinary(), Log: log.With("component", "runtime"),
		OnEvent: a.onTaskEvent, ShimDebug: log.Enabled(context.Background(), slog.LevelDebug),
		WarmShims: cfg.Runtime.WarmShims, CgroupParent: cfg.CgroupParent,
	})
	a.recoverTasks(context.Background())
	a.runtime.StartWarm()
	a.server = grpc.NewServer(
		grpc.ChainUnaryInterceptor(a.unaryInterceptor),
		grpc.ChainStreamInterceptor(a.streamInterceptor),
	)
	berthv1.RegisterSystemServiceServer(a.server, &systemService{a: a})
	berthv1.RegisterNamespacesServiceServer(a.server, &namespacesService{a: a})
	berthv1.RegisterContainersServiceServer(a.server, &containersService{a: a})
	berthv1.RegisterImagesServiceServer(a.server, &imagesService{a: a})
	berthv1.RegisterTasksServiceServer(a.server, &tasksService{a: a})
	berthv1.RegisterEventsServiceServer(a.server, &eventsService{a: a})
	berthv1.RegisterNetworksServiceServer(a.server, &networksService{a: a})
	healthpb.RegisterHealthServer(a.server, a.health)
	reflection.Register(a.server)
	return a, nil
}

// shimBinary finds berth-shim: beside berthd's executable, else on PATH.
func shimBinary() string {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "berth-shim")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("berth-shim"); err == nil {
		return p
	}
	return "berth-shim"
}

// DebugSocketEnv names the environment variable that, when set to a path,
// makes berthd serve net/http/pprof on a Unix socket there (mode 0600):
// /debug/pprof/goroutine?debug=1 gives the goroutine count that the leak
// test checks. It is off by default.
const DebugSocketEnv = "BERTH_DEBUG_SOCKET"

func (a *Agent) serveDebug() {
	path := os.Getenv(DebugSocketEnv)
	if path == "" {
		return
	}
	os.Remove(path)
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		a.log.Warn("debug socket", "path", path, "err", err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	a.debug = &http.Server{Handler: mux}
	go a.debug.Serve(l)
}

// lockRoot takes an exclusive, non-blocking flock on <root>/berthd.lock and
// writes our PID into it, so a second berthd on the same root fails at
// once with a message naming the lock and its holder.
func lockRoot(root string) (*os.File, error) {
	path := filepath.Join(root, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		who := ""
		if pid := strings.TrimSpace(string(holder)); pid != "" {
			who = " (held by pid " + pid + ")"
		}
		return nil, fmt.Errorf("cannot take the lock %s%s: another berthd is using root %s; stop it or choose another --root: %w",
			path, who, root, errdefs.ErrUnavailable)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// Listen opens the Unix socket at the configured address, mode 0660 (group
// "berth" when that group exists, as Docker does with "docker"). A stale
// socket left by a crashed berthd is replaced; a live one is an error.
func (a *Agent) Listen() error {
	path := a.cfg.Address
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return fmt.Errorf("create socket dir: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("socket %s is in use by a running process: %w", path, errdefs.ErrUnavailable)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	// Create the socket with no group/other bits, then open it to the
	// group: there is no moment when anyone else can connect.
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	if g, err := user.LookupGroup("berth"); err == nil {
		if gid, err := strconv.Atoi(g.Gid); err == nil {
			os.Chown(path, 0, gid)
		}
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return err
	}
	a.listeners = append(a.listeners, l)
	a.log.Info("serving", "address", "unix://"+path)
	return nil
}

// Serve serves every listener until Shutdown. It returns the first
// listener error, or nil after a shutdown.
func (a *Agent) Serve() error {
	if len(a.listeners) == 0 {
		return errors.New("serve: no listener")
	}
	a.serveDebug()
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	errc := make(chan error, len(a.listeners))
	for _, l := range a.listeners {
		go func(l net.Listener) { errc <- a.server.Serve(l) }(l)
	}
	var first error
	for range a.listeners {
		if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) && first == nil {
			first = err
			a.server.Stop()
		}
	}
	return first
}

// Shutdown stops accepting calls, lets in-flight calls finish for up to
// the configured timeout, then cancels the rest, closes the database and
// releases the root's lock.
func (a *Agent) Shutdown(ctx context.Context) {
	a.closeOnce.Do(func() {
		a.health.Shutdown()
		done := make(chan struct{})
		go func() { a.server.GracefulStop(); close(done) }()
		timeout := a.cfg.ShutdownTimeout.Duration
		select {
		case <-done:
		case <-time.After(timeout):
			a.log.Warn("in-flight calls did not finish in time; cancelling them", "timeout", timeout)
			a.server.Stop()
			<-done
		case <-ctx.Done():
			a.server.Stop()
			<-done
		}
		os.Remove(a.cfg.Address)
		if a.debug != nil {
			a.debug.Close()
		}
		a.restarts.close()
		a.bg.Wait()
		// The shims keep running; the next berthd reconnects.
		a.runtime.Close()
		a.closeStores()
		if err := a.db.Close(); err != nil {
			a.log.Error("close metadata", "error", err)
		}
		a.lock.Close()
		a.log.Info("stopped")
	})
}

// Close releases what New took, for an agent that never served.
func (a *Agent) Close() {
	a.closeOnce.Do(func() {
		for _, l := range a.listeners {
			l.Close()
		}
		a.restarts.close()
		a.bg.Wait()
		a.runtime.Close()
		a.closeStores()
		a.db.Close()
		a.lock.Close()
	})
}

// openSnapshotter opens the configured snapshotter under <root>/snapshots.
// "overlay" falls back to the native (copy) snapshotter, with a warning,
// where overlayfs cannot mount (for instance when root is itself on
// overlayfs); a root that already holds one driver's snapshots keeps it.
func openSnapshotter(cfg *config.Config, log *slog.Logger) (snapshotter.Snapshotter, string, error) {
	dir := filepath.Join(cfg.Root, "snapshots")
	var sn snapshotter.Snapshotter
	var err error
	if cfg.Snapshotter == "native" {
		sn, err = snapshotter.NewNative(filepath.Join(dir, "native"), snapshotter.WithLogger(log))
	} else {
		sn, err = snapshotter.Open(dir, snapshotter.WithLogger(log))
	}
	if err != nil {
		return nil, "", fmt.Errorf("snapshotter under %s: %w", dir, err)
	}
	driver := "overlay"
	if _, ok := sn.(*snapshotter.Native); ok {
		driver = "native"
		if cfg.Snapshotter == "overlay" {
			log.Warn("overlayfs cannot be used here; using the native (copy) snapshotter", "root", dir)
		}
	}
	return sn, driver, nil
}

func (a *Agent) closeStores() {
	if err := a.network.Close(); err != nil {
		a.log.Error("close network manager", "error", err)
	}
	if err := a.snapshots.Close(); err != nil {
		a.log.Error("close snapshotter", "error", err)
	}
	if err := a.content.Close(); err != nil {
		a.log.Error("close content store", "error", err)
	}
}
