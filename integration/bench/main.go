// Command bench measures Berth side by side with containerd + runc on the
// same machine, in one run, and prints a table of medians, p90s and
// Berth/containerd ratios; it also writes the figures as JSON.
//
// Both systems run privately (own root, state and socket, so no clash
// with an installed instance) against one loopback registry holding the
// benchmark images, generated here. Berth is driven through berthctl and
// containerd through ctr, so both include their CLI's start. Workloads
// alternate A B A B so drift on a shared machine hits both alike.
//
// Run it as root from the repository root: make bench.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	var (
		out     = flag.String("out", "bench/results.json", "where to write the results as JSON")
		binDir  = flag.String("bin", "bin", "directory holding berthd, berth-shim and berthctl")
		only    = flag.String("only", "", "comma-separated workloads to run (default: all)")
		systems = flag.String("systems", "berth,containerd", "comma-separated systems to run")
		quick   = flag.Bool("quick", false, "fewer iterations and a smaller pull image, to check the harness itself")
		render  = flag.String("markdown", "", "print the results in this JSON file as the README's Markdown table, and exit")
	)
	flag.Parse()
	if *render != "" {
		data, err := os.ReadFile(*render)
		if err != nil {
			fatal(err)
		}
		var r Report
		if err := json.Unmarshal(data, &r); err != nil {
			fatal(err)
		}
		printMarkdown(os.Stdout, r)
		return
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench runs as root: it starts berthd, containerd and containers")
		os.Exit(1)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	bin, err := filepath.Abs(*binDir)
	if err != nil {
		fatal(err)
	}
	h, err := newHarness(log, bin, strings.Split(*systems, ","), *quick)
	if err != nil {
		fatal(err)
	}
	defer h.close()
	results, err := h.run(selected(*only))
	if err != nil {
		h.close()
		fatal(err)
	}
	report := Report{
		Date:    time.Now().UTC().Format(time.RFC3339),
		Machine: machine(),
		Command: "make bench",
		Results: results,
	}
	printTable(os.Stdout, report)
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		fatal(err)
	}
	data, _ := json.MarshalIndent(report, "", "  ")
	if err := os.WriteFile(*out, append(data, '\n'), 0o644); err != nil {
		fatal(err)
	}
	fmt.Printf("\nresults written to %s\n", *out)
}

func selected(only string) map[string]bool {
	if only == "" {
		return nil
	}
	m := map[string]bool{}
	for _, w := range strings.Split(only, ",") {
		m[strings.TrimSpace(w)] = true
	}
	return m
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
