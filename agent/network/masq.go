package network

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Outbound traffic of a network is masqueraded by one rule per network,
//
//	-t nat -A POSTROUTING -s <subnet> ! -o <bridge> -j MASQUERADE
//
// installed by Berth on the network's first use and removed with the
// network, as Docker does. The bridge plugin's own ipMasq would instead
// create and delete a chain per container, about ten iptables calls of
// ~10 ms each on every container start and removal. Internal networks get
// no rule. The rule is re-checked once per berthd process (iptables -C),
// since a reboot or an iptables flush may have dropped it.

func masqArgs(n *network) []string {
	return []string{"-t", "nat", "POSTROUTING", "-s", n.Info.Subnet, "!", "-o", n.Info.Bridge,
		"-m", "comment", "--comment", "berth network " + n.Name, "-j", "MASQUERADE"}
}

func iptables(ctx context.Context, op string, rule []string) error {
	args := append([]string{"-w", "5", "-t", rule[1], op}, rule[2:]...)
	out, err := exec.CommandContext(ctx, "iptables", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ensureMasq installs a network's masquerade rule unless this process
// already did. Caller holds mu.
func (m *Manager) ensureMasq(ctx context.Context, n *network) error {
	if n.Info.Internal || m.masqDone[n.Name] == n.Info.ID {
		return nil
	}
	rule := masqArgs(n)
	if iptables(ctx, "-C", rule) != nil {
		if err := iptables(ctx, "-A", rule); err != nil {
			return fmt.Errorf("network %q: masquerade rule: %w", n.Name, err)
		}
	}
	m.masqDone[n.Name] = n.Info.ID
	return nil
}

// removeMasq deletes a network's masquerade rule, if present. Caller
// holds mu.
func (m *Manager) removeMasq(ctx context.Context, n *network) {
	rule := masqArgs(n)
	for iptables(ctx, "-C", rule) == nil {
		if err := iptables(ctx, "-D", rule); err != nil {
			m.log.Warn("cannot remove a network's masquerade rule", "network", n.Name, "error", err)
			break
		}
	}
	delete(m.masqDone, n.Name)
}
