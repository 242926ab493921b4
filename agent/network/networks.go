package network

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata/identifiers"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// A network is one CNI configuration list, <conf>/<name>.conflist. The
// file is the whole record: CNI reads it as it is, and Berth keeps its own
// facts (ID, labels, creation time, internal) in a "berth" key that libcni
// ignores. Networks are global, not per namespace, as Docker's are.
//
// Keeping networks as files rather than in meta.db means the CNI tools
// (cnitool, a debugging session) see exactly what berthd uses, and no
// schema migration is needed. The write is temp + fsync + rename, so a
// crash leaves the old file or the new one.

// DefaultNetwork is the network of mode "bridge".
const DefaultNetwork = "bridge"

const cniVersion = "1.0.0"

// netInfo is what Berth keeps about a network beside the CNI config.
type netInfo struct {
	ID       string            `json:"id"`
	Subnet   string            `json:"subnet"`
	Gateway  string            `json:"gateway"`
	Bridge   string            `json:"bridge"`
	Internal bool              `json:"internal,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Created  time.Time         `json:"created"`
}

// conflist is the subset of a CNI configuration list Berth writes.
type conflist struct {
	CNIVersion string           `json:"cniVersion"`
	Name       string           `json:"name"`
	Plugins    []map[string]any `json:"plugins"`
	Berth      netInfo          `json:"berth"`
}

// network is a loaded conflist.
type network struct {
	Name  string
	Info  netInfo
	Bytes []byte
}

func (m *Manager) confPath(name string) string {
	return filepath.Join(m.cfg.ConfDir, name+".conflist")
}

// buildConflist returns the CNI configuration of a bridge network. The
// portmap plugin is left out here and added per attachment only when the
// container publishes ports: it costs an exec and iptables calls.
func (m *Manager) buildConflist(name string, info netInfo) ([]byte, error) {
	ipam := map[string]any{
		"type":    "host-local",
		"ranges":  []any{[]any{map[string]any{"subnet": info.Subnet, "gateway": info.Gateway}}},
		"dataDir": m.ipamDir(),
	}
	if !info.Internal {
		ipam["routes"] = []any{map[string]any{"dst": "0.0.0.0/0"}}
	}
	bridge := map[string]any{
		"type":        "bridge",
		"bridge":      info.Bridge,
		"isGateway":   true,
		"ipMasq":      false, // one rule per network instead: see rules.go
		"hairpinMode": true,
		"ipam":        ipam,
	}
	if m.cfg.MTU > 0 {
		bridge["mtu"] = m.cfg.MTU
	}
	return json.MarshalIndent(conflist{CNIVersion: cniVersion, Name: name, Plugins: []map[string]any{bridge}, Berth: info}, "", "  ")
}

// withPortmap returns the network's conflist with the portmap plugin
// appended; snat makes published ports answer on 127.0.0.1 and hairpin.
func withPortmap(b []byte) ([]byte, error) {
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	plugins, _ := raw["plugins"].([]any)
	raw["plugins"] = append(plugins, map[string]any{
		"type":         "portmap",
		"capabilities": map[string]any{"portMappings": true},
		"snat":         true,
	})
	return json.Marshal(raw)
}

// loadNetwork reads one network by name.
func (m *Manager) loadNetwork(name string) (*network, error) {
	if err := validateNetworkName(name); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(m.confPath(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("network %q: %w (see 'berthctl network ls')", name, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("network %q: %w", name, err)
	}
	var cl conflist
	if err := json.Unmarshal(b, &cl); err != nil || cl.Name != name {
		return nil, fmt.Errorf("network %q: %s is not a Berth network config: %w", name, m.confPath(name), errdefs.ErrFailedPrecondition)
	}
	return &network{Name: name, Info: cl.Berth, Bytes: b}, nil
}

// loadNetworks reads every network, sorted by name.
func (m *Manager) loadNetworks() ([]*network, error) {
	entries, err := os.ReadDir(m.cfg.ConfDir)
	if err != nil {
		return nil, fmt.Errorf("read network configs: %w", err)
	}
	var out []*network
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".conflist")
		if !ok || validateNetworkName(name) != nil {
			continue
		}
		n, err := m.loadNetwork(name)
		if err != nil {
			m.log.Warn("skipping network config", "file", e.Name(), "error", err)
			continue
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func validateNetworkName(name string) error {
	if err := identifiers.Validate("network name", name); err != nil {
		return err
	}
	switch name {
	case "none", "host", "default":
		return fmt.Errorf("network name %q is reserved for a network mode: %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// CreateRequest describes a user-defined network.
type CreateRequest struct {
	Name string
	// Subnet is an IPv4 CIDR; empty picks a free /24 from the pool.
	Subnet string
	// Gateway defaults to the subnet's first address.
	Gateway string
	// Internal networks get no default route and no masquerading.
	Internal bool
	Labels   map[string]string
}

// CreateNetwork writes a new bridge network.
func (m *Manager) CreateNetwork(ctx context.Context, req CreateRequest) (*berthv1.Network, error) {
	if err := validateNetworkName(req.Name); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := os.Stat(m.confPath(req.Name)); err == nil {
		return nil, fmt.Errorf("network %q: %w; choose another name or remove it first", req.Name, errdefs.ErrAlreadyExists)
	}
	existing, err := m.loadNetworks()
	if err != nil {
		return nil, err
	}
	var subnet netip.Prefix
	if req.Subnet != "" {
		subnet, err = netip.ParsePrefix(req.Subnet)
		if err != nil || !subnet.Addr().Is4() || subnet.Bits() > 30 {
			return nil, fmt.Errorf("subnet %q: want an IPv4 CIDR of at most /30 such as 10.89.7.0/24: %w", req.Subnet, errdefs.ErrInvalidArgument)
		}
		subnet = subnet.Masked()
		if n := overlapping(subnet, existing); n != "" {
			return nil, fmt.Errorf("subnet %s overlaps network %q: %w", subnet, n, errdefs.ErrAlreadyExists)
		}
	} else {
		subnet, err = m.pickSubnet(existing)
		if err != nil {
			return nil, err
		}
	}
	gw := subnet.Addr().Next()
	if req.Gateway != "" {
		gw, err = netip.ParseAddr(req.Gateway)
		if err != nil || !subnet.Contains(gw) || gw == subnet.Addr() {
			return nil, fmt.Errorf("gateway %q: want an address inside %s: %w", req.Gateway, subnet, errdefs.ErrInvalidArgument)
		}
	}
	id := newID()
	info := netInfo{ID: id, Subnet: subnet.String(), Gateway: gw.String(), Bridge: "br-" + id[:12],
		Internal: req.Internal, Labels: req.Labels, Created: time.Now().UTC()}
	if err := m.writeNetwork(req.Name, info); err != nil {
		return nil, err
	}
	n, err := m.loadNetwork(req.Name)
	if err != nil {
		return nil, err
	}
	return m.toProto(n), nil
}

func (m *Manager) writeNetwork(name string, info netInfo) error {
	b, err := m.buildConflist(name, info)
	if err != nil {
		return err
	}
	return writeFileAtomic(m.confPath(name), b, 0o644, true)
}

// ensureDefault writes the "bridge" network on first start, on a subnet
// that no host route and no other network uses.
func (m *Manager) ensureDefault() error {
	if _, err := os.Stat(m.confPath(DefaultNetwork)); err == nil {
		return nil
	}
	existing, err := m.loadNetworks()
	if err != nil {
		return err
	}
	var subnet netip.Prefix
	if m.cfg.DefaultSubnet != "" {
		subnet, err = netip.ParsePrefix(m.cfg.DefaultSubnet)
		if err != nil || !subnet.Addr().Is4() {
			return fmt.Errorf("network default_subnet %q: want an IPv4 CIDR: %w", m.cfg.DefaultSubnet, errdefs.ErrInvalidArgument)
		}
		subnet = subnet.Masked()
	} else {
		// The default bridge's own routes do not count: a bridge left by
		// an earlier berthd (its root wiped, or a test's) keeps its
		// address, and the default network should take that subnet again
		// rather than move on to the next candidate.
		routes, err := hostRoutes(m.cfg.DefaultBridge)
		if err != nil {
			return err
		}
		for _, c := range defaultCandidates {
			p := netip.MustParsePrefix(c)
			if !overlapsAny(p, routes) && overlapping(p, existing) == "" {
				subnet = p
				break
			}
		}
		if !subnet.IsValid() {
			return fmt.Errorf("no free subnet for the default network among %v (all clash with host routes): set [network] default_subnet: %w",
				defaultCandidates, errdefs.ErrFailedPrecondition)
		}
	}
	info := netInfo{ID: newID(), Subnet: subnet.String(), Gateway: subnet.Addr().Next().String(),
		Bridge: m.cfg.DefaultBridge, Created: time.Now().UTC()}
	m.log.Info("writing the default network", "bridge", info.Bridge, "subnet", info.Subnet, "file", m.confPath(DefaultNetwork))
	return m.writeNetwork(DefaultNetwork, info)
}

// defaultCandidates are tried in order for the default network.
var defaultCandidates = []string{"10.88.0.0/16", "10.87.0.0/16", "172.30.0.0/16", "172.31.0.0/16", "192.168.250.0/24"}

// pickSubnet finds the first /24 of the pool that neither a host route
// nor another network uses.
func (m *Manager) pickSubnet(existing []*network) (netip.Prefix, error) {
	pool, err := netip.ParsePrefix(m.cfg.SubnetPool)
	if err != nil || !pool.Addr().Is4() || pool.Bits() > 24 {
		return netip.Prefix{}, fmt.Errorf("network subnet_pool %q: want an IPv4 CIDR of /24 or larger: %w", m.cfg.SubnetPool, errdefs.ErrInvalidArgument)
	}
	routes, err := hostRoutes("")
	if err != nil {
		return netip.Prefix{}, err
	}
	pool = pool.Masked()
	base := binary.BigEndian.Uint32(pool.Addr().AsSlice())
	count := uint32(1) << (24 - pool.Bits())
	for i := uint32(0); i < count; i++ {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], base+i<<8)
		p := netip.PrefixFrom(netip.AddrFrom4(b), 24)
		if !overlapsAny(p, routes) && overlapping(p, existing) == "" {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("subnet pool %s is exhausted: give --subnet or remove unused networks: %w", pool, errdefs.ErrResourceExhausted)
}

func overlapping(p netip.Prefix, nets []*network) string {
	for _, n := range nets {
		if q, err := netip.ParsePrefix(n.Info.Subnet); err == nil && q.Overlaps(p) {
			return n.Name
		}
	}
	return ""
}

func overlapsAny(p netip.Prefix, list []netip.Prefix) bool {
	for _, q := range list {
		if q.Bits() > 0 && q.Overlaps(p) { // a default route overlaps everything; ignore it
			return true
		}
	}
	return false
}

// hostRoutes reads the IPv4 routing table of berthd's namespace, without
// the routes of interface skip.
func hostRoutes(skip string) ([]netip.Prefix, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return nil, fmt.Errorf("read host routes: %w", err)
	}
	defer f.Close()
	var out []netip.Prefix
	s := bufio.NewScanner(f)
	s.Scan() // header
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 8 || (skip != "" && fields[0] == skip) {
			continue
		}
		dst, err1 := hex.DecodeString(fields[1])
		mask, err2 := hex.DecodeString(fields[7])
		if err1 != nil || err2 != nil || len(dst) != 4 || len(mask) != 4 {
			continue
		}
		// /proc/net/route is in host byte order: little endian here.
		a := netip.AddrFrom4([4]byte{dst[3], dst[2], dst[1], dst[0]})
		bits := 0
		for _, b := range mask {
			for ; b != 0; b &= b - 1 {
				bits++
			}
		}
		out = append(out, netip.PrefixFrom(a, bits))
	}
	return out, s.Err()
}

// GetNetwork returns one network with the containers attached to it.
func (m *Manager) GetNetwork(ctx context.Context, name string) (*berthv1.Network, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.loadNetwork(name)
	if err != nil {
		return nil, err
	}
	return m.toProto(n), nil
}

// ListNetworks returns every network, sorted by name.
func (m *Manager) ListNetworks(ctx context.Context) ([]*berthv1.Network, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	nets, err := m.loadNetworks()
	if err != nil {
		return nil, err
	}
	out := make([]*berthv1.Network, len(nets))
	for i, n := range nets {
		out[i] = m.toProto(n)
	}
	return out, nil
}

// RemoveNetwork deletes a user-defined network no container uses.
func (m *Manager) RemoveNetwork(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Containers removed a moment ago may still be leaving it.
	for {
		var wait chan struct{}
		for k, done := range m.leaving {
			if r := m.records[k]; r != nil && r.Network == name {
				wait = done
				break
			}
		}
		if wait == nil {
			break
		}
		m.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			m.mu.Lock()
			return ctx.Err()
		}
		m.mu.Lock()
	}
	if _, err := m.loadNetwork(name); err != nil {
		return err
	}
	if name == DefaultNetwork {
		return fmt.Errorf("network %q is the default network and cannot be removed: %w", name, errdefs.ErrFailedPrecondition)
	}
	if users := m.members(name); len(users) > 0 {
		return fmt.Errorf("network %q is in use by %s: remove those containers first: %w",
			name, strings.Join(users, ", "), errdefs.ErrFailedPrecondition)
	}
	n, _ := m.loadNetwork(name)
	if err := os.Remove(m.confPath(name)); err != nil {
		return fmt.Errorf("remove network %q: %w", name, err)
	}
	if n != nil {
		m.removeRules(ctx, n)
		if err := deleteBridge(n.Info.Bridge); err != nil {
			m.log.Warn("cannot delete a removed network's bridge", "network", name, "bridge", n.Info.Bridge, "error", err)
		}
	}
	// host-local keeps its allocations per network name; a later network
	// of the same name must start empty.
	os.RemoveAll(filepath.Join(m.ipamDir(), name))
	return nil
}

func (m *Manager) toProto(n *network) *berthv1.Network {
	return &berthv1.Network{
		Name: n.Name, Id: n.Info.ID, Driver: "bridge", Subnet: n.Info.Subnet, Gateway: n.Info.Gateway,
		Bridge: n.Info.Bridge, Internal: n.Info.Internal, Labels: n.Info.Labels,
		CreatedAt: timestamppb.New(n.Info.Created), Containers: m.members(n.Name),
	}
}

func newID() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// writeFileAtomic writes a file so that a crash leaves the old content or
// the new, never a torn file. durable flushes it, for files that outlive a
// reboot (network configs in the root dir); what lives in the state dir,
// a tmpfs gone at reboot with every namespace and attachment it
// describes, needs no flush: the rename alone survives a crash of berthd.
func writeFileAtomic(path string, data []byte, mode os.FileMode, durable bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if durable {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if !durable {
		return nil
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
