package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

// Report is what results.json holds.
type Report struct {
	Date    string   `json:"date"`
	Machine string   `json:"machine"`
	Command string   `json:"command"`
	Results []Result `json:"results"`
}

// Result is one figure of one workload on both systems.
type Result struct {
	Workload string `json:"workload"`
	Metric   string `json:"metric"`
	Unit     string `json:"unit"`
	// LowerIsBetter tells how to read the ratio.
	LowerIsBetter bool  `json:"lower_is_better"`
	Berth         Stats `json:"berth"`
	Containerd    Stats `json:"containerd"`
	// Ratio is Berth's median over containerd's.
	Ratio  float64 `json:"ratio"`
	Target string  `json:"target,omitempty"`
}

// Stats summarise the samples of one system.
type Stats struct {
	N       int       `json:"n"`
	Median  float64   `json:"median"`
	P90     float64   `json:"p90"`
	Samples []float64 `json:"samples,omitempty"`
}

func summarize(samples []float64) Stats {
	if len(samples) == 0 {
		return Stats{}
	}
	s := append([]float64(nil), samples...)
	sort.Float64s(s)
	pick := func(q float64) float64 {
		i := int(q*float64(len(s)-1) + 0.5)
		return s[i]
	}
	median := s[len(s)/2]
	if len(s)%2 == 0 {
		median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stats{N: len(s), Median: median, P90: pick(0.9), Samples: samples}
}

func newResult(workload, metric, unit string, lower bool, target string, berth, ctrd []float64) Result {
	r := Result{Workload: workload, Metric: metric, Unit: unit, LowerIsBetter: lower, Target: target,
		Berth: summarize(berth), Containerd: summarize(ctrd)}
	if r.Containerd.Median != 0 {
		r.Ratio = r.Berth.Median / r.Containerd.Median
	}
	return r
}

// berthOnly is a figure containerd has no counterpart for: its
// containerd column and ratio stay empty.
func berthOnly(workload, metric, unit, target string, samples []float64) Result {
	return Result{Workload: workload, Metric: metric, Unit: unit, LowerIsBetter: true, Target: target, Berth: summarize(samples)}
}

// difference is a Berth-only figure: a's median minus b's, over n pairs
// of alternating samples. It has no p90 of its own.
func difference(workload, metric, unit, target string, a, b Stats) Result {
	return Result{Workload: workload, Metric: metric, Unit: unit, LowerIsBetter: true, Target: target,
		Berth: Stats{N: min(a.N, b.N), Median: a.Median - b.Median}}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func printTable(w io.Writer, r Report) {
	fmt.Fprintf(w, "Berth vs containerd 1.6 + runc, %s, %s\n\n", r.Machine, r.Date)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tmetric\tberth median\tberth p90\tcontainerd median\tcontainerd p90\tberth/containerd\tbetter\ttarget\t")
	for _, x := range r.Results {
		better := "containerd"
		if (x.LowerIsBetter && x.Ratio < 1) || (!x.LowerIsBetter && x.Ratio > 1) {
			better = "berth"
		}
		if x.Ratio == 0 {
			better = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", x.Workload, x.Metric,
			num(x.Berth.Median, x.Unit), num(x.Berth.P90, x.Unit), num(x.Containerd.Median, x.Unit), num(x.Containerd.P90, x.Unit),
			ratio(x.Ratio, "%.3f"), better, x.Target)
	}
	tw.Flush()
}

func num(v float64, unit string) string {
	switch {
	case v == 0:
		return "-"
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	}
	return fmt.Sprintf("%.2f %s", v, unit)
}

func machine() string {
	var uts unix.Utsname
	unix.Uname(&uts)
	var si unix.Sysinfo_t
	unix.Sysinfo(&si)
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	return fmt.Sprintf("%d cores (%s), %.0f GiB, Linux %s", runtime.NumCPU(), model,
		float64(si.Totalram)*float64(si.Unit)/(1<<30), unix.ByteSliceToString(uts.Release[:]))
}

// printMarkdown renders a report as the README's Performance table.
func printMarkdown(w io.Writer, r Report) {
	fmt.Fprintf(w, "Measured %s on %s with `%s`.\n\n", r.Date, r.Machine, r.Command)
	fmt.Fprintln(w, "| workload | metric | Berth median (p90) | containerd median (p90) | Berth/containerd | target |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, x := range r.Results {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", x.Workload, x.Metric,
			withP90(x.Berth, x.Unit), withP90(x.Containerd, x.Unit), ratio(x.Ratio, "%.2f"), x.Target)
	}
}

// withP90 is "median (p90)", or the median alone for a derived figure
// (a difference), or "-" for a system without samples.
func withP90(s Stats, unit string) string {
	if s.N == 0 {
		return "-"
	}
	if s.P90 == 0 {
		return num(s.Median, unit)
	}
	return fmt.Sprintf("%s (%s)", num(s.Median, unit), num(s.P90, unit))
}

// ratio is "-" where containerd has no counterpart.
func ratio(v float64, format string) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}
