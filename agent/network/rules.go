package network

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Each network has a few iptables rules of its own, installed on the
// network's first use in this berthd process (checked with iptables -C,
// since a reboot or a flush may have dropped them) and removed with the
// network, as Docker does:
//
//	-t nat    -A POSTROUTING -s <subnet> ! -o <bridge> -j MASQUERADE     (not for internal networks)
//	-t filter -I FORWARD -i <bridge> -j ACCEPT                           (not for internal networks)
//	-t filter -I FORWARD -i <bridge> -o <bridge> -j ACCEPT               (internal networks)
//	-t filter -I FORWARD -o <bridge> -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//	-t filter -I FORWARD -o <bridge> -m conntrack --ctstate DNAT -j ACCEPT   (published ports)
//
// The masquerade rule replaces the bridge plugin's ipMasq, which would
// create and delete a chain per container: about ten iptables calls of
// ~10 ms each on every container start and removal. The FORWARD rules make
// bridge traffic work on hosts whose FORWARD policy is DROP (Docker
// installed, a firewall); they are inserted first so a later DROP does not
// shadow them, and they only match Berth's own bridges.

// networkRules lists a network's rules as (table, chain, insert, spec).
func networkRules(n *network) []ipRule {
	br, tag := n.Info.Bridge, []string{"-m", "comment", "--comment", "berth network " + n.Name}
	rules := []ipRule{
		{"filter", "FORWARD", true, append([]string{"-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"}, append(tag, "-j", "ACCEPT")...)},
		{"filter", "FORWARD", true, append([]string{"-o", br, "-m", "conntrack", "--ctstate", "DNAT"}, append(tag, "-j", "ACCEPT")...)},
	}
	if n.Info.Internal {
		return append(rules, ipRule{"filter", "FORWARD", true, append([]string{"-i", br, "-o", br}, append(tag, "-j", "ACCEPT")...)})
	}
	return append(rules,
		ipRule{"filter", "FORWARD", true, append([]string{"-i", br}, append(tag, "-j", "ACCEPT")...)},
		ipRule{"nat", "POSTROUTING", false, append([]string{"-s", n.Info.Subnet, "!", "-o", br}, append(tag, "-j", "MASQUERADE")...)},
	)
}

type ipRule struct {
	table, chain string
	insert       bool
	spec         []string
}

func iptables(ctx context.Context, op string, r ipRule) error {
	args := append([]string{"-w", "5", "-t", r.table, op, r.chain}, r.spec...)
	out, err := exec.CommandContext(ctx, "iptables", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ensureRules installs a network's rules unless this process already
// did. Caller holds mu.
func (m *Manager) ensureRules(ctx context.Context, n *network) error {
	if m.rulesDone[n.Name] == n.Info.ID {
		return nil
	}
	for _, r := range networkRules(n) {
		if iptables(ctx, "-C", r) == nil {
			continue
		}
		op := "-A"
		if r.insert {
			op = "-I"
		}
		if err := iptables(ctx, op, r); err != nil {
			return fmt.Errorf("network %q: %w", n.Name, err)
		}
	}
	m.rulesDone[n.Name] = n.Info.ID
	return nil
}

// removeRules deletes a network's rules, if present. Caller holds mu.
func (m *Manager) removeRules(ctx context.Context, n *network) {
	for _, r := range networkRules(n) {
		for iptables(ctx, "-C", r) == nil {
			if err := iptables(ctx, "-D", r); err != nil {
				m.log.Warn("cannot remove a network's iptables rule", "network", n.Name, "error", err)
				break
			}
		}
	}
	delete(m.rulesDone, n.Name)
}
