package agent

import (
	"context"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/agent/images"
	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/metadata/namespaces"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
	"github.com/berth-dev/berth/version"
)

type systemService struct {
	berthv1.UnimplementedSystemServiceServer
	a *Agent
}

func (s *systemService) Version(ctx context.Context, _ *berthv1.VersionRequest) (*berthv1.VersionResponse, error) {
	return &berthv1.VersionResponse{
		Version:    version.Version,
		GitCommit:  version.GitCommit,
		GoVersion:  version.GoVersion(),
		ApiVersion: version.APIVersion,
		Os:         runtime.GOOS,
		Arch:       runtime.GOARCH,
	}, nil
}

func (s *systemService) Info(ctx context.Context, _ *berthv1.InfoRequest) (*berthv1.InfoResponse, error) {
	a := s.a
	resp := &berthv1.InfoResponse{
		Root:            a.cfg.Root,
		State:           a.cfg.State,
		CgroupVersion:   cgroupVersion(),
		CgroupDriver:    "cgroupfs",
		CgroupParent:    a.cfg.CgroupParent,
		Snapshotter:     a.snapshotter,
		OperatingSystem: runtime.GOOS,
		Architecture:    runtime.GOARCH,
		Cpus:            int32(runtime.NumCPU()),
		ServerVersion:   version.Version,
		LogDriver:       "berth-file",
		Namespace:       namespaces.FromContext(ctx),
	}
	resp.Hostname, _ = os.Hostname()
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		resp.KernelVersion = unix.ByteSliceToString(uts.Release[:])
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		resp.MemoryBytes = int64(si.Totalram) * int64(si.Unit)
	}
	n, err := a.db.Namespaces().Count(ctx)
	if err != nil {
		return nil, err
	}
	resp.Namespaces = int64(n)
	// Counts are of the request's namespace, as everything else is.
	if err := namespaces.Validate(resp.Namespace); err != nil {
		return nil, err
	}
	if _, err := a.db.Namespaces().Get(ctx, resp.Namespace); err != nil && resp.Namespace != namespaces.Default {
		return nil, err
	}
	containers, err := a.db.Containers().List(ctx, nil)
	if err != nil {
		return nil, err
	}
	resp.Containers = int64(len(containers))
	for _, c := range containers {
		switch c.GetStatus().GetState() {
		case berthv1.ContainerState_CONTAINER_STATE_RUNNING, berthv1.ContainerState_CONTAINER_STATE_RESTARTING:
			resp.ContainersRunning++
		case berthv1.ContainerState_CONTAINER_STATE_PAUSED:
			resp.ContainersPaused++
		default:
			resp.ContainersStopped++
		}
	}
	images, err := a.db.Images().List(ctx, nil)
	if err != nil {
		return nil, err
	}
	resp.Images = int64(len(images))
	return resp, nil
}

func (s *systemService) DiskUsage(ctx context.Context, _ *berthv1.DiskUsageRequest) (*berthv1.DiskUsageResponse, error) {
	list, err := s.a.images.DiskUsage(ctx)
	if err != nil {
		return nil, err
	}
	resp := &berthv1.DiskUsageResponse{}
	for _, u := range list {
		resp.Entries = append(resp.Entries, &berthv1.DiskUsageResponse_Entry{
			Kind: u.Kind, Total: u.Total, Active: u.Active, SizeBytes: u.Size, ReclaimableBytes: u.Reclaimable,
		})
	}
	return resp, nil
}

func (s *systemService) GarbageCollect(ctx context.Context, req *berthv1.GarbageCollectRequest) (*berthv1.GarbageCollectResponse, error) {
	res, err := s.a.images.GarbageCollect(ctx, images.GCOptions{AllIngests: req.GetAllIngests()})
	if err != nil {
		return nil, err
	}
	return &berthv1.GarbageCollectResponse{
		BlobsRemoved: res.BlobsRemoved, SnapshotsRemoved: res.SnapshotsRemoved,
		IngestsRemoved: res.IngestsRemoved, BytesFreed: res.BytesFreed,
	}, nil
}

// cgroupVersion reports "2" on a unified hierarchy and "1" otherwise
// (legacy or hybrid, where the controllers are on v1).
func cgroupVersion() string {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "2"
	}
	return "1"
}

// notYet is the honest answer of an API method whose implementation has
// not landed: Unimplemented, naming what and where it comes.
func notYet(what, where string) error {
	return fmt.Errorf("%s is not implemented in this berthd yet (it comes with %s): %w", what, where, errdefs.ErrNotImplemented)
}
