package ctl

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Every command's help must render: flag shorthand clashes (-a, -n, -h)
// panic in cobra only when the command runs.
func TestEveryCommandHasHelp(t *testing.T) {
	var walk func(path []string, cmd *cobra.Command)
	walk = func(path []string, cmd *cobra.Command) {
		for _, sub := range cmd.Commands() {
			p := append(append([]string{}, path...), sub.Name())
			var out, errb bytes.Buffer
			code := Main(append(p, "--help"), &out, &errb)
			if code != 0 || !strings.Contains(out.String(), "Usage:") {
				t.Errorf("berthctl %s --help: exit %d, stderr %q", strings.Join(p, " "), code, errb.String())
			}
			walk(p, sub)
		}
	}
	walk(nil, NewRootCommand(&CLI{Out: &bytes.Buffer{}, Err: &bytes.Buffer{}}))
}

func TestGlobalShorthandsStepAsideForDockerFlags(t *testing.T) {
	root := NewRootCommand(&CLI{Out: &bytes.Buffer{}, Err: &bytes.Buffer{}})
	find := func(name string) *cobra.Command {
		c, _, err := root.Find(strings.Fields(name))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if f := find("ps").Flags().ShorthandLookup("a"); f == nil || f.Name != "all" {
		t.Fatalf("ps -a is %v, want --all", f)
	}
	if f := find("info").Flags().ShorthandLookup("a"); f == nil || f.Name != "address" {
		t.Fatalf("info -a is %v, want --address", f)
	}
	if f := find("logs").Flags().ShorthandLookup("n"); f == nil || f.Name != "tail" {
		t.Fatalf("logs -n is %v, want --tail", f)
	}
	if f := find("namespace ls").Flags().ShorthandLookup("n"); f == nil || f.Name != "namespace" {
		t.Fatalf("namespace ls -n is %v, want --namespace", f)
	}
	if f := find("run").Flags().ShorthandLookup("h"); f == nil || f.Name != "hostname" {
		t.Fatalf("run -h is %v, want --hostname", f)
	}
}

func TestSpecFromFlags(t *testing.T) {
	var f createFlags
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	f.register(fs)
	t.Setenv("FROM_SHELL", "yes")
	err := fs.Parse([]string{"--name", "web", "-e", "A=1", "-e", "FROM_SHELL", "-e", "UNSET_HERE", "-v", "/srv:/data:ro",
		"--tmpfs", "/run:size=64m", "-m", "32m", "--cpus", "0.5", "--pids-limit", "10", "-p", "8080:80", "-p", "127.0.0.1:53:53/udp",
		"-p", "9000", "--network", "backend", "--dns", "192.0.2.53", "--dns-search", "corp.test", "--dns-option", "ndots:2",
		"--network-alias", "www", "--add-host", "db:10.0.0.5", "--restart", "on-failure:3", "--entrypoint", "", "-u", "1000:1000", "-w", "/tmp", "--read-only", "-l", "a=b"})
	if err != nil {
		t.Fatal(err)
	}
	s, labels, err := f.spec(fs, "busybox", []string{"sh"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.Env, ",") != "A=1,FROM_SHELL=yes" {
		t.Errorf("env %v", s.Env)
	}
	if len(s.Mounts) != 2 || s.Mounts[0].Source != "/srv" || !s.Mounts[0].ReadOnly || s.Mounts[1].Type != "tmpfs" {
		t.Errorf("mounts %v", s.Mounts)
	}
	r := s.Resources
	if r.MemoryBytes != 32<<20 || r.NanoCpus != 5e8 || r.PidsLimit != 10 {
		t.Errorf("resources %v", r)
	}
	p := s.Network.Ports
	if len(p) != 3 || p[0].HostPort != 8080 || p[0].ContainerPort != 80 || p[0].Protocol != "tcp" ||
		p[1].HostIp != "127.0.0.1" || p[1].Protocol != "udp" || p[2].HostPort != 0 || p[2].ContainerPort != 9000 {
		t.Errorf("ports %v", p)
	}
	if n := s.Network; n.Mode != "backend" || strings.Join(n.Dns, ",") != "192.0.2.53" || strings.Join(n.DnsSearch, ",") != "corp.test" ||
		strings.Join(n.DnsOptions, ",") != "ndots:2" || strings.Join(n.Aliases, ",") != "www" || strings.Join(n.ExtraHosts, ",") != "db:10.0.0.5" {
		t.Errorf("network %v", n)
	}
	if s.RestartPolicy.Name != "on-failure" || s.RestartPolicy.MaxRetries != 3 {
		t.Errorf("restart %v", s.RestartPolicy)
	}
	if len(s.Entrypoint) != 1 || s.Entrypoint[0] != "" || s.User != "1000:1000" || s.WorkingDir != "/tmp" || !s.ReadOnlyRootfs || labels["a"] != "b" {
		t.Errorf("spec %v labels %v", s, labels)
	}
}

func TestBadFlagValuesAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-m", "lots"}, {"-m", "1k"}, {"--cpus", "-1"}, {"-p", "80:99999"}, {"-p", "abc"}, {"-p", "80/sctp"},
		{"-v", "/a"}, {"-v", "/a:rel"}, {"--restart", "sometimes"}, {"--restart", "always:3"}, {"--tmpfs", "rel"},
		{"--ulimit", "nofile"}, {"--platform", "linux"}, {"-e", "=x"},
	} {
		var f createFlags
		fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
		f.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		_, _, err := f.spec(fs, "busybox", nil)
		if _, ok := err.(usageError); !ok {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

func TestScanDetach(t *testing.T) {
	keys := defaultDetachKeys
	if i, _ := scanDetach([]byte("ab\x10\x11cd"), keys, 0); i != 2 {
		t.Fatalf("detach at %d, want 2", i)
	}
	i, m := scanDetach([]byte("ab\x10"), keys, 0)
	if i != -1 || m != 1 {
		t.Fatalf("partial: %d %d", i, m)
	}
	if i, _ := scanDetach([]byte("\x11"), keys, m); i != 0 {
		t.Fatalf("across reads: %d", i)
	}
	if i, _ := scanDetach([]byte("\x10x\x11"), keys, 0); i != -1 {
		t.Fatalf("broken sequence detached at %d", i)
	}
}

// The command table builds every top-level command under each of its
// names and aliases, and nothing else: a command missing from it, or an
// alias it does not know, would build the whole tree (correct, but slow),
// and a wrong entry would make the command unknown.
func TestCommandTableCoversEveryCommand(t *testing.T) {
	full := NewRootCommand(&CLI{Out: io.Discard, Err: io.Discard})
	for _, cmd := range full.Commands() {
		if cmd.Name() == "help" || cmd.Name() == "completion" {
			continue
		}
		for _, name := range append([]string{cmd.Name()}, cmd.Aliases...) {
			root := newRoot(&CLI{Out: io.Discard, Err: io.Discard}, []string{name, "--help"})
			if len(root.Commands()) >= len(full.Commands()) {
				t.Errorf("%q builds the whole tree: add it to commandTable", name)
				continue
			}
			found, _, err := root.Find([]string{name})
			if err != nil || found == root || found.Name() != cmd.Name() {
				t.Errorf("%q finds %v (%v), want the %s command", name, found.Name(), err, cmd.Name())
			}
			leaf := found
			if leaf.HasSubCommands() {
				leaf = leaf.Commands()[0]
			}
			if leaf.Flags().Lookup("address") == nil {
				t.Errorf("%q has no --address flag when built alone", name)
			}
		}
	}
	if got := commandName([]string{"--tlscert", "x.pem", "--tlskey=k.pem", "-a", "/s.sock", "--namespace=x", "ps", "-a"}); got != "ps" {
		t.Errorf("commandName skips root flags: got %q, want ps", got)
	}
}
