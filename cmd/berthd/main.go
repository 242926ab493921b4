// Command berthd is the Berth agent: it serves the gRPC API on a Unix
// socket and supervises containers through their shims.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/agent/config"
	"github.com/berth-dev/berth/version"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "berthd:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var (
		configPath string
		flags      config.Config
	)
	cmd := &cobra.Command{
		Use:           "berthd",
		Short:         "Berth container agent",
		Version:       version.Version + " (" + version.GitCommit + ")",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(configPath, cmd.Flags().Changed("config"))
			if err != nil {
				return err
			}
			// Flags override the file, but only those given.
			set := func(name string, dst *string, v string) {
				if cmd.Flags().Changed(name) {
					*dst = v
				}
			}
			set("root", &cfg.Root, flags.Root)
			set("state", &cfg.State, flags.State)
			set("address", &cfg.Address, flags.Address)
			set("log-level", &cfg.LogLevel, flags.LogLevel)
			set("log-format", &cfg.LogFormat, flags.LogFormat)
			set("tcp-address", &cfg.TCP.Address, flags.TCP.Address)
			set("tls-cert", &cfg.TCP.TLSCert, flags.TCP.TLSCert)
			set("tls-key", &cfg.TCP.TLSKey, flags.TCP.TLSKey)
			set("tls-ca", &cfg.TCP.TLSCA, flags.TCP.TLSCA)
			if cmd.Flags().Changed("insecure-tcp") {
				cfg.TCP.Insecure = flags.TCP.Insecure
			}
			if !cmd.Flags().Changed("address") && cmd.Flags().Changed("state") && cfg.Address == config.Default().Address {
				// A private --state gets its socket inside it, so two
				// instances never fight over the default socket.
				cfg.Address = cfg.State + "/berth.sock"
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			return run(cfg, os.Stderr)
		},
	}
	def := config.Default()
	f := cmd.Flags()
	f.StringVar(&configPath, "config", config.DefaultPath, "config file (TOML); see 'berthd config default'")
	f.StringVar(&flags.Root, "root", def.Root, "root directory for persistent data")
	f.StringVar(&flags.State, "state", def.State, "state directory for runtime data")
	f.StringVar(&flags.Address, "address", def.Address, "Unix socket of the gRPC API (default <state>/berth.sock when --state is given)")
	f.StringVar(&flags.LogLevel, "log-level", def.LogLevel, "log level: debug, info, warn, error")
	f.StringVar(&flags.LogFormat, "log-format", def.LogFormat, "log format: text or json")
	f.StringVar(&flags.TCP.Address, "tcp-address", "", "also serve the API on this TCP host:port, with mutual TLS")
	f.StringVar(&flags.TCP.TLSCert, "tls-cert", "", "server certificate (PEM) for the TCP listener")
	f.StringVar(&flags.TCP.TLSKey, "tls-key", "", "server key (PEM) for the TCP listener")
	f.StringVar(&flags.TCP.TLSCA, "tls-ca", "", "CA (PEM) that client certificates must chain to")
	f.BoolVar(&flags.TCP.Insecure, "insecure-tcp", false, "serve plain TCP without TLS: anyone who reaches the port controls the host")
	cmd.AddCommand(&cobra.Command{
		Use:   "config",
		Short: "Configuration helpers",
	})
	cmd.Commands()[0].AddCommand(&cobra.Command{
		Use:   "default",
		Short: "Print the default configuration, every key documented",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprint(cmd.OutOrStdout(), config.DefaultTOML)
		},
	})
	return cmd
}

func run(cfg *config.Config, logOut io.Writer) error {
	level, _ := config.ParseLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(logOut, opts)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(logOut, opts)
	}
	log := slog.New(h)
	slog.SetDefault(log)

	a, err := agent.New(cfg, log)
	if err != nil {
		return err
	}
	if err := a.Listen(); err != nil {
		a.Close()
		return err
	}
	if cfg.TCP.Address != "" {
		if err := a.ListenTCP(); err != nil {
			a.Close()
			return err
		}
	}
	log.Info("berthd started", "version", version.Version, "root", cfg.Root, "state", cfg.State, "pid", os.Getpid())

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	served := make(chan error, 1)
	go func() { served <- a.Serve() }()
	select {
	case sig := <-sigs:
		log.Info("shutting down", "signal", sig.String())
		a.Shutdown(context.Background())
		return <-served
	case err := <-served:
		a.Shutdown(context.Background())
		return err
	}
}
