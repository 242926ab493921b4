package network

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
	berthv1 "github.com/berth-dev/berth/proto/berth/v1"
)

// Published ports are forwarded by the portmap plugin's iptables DNAT
// rules; no process listens on them. Berth still binds (without listen)
// a socket to every published host address and port for as long as the
// attachment exists, as Docker's userland proxy does. That turns "port
// already in use" into a clear error at Attach, instead of traffic that
// silently goes to whichever of two claimants iptables matches first, and
// keeps other host programs from taking the port later. Binding port 0
// lets the kernel choose a free port for `-p CONTAINERPORT`.

// reservation is one bound socket holding a host port.
type reservation struct {
	fd   int
	port int
}

func parsePorts(list []*berthv1.PortMapping) ([]portMapping, error) {
	var out []portMapping
	for _, p := range list {
		proto := p.Protocol
		if proto == "" {
			proto = "tcp"
		}
		if proto != "tcp" && proto != "udp" {
			return nil, fmt.Errorf("port %d/%s: protocol must be tcp or udp: %w", p.ContainerPort, proto, errdefs.ErrInvalidArgument)
		}
		if p.ContainerPort == 0 || p.ContainerPort > 65535 || p.HostPort > 65535 {
			return nil, fmt.Errorf("port mapping %d:%d: ports are 1 to 65535: %w", p.HostPort, p.ContainerPort, errdefs.ErrInvalidArgument)
		}
		if p.HostIp != "" {
			a, err := netip.ParseAddr(p.HostIp)
			if err != nil || !a.Is4() {
				return nil, fmt.Errorf("port mapping host address %q: want an IPv4 address: %w", p.HostIp, errdefs.ErrInvalidArgument)
			}
		}
		out = append(out, portMapping{HostIP: p.HostIp, HostPort: int(p.HostPort), ContainerPort: int(p.ContainerPort), Protocol: proto})
	}
	return out, nil
}

// reservePorts binds every mapping's host port, in order; on failure it
// releases what it bound. The result is parallel to ports.
func reservePorts(ports []portMapping) ([]*reservation, error) {
	var out []*reservation
	for _, p := range ports {
		r, err := reserve(p)
		if err != nil {
			releasePorts(out)
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func reserve(p portMapping) (*reservation, error) {
	typ := unix.SOCK_STREAM
	if p.Protocol == "udp" {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reserve port: %w", err)
	}
	addr := &unix.SockaddrInet4{Port: p.HostPort}
	if p.HostIP != "" {
		addr.Addr = netip.MustParseAddr(p.HostIP).As4()
	}
	if err := unix.Bind(fd, addr); err != nil {
		unix.Close(fd)
		host := p.HostIP
		if host == "" {
			host = "0.0.0.0"
		}
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("cannot publish %s:%d/%s: the host port is already in use by another program or container: choose another host port: %w",
				host, p.HostPort, p.Protocol, errdefs.ErrAlreadyExists)
		}
		if errors.Is(err, unix.EADDRNOTAVAIL) {
			return nil, fmt.Errorf("cannot publish on %s: not an address of this host: %w", host, errdefs.ErrInvalidArgument)
		}
		return nil, fmt.Errorf("cannot publish %s:%d/%s: %w", host, p.HostPort, p.Protocol, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("reserve port: %w", err)
	}
	return &reservation{fd: fd, port: sa.(*unix.SockaddrInet4).Port}, nil
}

func releasePorts(list []*reservation) {
	for _, r := range list {
		unix.Close(r.fd)
	}
}
