package network

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata/identifiers"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// Config configures a Manager.
type Config struct {
	// ConfDir holds one <name>.conflist per network.
	ConfDir string
	// BinDirs are searched in order for CNI plugins.
	BinDirs []string
	// StateDir holds pinned namespaces, attachment records, IPAM state,
	// libcni's cache and the generated files; it belongs on a tmpfs
	// (<state>/net), since none of it outlives a reboot.
	StateDir string
	// DefaultBridge is the Linux bridge of the "bridge" network.
	DefaultBridge string
	// DefaultSubnet is the default network's subnet; empty picks one that
	// no host route uses.
	DefaultSubnet string
	// SubnetPool is where user-defined networks without --subnet get /24s.
	SubnetPool string
	// FallbackDNS replaces the host's nameservers when all of them are
	// loopback addresses a container cannot reach.
	FallbackDNS []string
	// MTU of the bridges and veths; 0 keeps the plugin's default.
	MTU int
	// HostResolvConf is the resolv.conf containers start from
	// (/etc/resolv.conf when empty).
	HostResolvConf string
	// HostHosts is the hosts file host-mode containers start from
	// (/etc/hosts when empty).
	HostHosts string
}

// AttachRequest asks for a container's network.
type AttachRequest struct {
	Namespace   string
	ContainerID string
	// Name is the container's name: its peers find it by this name.
	Name string
	// Hostname defaults to the first 12 characters of the ID.
	Hostname string
	// Config is the container's NetworkConfig; nil means bridge.
	Config *berthv1.NetworkConfig
}

// Attachment is a container's network, ready for its runtime spec.
type Attachment struct {
	// NetnsPath is the pinned namespace the container must join
	// (Input.NamespacePaths[specs.NetworkNamespace]); empty in host mode,
	// where the container keeps the host's network namespace.
	NetnsPath string
	Networks  []*berthv1.NetworkAttachment
	Ports     []*berthv1.PortMapping
	// HostsPath, HostnamePath and ResolvConfPath are bind-mounted
	// (rbind, private, read-write for hosts) on /etc/hosts, /etc/hostname
	// and /etc/resolv.conf.
	HostsPath, HostnamePath, ResolvConfPath string
	// Hostname is what the container's UTS hostname should be.
	Hostname string
}

// record is the on-disk truth about one attachment,
// <StateDir>/attachments/<ns>/<id>.json. It is written before anything
// is created (netns, CNI ADD) and removed after everything was torn down,
// so after any crash the records name every resource that may exist, and
// DEL runs with the exact configuration ADD saw.
type record struct {
	Namespace string `json:"namespace"`
	ID        string `json:"id"`
	Name      string `json:"name,omitempty"`
	Hostname  string `json:"hostname"`
	Mode      string `json:"mode"`
	// Network is the CNI network of bridge and user-defined modes.
	Network   string          `json:"network,omitempty"`
	CNIID     string          `json:"cni_id,omitempty"`
	IfName    string          `json:"ifname,omitempty"`
	NetnsPath string          `json:"netns,omitempty"`
	ConfList  json.RawMessage `json:"conflist,omitempty"`
	Ports     []portMapping   `json:"ports,omitempty"`
	Aliases   []string        `json:"aliases,omitempty"`
	Extra     []hostEntry     `json:"extra_hosts,omitempty"`
	// Done is set once ADD succeeded and the files exist.
	Done bool   `json:"done"`
	IP   string `json:"ip,omitempty"`
	// Attachments is the CNI result, as the API shows it.
	Attachments []attachmentJSON `json:"attachments,omitempty"`
}

type portMapping struct {
	HostIP        string `json:"hostIP,omitempty"`
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
}

type attachmentJSON struct {
	Network   string   `json:"network"`
	Interface string   `json:"interface"`
	Addresses []string `json:"addresses"`
	Gateway   string   `json:"gateway,omitempty"`
	MAC       string   `json:"mac,omitempty"`
}

type key struct{ ns, id string }

// Manager gives containers their network namespaces and networks.
// It is safe for concurrent use, but the caller serialises Attach and
// Detach of one container (the runtime manager's per-container lock).
type Manager struct {
	cfg Config
	log *slog.Logger
	cni *libcni.CNIConfig

	// mu guards records, reservations, the network files and every
	// container's generated /etc/hosts. CNI plugins run outside it.
	mu           sync.Mutex
	records      map[key]*record
	reservations map[key][]*reservation
	// rulesDone maps network names to the ID whose iptables rules this
	// process installed or found.
	rulesDone map[string]string
	// warm is the attachment made ahead (see warm.go).
	warm warmState
	// leaving holds the attachments DetachAsync is tearing down, closed
	// when done; guarded by mu. bg owns those goroutines.
	leaving map[key]chan struct{}
	bg      sync.WaitGroup
}

// New opens the manager's state, writes the default network on first
// start and re-reserves the host ports of attachments that survived a
// berthd restart. Call Recover next, once the live containers are known.
func New(cfg Config, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.ConfDir == "" || cfg.StateDir == "" {
		return nil, fmt.Errorf("network: conf dir and state dir are required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.DefaultBridge == "" {
		cfg.DefaultBridge = "berth0"
	}
	if len(cfg.DefaultBridge) > 15 {
		return nil, fmt.Errorf("network bridge name %q is longer than Linux's 15 characters: %w", cfg.DefaultBridge, errdefs.ErrInvalidArgument)
	}
	if cfg.SubnetPool == "" {
		cfg.SubnetPool = "10.89.0.0/16"
	}
	if cfg.HostResolvConf == "" {
		cfg.HostResolvConf = "/etc/resolv.conf"
	}
	if cfg.HostHosts == "" {
		cfg.HostHosts = "/etc/hosts"
	}
	m := &Manager{
		cfg:          cfg,
		log:          log,
		records:      map[key]*record{},
		reservations: map[key][]*reservation{},
		rulesDone:    map[string]string{},
		leaving:      map[key]chan struct{}{},
	}
	for _, d := range []string{cfg.ConfDir, cfg.StateDir, m.netnsDir(), m.recordsDir(), m.filesDir(), m.ipamDir(), m.cacheDir()} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("network: create %s: %w", d, err)
		}
	}
	// An explicit exec: libcni makes its default one lazily, unguarded,
	// which races when containers attach concurrently.
	m.cni = libcni.NewCNIConfigWithCacheDir(cfg.BinDirs, m.cacheDir(), &invoke.DefaultExec{
		RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}})
	if err := m.ensureDefault(); err != nil {
		return nil, err
	}
	if err := m.loadRecords(); err != nil {
		return nil, err
	}
	for k, r := range m.records {
		if !r.Done {
			continue // Recover tears it down
		}
		res, err := reservePorts(r.Ports)
		if err != nil {
			m.log.Warn("cannot re-reserve a published port after restart", "namespace", k.ns, "container", k.id, "error", err)
			continue
		}
		m.reservations[k] = res
	}
	return m, nil
}

// Close tears the warm attachment down and releases the port
// reservations. Attachments stay: they belong to containers that outlive
// berthd.
func (m *Manager) Close() error {
	m.bg.Wait()
	m.stopWarm()
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, res := range m.reservations {
		releasePorts(res)
		delete(m.reservations, k)
	}
	return nil
}

func (m *Manager) netnsDir() string   { return filepath.Join(m.cfg.StateDir, "netns") }
func (m *Manager) recordsDir() string { return filepath.Join(m.cfg.StateDir, "attachments") }
func (m *Manager) filesDir() string   { return filepath.Join(m.cfg.StateDir, "files") }
func (m *Manager) ipamDir() string    { return filepath.Join(m.cfg.StateDir, "ipam") }
func (m *Manager) cacheDir() string   { return filepath.Join(m.cfg.StateDir, "cache") }

func (m *Manager) netnsPath(k key) string {
	return filepath.Join(m.netnsDir(), k.ns, k.id)
}
func (m *Manager) recordPath(k key) string {
	return filepath.Join(m.recordsDir(), k.ns, k.id+".json")
}
func (m *Manager) containerFiles(k key) string {
	return filepath.Join(m.filesDir(), k.ns, k.id)
}

// cniID is the container ID CNI plugins see: unique across namespaces
// and within what libcni accepts.
func cniID(k key) string {
	h := sha256.Sum256([]byte(k.ns + "\x00" + k.id))
	return "berth-" + hex.EncodeToString(h[:16])
}

// Attach gives a container its network: it writes the attachment record,
// reserves the published host ports, creates and pins the network
// namespace (none and networks), runs CNI ADD (networks) and writes the
// /etc files, updating the hosts files of its peers on a user-defined
// network. Call it before the shim creates the container's init, and pass
// the result on as the package documentation says. On any error
// everything it made is torn down before it returns. It is Begin and
// Wait in one.
func (m *Manager) Attach(ctx context.Context, req AttachRequest) (*Attachment, error) {
	p, err := m.Begin(ctx, req)
	if err != nil {
		return nil, err
	}
	return p.Wait(ctx)
}

// Begin starts attaching a container and returns as soon as the record,
// the port reservations and the /etc files exist, with the paths a
// runtime spec names. The namespace is made and pinned (about a
// millisecond: unshare, the bind mount, lo up) and CNI ADD run (two
// plugin execs) in the background, so the runtime can mount the rootfs,
// write the spec and start the shim meanwhile. Wait then joins them and
// completes the attachment; call it before the runtime creates the
// container's init: only then is the namespace there, with its
// interface, and /etc/hosts the container's address; and Recover
// releases unfinished attachments on the grounds that no init joined
// them. A namespace that could not be made fails Wait, torn down as a
// failed ADD is. On an error Begin has torn down everything it made.
func (m *Manager) Begin(ctx context.Context, req AttachRequest) (*Pending, error) {
	if err := identifiers.Validate("namespace", req.Namespace); err != nil {
		return nil, err
	}
	if err := identifiers.Validate("container id", req.ContainerID); err != nil {
		return nil, err
	}
	if req.Name != "" {
		if err := identifiers.Validate("container name", req.Name); err != nil {
			return nil, err
		}
	}
	k := key{req.Namespace, req.ContainerID}
	cfg := req.Config
	if cfg == nil {
		cfg = &berthv1.NetworkConfig{}
	}
	r := &record{Namespace: k.ns, ID: k.id, Name: req.Name, Hostname: req.Hostname, Mode: cfg.Mode, Aliases: cfg.Aliases}
	if r.Mode == "" {
		r.Mode = "bridge"
	}
	if r.Hostname == "" {
		if r.Mode == "host" {
			r.Hostname, _ = os.Hostname()
		} else {
			r.Hostname = k.id[:min(12, len(k.id))]
		}
	}
	if !validHostname(r.Hostname) {
		return nil, fmt.Errorf("hostname %q: use letters, digits, '-' and '.' (at most 253 characters): %w", r.Hostname, errdefs.ErrInvalidArgument)
	}
	for _, a := range cfg.Aliases {
		if err := identifiers.Validate("network alias", a); err != nil {
			return nil, err
		}
	}
	extra, err := parseExtraHosts(cfg.ExtraHosts)
	if err != nil {
		return nil, err
	}
	r.Extra = extra
	resolv, err := m.resolvFor(r.Mode, cfg)
	if err != nil {
		return nil, err
	}
	ports, err := parsePorts(cfg.Ports)
	if err != nil {
		return nil, err
	}
	if len(ports) > 0 && (r.Mode == "none" || r.Mode == "host") {
		return nil, fmt.Errorf("container %s: ports cannot be published in network mode %q (the container is not behind a NAT): drop -p or use a bridge network: %w",
			k.id, r.Mode, errdefs.ErrInvalidArgument)
	}

	m.mu.Lock()
	if old, ok := m.records[k]; ok && !old.Done {
		// A crashed earlier attempt (Attach is serialised per container):
		// release it and start over.
		m.mu.Unlock()
		if err := m.teardown(ctx, k); err != nil {
			return nil, err
		}
		m.mu.Lock()
	}
	if _, ok := m.records[k]; ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("container %s in namespace %s already has a network attachment: detach it first: %w", k.id, k.ns, errdefs.ErrAlreadyExists)
	}
	if r.Mode != "none" && r.Mode != "host" {
		r.Network = r.Mode
		if r.Network == "bridge" {
			r.Network = DefaultNetwork
		}
		n, err := m.loadNetwork(r.Network)
		if err != nil {
			m.mu.Unlock()
			return nil, fmt.Errorf("container %s: %w", k.id, err)
		}
		if err := m.ensureRules(ctx, n); err != nil {
			m.mu.Unlock()
			return nil, err
		}
		r.ConfList = n.Bytes
		r.CNIID = cniID(k)
		r.IfName = "eth0"
	}
	if r.Mode != "host" {
		r.NetnsPath = m.netnsPath(k)
	}
	res, err := reservePorts(ports)
	if err != nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("container %s: %w", k.id, err)
	}
	r.Ports = ports
	for i, p := range res {
		r.Ports[i].HostPort = p.port // the chosen one where 0 was asked
	}
	if len(r.Ports) > 0 {
		if r.ConfList, err = withPortmap(r.ConfList); err != nil {
			releasePorts(res)
			m.mu.Unlock()
			return nil, err
		}
	}
	// A warm attachment of the default network is adopted as it is (see
	// warm.go); ports would need ADD to run with them.
	adopted := r.Network == DefaultNetwork && len(r.Ports) == 0 && m.takeWarm(r, r.ConfList)
	// The record goes to disk before any resource exists.
	if !adopted {
		if err := m.saveRecord(r); err != nil {
			releasePorts(res)
			m.mu.Unlock()
			return nil, err
		}
	}
	m.records[k] = r
	m.reservations[k] = res
	m.mu.Unlock()
	if adopted {
		// Not now: its plugin execs would take CPU and host-local's lock
		// from this container's start. A container's removal refills it
		// (teardown), or this timer if none comes.
		time.AfterFunc(warmRefillDelay, m.refillWarm)
	}

	p, err := m.begin(ctx, k, r, resolv, adopted)
	if err != nil {
		// Teardown must run even if ctx was cancelled.
		if terr := m.teardown(context.WithoutCancel(ctx), k); terr != nil {
			m.log.Error("cleanup after a failed attach", "namespace", k.ns, "container", k.id, "error", terr)
		}
		return nil, err
	}
	return p, nil
}

// errDetachedMeanwhile is Wait's error when the attachment was detached
// while ADD ran; what is there now is not Wait's to tear down.
var errDetachedMeanwhile = errors.New("attachment detached while it was being made")

// Pending is an attachment whose CNI ADD may still be running (Begin).
// The goroutine running ADD belongs to it and ends when ADD returns;
// Wait or Cancel joins it, and one of them must be called.
type Pending struct {
	// Attachment has what a runtime spec needs (NetnsPath, the files,
	// Hostname); Networks stays empty until Wait.
	Attachment *Attachment

	m    *Manager
	k    key
	r    *record
	done chan struct{}
	// Set by the ADD goroutine before done is closed.
	addErr      error
	attachments []attachmentJSON
	ip          string

	once sync.Once
	att  *Attachment
	err  error
}

// begin makes the namespace and the files and starts ADD. The record is
// saved already; on error the caller tears down.
func (m *Manager) begin(ctx context.Context, k key, r *record, resolv string, adopted bool) (*Pending, error) {
	m.mu.Lock()
	err := m.writeFiles(k, r, resolv)
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	p := &Pending{Attachment: m.attachmentOf(r), m: m, k: k, r: r, done: make(chan struct{})}
	if adopted {
		p.attachments, p.ip = r.Attachments, r.IP // ADD ran when it was made
		close(p.done)
		return p, nil
	}
	pin := r.NetnsPath != ""
	if !pin && r.Network == "" {
		close(p.done) // host: nothing to make
		return p, nil
	}
	var (
		list *libcni.NetworkConfigList
		rt   *libcni.RuntimeConf
	)
	if r.Network != "" {
		if list, err = libcni.NetworkConfFromBytes(r.ConfList); err != nil {
			return nil, fmt.Errorf("network %q: %w", r.Network, err)
		}
		rt = m.runtimeConf(r)
	}
	// The namespace too is made here, in the background, not before
	// Begin returns: its path is known, the spec only names it, and the
	// init joins it after Wait (BeforeInit). Making it (unshare, the pin,
	// lo up: about a millisecond) overlaps the rootfs mount and the shim's
	// start; a failure is Wait's, torn down as a failed ADD is.
	go func() {
		defer close(p.done)
		if pin {
			if err := newPinnedNetns(r.NetnsPath); err != nil {
				p.addErr = fmt.Errorf("container %s: %w", k.id, err)
				return
			}
		}
		if list != nil {
			p.attachments, p.ip, p.addErr = m.add(ctx, k, r.Network, r.IfName, list, rt)
		}
	}()
	return p, nil
}

// writeFiles writes a container's hostname, resolv.conf and a first
// /etc/hosts (without its own address, which ADD has yet to give).
// Caller holds mu.
func (m *Manager) writeFiles(k key, r *record, resolv string) error {
	dir := m.containerFiles(k)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "hostname"), []byte(r.Hostname+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(resolv), 0o644); err != nil {
		return err
	}
	return m.writeHosts(r)
}

// add runs CNI ADD. It touches no Manager state: Wait applies the result
// under mu.
func (m *Manager) add(ctx context.Context, k key, network, ifName string, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) ([]attachmentJSON, string, error) {
	res, err := m.cni.AddNetworkList(ctx, list, rt)
	if err != nil {
		if strings.Contains(err.Error(), "failed to find plugin") {
			return nil, "", fmt.Errorf("container %s: join network %q: %w (install containernetworking-plugins or set [network] bin_dirs): %w",
				k.id, network, err, errdefs.ErrFailedPrecondition)
		}
		return nil, "", fmt.Errorf("container %s: join network %q: %w", k.id, network, err)
	}
	cur, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, "", fmt.Errorf("container %s: network %q result: %w", k.id, network, err)
	}
	atts, ip := convertResult(network, ifName, cur)
	if ip == "" {
		return nil, "", fmt.Errorf("container %s: network %q gave no IPv4 address: %w", k.id, network, errdefs.ErrFailedPrecondition)
	}
	return atts, ip, nil
}

// Wait joins CNI ADD and completes the attachment: the container's own
// address in its /etc/hosts, its peers told, the record marked done. It
// returns the whole Attachment (Networks, Ports). If ADD or the rest
// failed, everything Begin made is torn down before Wait returns the
// error. Calling it again returns the same.
func (p *Pending) Wait(ctx context.Context) (*Attachment, error) {
	<-p.done
	p.once.Do(func() {
		p.att, p.err = p.finish()
		if p.err != nil && !errors.Is(p.err, errDetachedMeanwhile) {
			if terr := p.m.teardown(context.WithoutCancel(ctx), p.k); terr != nil {
				p.m.log.Error("cleanup after a failed attach", "namespace", p.k.ns, "container", p.k.id, "error", terr)
			}
		}
	})
	return p.att, p.err
}

// Cancel gives up the attachment, for a container whose task was not
// created after all: it waits for an ADD in flight (CNI forbids a DEL
// alongside it; killing a plugin could leave a half-written allocation)
// and then tears everything down, as Detach.
func (p *Pending) Cancel(ctx context.Context) error {
	<-p.done
	p.once.Do(func() { p.err = fmt.Errorf("container %s: attachment cancelled: %w", p.k.id, errdefs.ErrAborted) })
	return p.m.teardown(context.WithoutCancel(ctx), p.k)
}

func (p *Pending) finish() (*Attachment, error) {
	if p.addErr != nil {
		return nil, p.addErr
	}
	m, r := p.m, p.r
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.records[p.k] != r {
		// Detached while ADD ran: the caller broke the per-container
		// serialisation.
		return nil, fmt.Errorf("container %s: %w: %w", p.k.id, errDetachedMeanwhile, errdefs.ErrAborted)
	}
	r.Attachments, r.IP = p.attachments, p.ip
	r.Done = true
	if err := m.writeHosts(r); err != nil {
		return nil, err
	}
	if err := m.saveRecord(r); err != nil {
		return nil, err
	}
	m.updatePeers(r.Network, p.k)
	return m.attachmentOf(r), nil
}

func (m *Manager) attachmentOf(r *record) *Attachment {
	k := key{r.Namespace, r.ID}
	dir := m.containerFiles(k)
	a := &Attachment{
		NetnsPath:      r.NetnsPath,
		HostsPath:      filepath.Join(dir, "hosts"),
		HostnamePath:   filepath.Join(dir, "hostname"),
		ResolvConfPath: filepath.Join(dir, "resolv.conf"),
		Hostname:       r.Hostname,
	}
	for _, at := range r.Attachments {
		a.Networks = append(a.Networks, &berthv1.NetworkAttachment{
			Network: at.Network, Interface: at.Interface, Addresses: at.Addresses, Gateway: at.Gateway, MacAddress: at.MAC,
		})
	}
	for _, p := range r.Ports {
		a.Ports = append(a.Ports, &berthv1.PortMapping{HostIp: p.HostIP, HostPort: uint32(p.HostPort), ContainerPort: uint32(p.ContainerPort), Protocol: p.Protocol})
	}
	return a
}

// Get returns a container's attachment as Attach did, for a berthd that
// restarted; ErrNotFound if it has none.
func (m *Manager) Get(ns, id string) (*Attachment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.records[key{ns, id}]
	if !ok || !r.Done {
		return nil, fmt.Errorf("container %s in namespace %s has no network attachment: %w", id, ns, errdefs.ErrNotFound)
	}
	return m.attachmentOf(r), nil
}

func (m *Manager) runtimeConf(r *record) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: r.CNIID, NetNS: r.NetnsPath, IfName: r.IfName}
	if len(r.Ports) > 0 {
		pm := make([]map[string]any, len(r.Ports))
		for i, p := range r.Ports {
			pm[i] = map[string]any{"hostPort": p.HostPort, "containerPort": p.ContainerPort, "protocol": p.Protocol}
			if p.HostIP != "" {
				pm[i]["hostIP"] = p.HostIP
			}
		}
		rt.CapabilityArgs = map[string]any{"portMappings": pm}
	}
	return rt
}

func convertResult(network, ifName string, res *types100.Result) ([]attachmentJSON, string) {
	a := attachmentJSON{Network: network, Interface: ifName}
	idx := -1
	for i, in := range res.Interfaces {
		if in.Sandbox != "" && in.Name == ifName {
			idx, a.MAC = i, in.Mac
		}
	}
	ip4 := ""
	for _, ip := range res.IPs {
		if ip.Interface != nil && *ip.Interface != idx {
			continue
		}
		a.Addresses = append(a.Addresses, ip.Address.String())
		if ip.Address.IP.To4() != nil {
			if ip4 == "" {
				ip4 = ip.Address.IP.String()
			}
			if ip.Gateway != nil && a.Gateway == "" {
				a.Gateway = ip.Gateway.String()
			}
		}
	}
	return []attachmentJSON{a}, ip4
}

// Detach tears a container's network down: CNI DEL with the configuration
// ADD used, unpin the namespace, drop the files, the port reservations
// and the record, and update its peers' /etc/hosts. Detaching a container
// without an attachment succeeds, so Detach can be retried after a crash.
func (m *Manager) Detach(ctx context.Context, ns, id string) error {
	if err := identifiers.Validate("namespace", ns); err != nil {
		return err
	}
	if err := identifiers.Validate("container id", id); err != nil {
		return err
	}
	return m.teardown(ctx, key{ns, id})
}

// DetachAsync is Detach on a goroutine of the Manager's, for a container
// that is gone for good (removed): its removal need not wait for CNI DEL,
// two plugin execs. The attachment stops counting as a member of its
// network at once; RemoveNetwork waits for it to be gone, and Close for
// every one in flight. A failure is logged; the record stays, so a later
// Detach or Recover at the next start retries, as after a crash.
func (m *Manager) DetachAsync(ns, id string) error {
	if err := identifiers.Validate("namespace", ns); err != nil {
		return err
	}
	if err := identifiers.Validate("container id", id); err != nil {
		return err
	}
	k := key{ns, id}
	done := make(chan struct{})
	m.mu.Lock()
	if _, busy := m.leaving[k]; busy {
		m.mu.Unlock()
		return nil
	}
	m.leaving[k] = done
	m.mu.Unlock()
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		err := m.teardown(context.Background(), k)
		m.mu.Lock()
		delete(m.leaving, k)
		m.mu.Unlock()
		close(done)
		if err != nil {
			m.log.Warn("release the network of a removed container; retried at the next start", "namespace", ns, "container", id, "error", err)
		}
	}()
	return nil
}

func (m *Manager) teardown(ctx context.Context, k key) error {
	m.mu.Lock()
	r := m.records[k]
	m.mu.Unlock()
	if r != nil && r.Network != "" {
		if err := m.delCNI(ctx, r); err != nil {
			// Keep the record: a later Detach or Recover retries.
			return fmt.Errorf("container %s: leave network %q: %w", k.id, r.Network, err)
		}
	}
	netns := m.netnsPath(k)
	if r != nil && r.NetnsPath != "" {
		netns = r.NetnsPath // an adopted warm attachment's is elsewhere
	}
	if err := unpinNetns(netns); err != nil {
		return fmt.Errorf("container %s: %w", k.id, err)
	}
	// The per-namespace directories stay: removing one once empty would
	// race with a concurrent Attach between its MkdirAll and its create.
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := os.RemoveAll(m.containerFiles(k)); err != nil {
		return fmt.Errorf("container %s: remove network files: %w", k.id, err)
	}
	releasePorts(m.reservations[k])
	delete(m.reservations, k)
	if err := os.Remove(m.recordPath(k)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("container %s: remove network record: %w", k.id, err)
	}
	delete(m.records, k)
	if r != nil && r.Done {
		m.updatePeers(r.Network, k)
	}
	if k.ns != warmNS {
		m.refillWarm() // after the removal, out of the way of a start
	}
	return nil
}

// delCNI runs CNI DEL for an attachment with the config list ADD used.
// libcni stops a list's DEL at the first failing plugin, which would leave
// the later ones (the bridge plugin's IP allocation, behind a failing
// portmap) never asked; so on failure every plugin is asked on its own, in
// reverse order. A plugin whose binary cannot be found is taken to hold
// nothing: that happens when ADD failed for the same reason, and no later
// retry could do better.
func (m *Manager) delCNI(ctx context.Context, r *record) error {
	list, err := libcni.NetworkConfFromBytes(r.ConfList)
	if err != nil {
		return err
	}
	rt := m.runtimeConf(r)
	if err := m.cni.DelNetworkList(ctx, list, rt); err == nil {
		return nil
	}
	var errs []error
	for i := len(list.Plugins) - 1; i >= 0; i-- {
		one := *list
		one.Plugins = list.Plugins[i : i+1]
		err := m.cni.DelNetworkList(ctx, &one, rt)
		if err != nil && strings.Contains(err.Error(), "failed to find plugin") {
			m.log.Warn("CNI plugin not found for DEL; assuming it holds nothing", "container", r.ID, "plugin", list.Plugins[i].Network.Type, "error", err)
			continue
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Recover tears down every attachment whose container live reports gone,
// and every attach that never finished, then sweeps what no record
// accounts for: pinned namespaces, generated files and host-local IP
// allocations. Call it once after New, before serving, with live
// answering from the runtime's view of its tasks.
func (m *Manager) Recover(ctx context.Context, live func(ns, id string) bool) error {
	m.mu.Lock()
	var dead []key
	for k, r := range m.records {
		// An attach that never finished was never joined by an init (the
		// runtime creates the init only after Wait succeeded), so no
		// container uses it, live or not.
		if !r.Done || !live(k.ns, k.id) {
			dead = append(dead, k)
		}
	}
	m.mu.Unlock()
	var errs []error
	for _, k := range dead {
		m.log.Info("releasing the network of a container that is gone", "namespace", k.ns, "container", k.id)
		if err := m.teardown(ctx, k); err != nil {
			errs = append(errs, err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	known := map[string]bool{}
	pinned := map[string]bool{}
	for _, r := range m.records {
		known[r.CNIID] = true
		pinned[r.NetnsPath] = true
	}
	// Pinned namespaces and files without a record.
	for _, base := range []string{m.netnsDir(), m.filesDir()} {
		nsDirs, _ := os.ReadDir(base)
		for _, nd := range nsDirs {
			entries, _ := os.ReadDir(filepath.Join(base, nd.Name()))
			for _, e := range entries {
				p := filepath.Join(base, nd.Name(), e.Name())
				if _, ok := m.records[key{nd.Name(), e.Name()}]; ok || pinned[p] {
					continue
				}
				m.log.Info("removing an orphaned network leftover", "path", p)
				if base == m.netnsDir() {
					if err := unpinNetns(p); err != nil {
						errs = append(errs, err)
					}
				} else {
					os.RemoveAll(p)
				}
			}
			if nd.Name() != warmNS {
				os.Remove(filepath.Join(base, nd.Name()))
			}
		}
	}
	// host-local allocations: <ipam>/<network>/<ip>, first line the
	// container ID. Every allocation Berth makes has a record first.
	netDirs, _ := os.ReadDir(m.ipamDir())
	for _, nd := range netDirs {
		dir := filepath.Join(m.ipamDir(), nd.Name())
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if _, err := netip.ParseAddr(e.Name()); err != nil {
				continue // last_reserved_ip.N, lock
			}
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				continue
			}
			owner, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
			owner = strings.TrimSpace(owner)
			if strings.HasPrefix(owner, "berth-") && !known[owner] {
				m.log.Info("releasing an orphaned IP allocation", "network", nd.Name(), "ip", e.Name())
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) saveRecord(r *record) error {
	p := m.recordPath(key{r.Namespace, r.ID})
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	// In the state dir: atomic, not flushed (see writeFileAtomic).
	if err := writeFileAtomic(p, b, 0o600, false); err != nil {
		return fmt.Errorf("container %s: save network record: %w", r.ID, err)
	}
	return nil
}

func (m *Manager) loadRecords() error {
	nsDirs, err := os.ReadDir(m.recordsDir())
	if err != nil {
		return err
	}
	for _, nd := range nsDirs {
		entries, _ := os.ReadDir(filepath.Join(m.recordsDir(), nd.Name()))
		for _, e := range entries {
			p := filepath.Join(m.recordsDir(), nd.Name(), e.Name())
			id, ok := strings.CutSuffix(e.Name(), ".json")
			if !ok {
				continue
			}
			b, err := os.ReadFile(p)
			var r record
			if err == nil {
				err = json.Unmarshal(b, &r)
			}
			if err != nil || r.Namespace != nd.Name() || r.ID != id {
				m.log.Warn("ignoring an unreadable network record", "file", p, "error", err)
				continue
			}
			m.records[key{r.Namespace, r.ID}] = &r
		}
	}
	return nil
}

// members lists the containers on a network, as "name" for the default
// namespace and "namespace/name" otherwise. Caller holds mu.
func (m *Manager) members(network string) []string {
	var out []string
	for k, r := range m.records {
		if _, gone := m.leaving[k]; r.Network != network || r.Namespace == warmNS || gone {
			continue
		}
		n := r.Name
		if n == "" {
			n = r.ID
		}
		if r.Namespace != "default" {
			n = r.Namespace + "/" + n
		}
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// peers returns the /etc/hosts entries of the other containers on a
// user-defined network. The default network has no name resolution, as
// in Docker. Caller holds mu.
func (m *Manager) peers(r *record) []hostEntry {
	if r.Network == "" || r.Network == DefaultNetwork {
		return nil
	}
	var out []hostEntry
	for _, p := range m.records {
		if p == r || p.Network != r.Network || !p.Done || p.IP == "" || p.Namespace != r.Namespace {
			continue
		}
		names := []string{}
		if p.Name != "" {
			names = append(names, p.Name)
		}
		names = append(names, p.Aliases...)
		if p.Hostname != p.Name {
			names = append(names, p.Hostname)
		}
		out = append(out, hostEntry{IP: p.IP, Names: names})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP < out[j].IP })
	return out
}

// writeHosts (re)writes a container's /etc/hosts in place. Caller holds mu.
func (m *Manager) writeHosts(r *record) error {
	path := filepath.Join(m.containerFiles(key{r.Namespace, r.ID}), "hosts")
	var data []byte
	if r.Mode == "host" {
		host, _ := os.ReadFile(m.cfg.HostHosts)
		data = append(host, hostsFile(nil, nil, r.Extra)...)
	} else {
		self := &hostEntry{IP: r.IP, Names: []string{r.Hostname}}
		if r.Name != "" && r.Name != r.Hostname {
			self.Names = append(self.Names, r.Name)
		}
		self.Names = append(self.Names, r.Aliases...)
		if r.IP == "" {
			self = nil
		}
		data = hostsFile(self, m.peers(r), r.Extra)
		if self == nil {
			// none: the hostname still resolves, to loopback.
			data = append(data, []byte("127.0.1.1\t"+r.Hostname+"\n")...)
		}
	}
	if err := rewriteInPlace(path, data); err != nil {
		return fmt.Errorf("container %s: write /etc/hosts: %w", r.ID, err)
	}
	return nil
}

// updatePeers rewrites the hosts files of the other containers on a
// user-defined network after one joined or left. Caller holds mu.
func (m *Manager) updatePeers(network string, except key) {
	if network == "" || network == DefaultNetwork {
		return
	}
	for k, p := range m.records {
		if k == except || p.Network != network || !p.Done || k.ns != except.ns {
			continue
		}
		if err := m.writeHosts(p); err != nil {
			m.log.Warn("cannot update a peer's /etc/hosts", "namespace", k.ns, "container", k.id, "error", err)
		}
	}
}

// validHostname accepts RFC 1123 host names, which are also safe to write
// into /etc/hosts and /etc/hostname.
func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func (m *Manager) resolvFor(mode string, cfg *berthv1.NetworkConfig) (string, error) {
	host := readHostResolv(m.cfg.HostResolvConf)
	if mode == "host" && len(cfg.Dns) == 0 && len(cfg.DnsSearch) == 0 && len(cfg.DnsOptions) == 0 {
		// The host's namespace reaches its own loopback resolver.
		return host, nil
	}
	return resolvConf(host, cfg.Dns, cfg.DnsSearch, cfg.DnsOptions, m.cfg.FallbackDNS)
}
