package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes, Docker's: a container's own code passes through; these are
// berthctl's.
const (
	// ExitError is a failed berthctl command (Docker's 1).
	ExitError = 1
	// ExitUsage is an unknown command or flag (Docker's 125 for run, 1
	// elsewhere; cobra usage errors map here).
	ExitUsage = 125
)

// CLI carries the global flags and the lazily dialled client.
type CLI struct {
	Address   string
	Namespace string
	TLS       TLSFiles
	Out       io.Writer
	Err       io.Writer

	client *Client
}

// Client dials berthd on first use.
func (c *CLI) Client() (*Client, error) {
	if c.client != nil {
		return c.client, nil
	}
	cl, err := Dial(c.Address, c.Namespace, c.TLS)
	if err != nil {
		return nil, err
	}
	c.client = cl
	return cl, nil
}

// Close closes the connection, if one was made.
func (c *CLI) Close() {
	if c.client != nil {
		c.client.Close()
	}
}

// explain makes an API error readable; see Client.Explain.
func (c *CLI) explain(err error) error {
	if c.client == nil {
		return err
	}
	return c.client.Explain(err)
}

// usageError marks errors in how berthctl was called.
type usageError struct{ error }

// NewRootCommand builds berthctl.
func NewRootCommand(c *CLI) *cobra.Command { return newRoot(c, nil) }

// oneCommand adapts a single-command constructor to the command table.
func oneCommand(f func(*CLI) *cobra.Command) func(*CLI) []*cobra.Command {
	return func(c *CLI) []*cobra.Command { return []*cobra.Command{f(c)} }
}

// commandTable builds berthctl's top-level commands by name (aliases
// included). Building all of them, with their hundreds of flags, is a
// noticeable part of a short command's run time (a container start is
// tens of milliseconds); an invocation builds only the one it names.
var commandTable = []struct {
	names []string
	build func(*CLI) []*cobra.Command
}{
	{[]string{"version"}, oneCommand(newVersionCommand)},
	{[]string{"info"}, oneCommand(newInfoCommand)},
	{[]string{"namespace", "ns"}, oneCommand(newNamespaceCommand)},
	{[]string{"network"}, oneCommand(newNetworkCommand)},
	{[]string{"events"}, oneCommand(newEventsCommand)},
	{[]string{"create"}, oneCommand(newCreateCommand)},
	{[]string{"run"}, oneCommand(newRunCommand)},
	{[]string{"start"}, oneCommand(newStartCommand)},
	{[]string{"stop"}, func(c *CLI) []*cobra.Command { return []*cobra.Command{newStopCommand(c, false)} }},
	{[]string{"restart"}, func(c *CLI) []*cobra.Command { return []*cobra.Command{newStopCommand(c, true)} }},
	{[]string{"kill"}, oneCommand(newKillCommand)},
	{[]string{"rm", "remove"}, oneCommand(newRmCommand)},
	{[]string{"ps"}, oneCommand(newPsCommand)},
	{[]string{"logs"}, oneCommand(newLogsCommand)},
	{[]string{"exec"}, oneCommand(newExecCommand)},
	{[]string{"attach"}, oneCommand(newAttachCommand)},
	{[]string{"wait"}, oneCommand(newWaitCommand)},
	{[]string{"rename"}, oneCommand(newRenameCommand)},
	{[]string{"commit"}, oneCommand(newCommitCommand)},
	{[]string{"cp"}, oneCommand(newCpCommand)},
	{[]string{"inspect"}, oneCommand(newInspectCommand)},
	{[]string{"top"}, oneCommand(newTopCommand)},
	{[]string{"stats"}, oneCommand(newStatsCommand)},
	{[]string{"system"}, oneCommand(newSystemCommand)},
	{[]string{"pause", "unpause"}, newPauseCommands},
	{[]string{"image", "images", "pull", "push", "rmi", "tag", "save", "load", "login", "logout"}, newImageCommands},
}

// newRoot builds the command tree: only the top-level command args name
// (after the root's own flags), or all of them when args name none (help,
// completion, a typo that deserves suggestions) or are nil.
func newRoot(c *CLI, args []string) *cobra.Command {
	root := &cobra.Command{
		Use:           "berthctl",
		Short:         "Berth's command line: containers and images, the Docker way",
		SilenceUsage:  true,
		SilenceErrors: true,
		CompletionOptions: cobra.CompletionOptions{
			HiddenDefaultCmd: false,
		},
	}
	root.SetOut(c.Out)
	root.SetErr(c.Err)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w\nSee '%s --help'", err, cmd.CommandPath())}
	})
	pf := root.PersistentFlags()
	addrDefault := envOr("BERTH_ADDRESS", DefaultAddress)
	const addrUsage = "berthd address: unix:///path, a socket path, or tcp://host:port (env BERTH_ADDRESS)"
	pf.StringVar(&c.TLS.CA, "tlscacert", os.Getenv("BERTH_TLS_CA"), "CA that berthd's certificate chains to, for tcp:// (env BERTH_TLS_CA)")
	pf.StringVar(&c.TLS.Cert, "tlscert", os.Getenv("BERTH_TLS_CERT"), "client certificate for tcp:// (env BERTH_TLS_CERT)")
	pf.StringVar(&c.TLS.Key, "tlskey", os.Getenv("BERTH_TLS_KEY"), "client key for tcp:// (env BERTH_TLS_KEY)")
	name := commandName(args)
	built := false
	for _, e := range commandTable {
		if name != "" && slices.Contains(e.names, name) {
			root.AddCommand(e.build(c)...)
			built = true
			break
		}
	}
	if !built {
		for _, e := range commandTable {
			root.AddCommand(e.build(c)...)
		}
		root.InitDefaultHelpCmd()
		root.InitDefaultCompletionCmd()
	}
	// -a is --address and -n is --namespace everywhere except in the
	// commands where Docker gives those letters a meaning of its own
	// (ps -a/-n, start -a, stats -a, logs -n); there the long forms or the
	// environment name them. So they are local flags of each command, not
	// persistent ones, which cobra could not shadow.
	nsDefault := envOr("BERTH_NAMESPACE", "default")
	var addGlobals func(cmd *cobra.Command)
	addGlobals = func(cmd *cobra.Command) {
		if cmd.Runnable() || !cmd.HasSubCommands() {
			short := func(s string) string {
				if cmd.Flags().ShorthandLookup(s) != nil {
					return ""
				}
				return s
			}
			cmd.Flags().StringVarP(&c.Address, "address", short("a"), addrDefault, addrUsage)
			cmd.Flags().StringVarP(&c.Namespace, "namespace", short("n"), nsDefault, "namespace (env BERTH_NAMESPACE)")
		}
		for _, sub := range cmd.Commands() {
			addGlobals(sub)
		}
	}
	addGlobals(root)
	return root
}

// commandName is the first argument that is not one of the root's own
// flags, or --address or --namespace written before the command (or
// their values): the top-level command, or "" when there is none.
func commandName(args []string) string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--tlscacert" || a == "--tlscert" || a == "--tlskey" ||
			a == "-a" || a == "--address" || a == "-n" || a == "--namespace":
			i++ // its value
		case strings.HasPrefix(a, "--tlscacert=") || strings.HasPrefix(a, "--tlscert=") || strings.HasPrefix(a, "--tlskey=") ||
			strings.HasPrefix(a, "--address=") || strings.HasPrefix(a, "--namespace="):
		case strings.HasPrefix(a, "-"):
			return "" // help, or a flag only the full tree can judge
		default:
			return a
		}
	}
	return ""
}

// Main runs berthctl with args and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	return run(args, stdout, stderr, true)
}

// run is Main; closeConn says whether to close the connection to berthd
// at the end, which a process about to exit need not do: gRPC's Close
// sends GOAWAY and waits for its transport's goroutines, milliseconds
// after the answer is in, where exiting closes the socket at once.
func run(args []string, stdout, stderr io.Writer, closeConn bool) int {
	c := &CLI{Out: stdout, Err: stderr}
	if closeConn {
		defer c.Close()
	}
	root := newRoot(c, args)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	if err == nil {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		fmt.Fprintln(stderr, "berthctl:", err)
		return ExitUsage
	}
	var ec exitCode
	if errors.As(err, &ec) {
		return int(ec)
	}
	var re runError
	if errors.As(err, &re) {
		fmt.Fprintln(stderr, "berthctl:", c.explain(re.err))
		return re.code
	}
	fmt.Fprintln(stderr, c.explain(err))
	return ExitError
}

// exitCode ends berthctl with a given code and no message (the container's
// exit code, for run and wait).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func isCobraUsage(err error) bool {
	msg := strings.ToLower(err.Error())
	// Flag errors come through SetFlagErrorFunc; only these reach here
	// unwrapped from cobra itself.
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// args checks the number of positional arguments as cobra's validators do,
// but reports a usage error (exit 125) that points at --help.
func args(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if len(a) < min || (max >= 0 && len(a) > max) {
			want := fmt.Sprintf("%d", min)
			switch {
			case max < 0:
				want = fmt.Sprintf("at least %d", min)
			case max != min:
				want = fmt.Sprintf("%d to %d", min, max)
			}
			return usageError{fmt.Errorf("%q requires %s argument(s), got %d\nSee '%s --help'.\n\nUsage:  %s",
				cmd.CommandPath(), want, len(a), cmd.CommandPath(), cmd.UseLine())}
		}
		return nil
	}
}

func sortStrings(s []string) { sort.Strings(s) }

// Run is berthctl's main.
func Run() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, false)) }
