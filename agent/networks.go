package agent

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/berth-dev/berth/agent/config"
	"github.com/berth-dev/berth/agent/network"
	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// networksService serves NetworksService over the network manager.
// Networks are global, as Docker's are: the request's namespace does not
// scope them.
type networksService struct {
	berthv1.UnimplementedNetworksServiceServer
	a *Agent
}

// openNetwork builds the network manager from [network]. Recover runs
// later, in recoverTasks, once the runtime knows which tasks are live.
func openNetwork(cfg *config.Config, log *slog.Logger) (*network.Manager, error) {
	nc := cfg.Network
	confDir := nc.ConfDir
	if confDir == "" {
		confDir = filepath.Join(cfg.Root, "net", "conf")
	}
	m, err := network.New(network.Config{
		ConfDir:       confDir,
		BinDirs:       nc.BinDirs,
		StateDir:      filepath.Join(cfg.State, "net"),
		DefaultBridge: nc.Bridge,
		DefaultSubnet: nc.DefaultSubnet,
		SubnetPool:    nc.SubnetPool,
		FallbackDNS:   nc.FallbackDNS,
		MTU:           nc.MTU,
	}, log.With("component", "network"))
	if err != nil {
		return nil, fmt.Errorf("networking: %w", err)
	}
	return m, nil
}

func (s *networksService) CreateNetwork(ctx context.Context, req *berthv1.CreateNetworkRequest) (*berthv1.CreateNetworkResponse, error) {
	if d := req.GetDriver(); d != "" && d != "bridge" {
		return nil, fmt.Errorf("network driver %q: only \"bridge\" is supported: %w", d, errdefs.ErrInvalidArgument)
	}
	n, err := s.a.network.CreateNetwork(ctx, network.CreateRequest{
		Name: req.GetName(), Subnet: req.GetSubnet(), Gateway: req.GetGateway(),
		Internal: req.GetInternal(), Labels: req.GetLabels(),
	})
	if err != nil {
		return nil, err
	}
	s.a.events.Publish(ctx, "/networks/create", n.Name, nil)
	return &berthv1.CreateNetworkResponse{Network: n}, nil
}

func (s *networksService) GetNetwork(ctx context.Context, req *berthv1.GetNetworkRequest) (*berthv1.GetNetworkResponse, error) {
	n, err := s.a.network.GetNetwork(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &berthv1.GetNetworkResponse{Network: n}, nil
}

func (s *networksService) ListNetworks(ctx context.Context, _ *berthv1.ListNetworksRequest) (*berthv1.ListNetworksResponse, error) {
	list, err := s.a.network.ListNetworks(ctx)
	if err != nil {
		return nil, err
	}
	return &berthv1.ListNetworksResponse{Networks: list}, nil
}

func (s *networksService) RemoveNetwork(ctx context.Context, req *berthv1.RemoveNetworkRequest) (*berthv1.RemoveNetworkResponse, error) {
	if err := s.a.network.RemoveNetwork(ctx, req.GetName()); err != nil {
		return nil, err
	}
	s.a.events.Publish(ctx, "/networks/delete", req.GetName(), nil)
	return &berthv1.RemoveNetworkResponse{}, nil
}
