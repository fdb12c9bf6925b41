package perf

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Machine is where a run happened: figures mean little without it.
type Machine struct {
	CPUs      int
	CPUModel  string
	Kernel    string
	GoVersion string
	// LoadAvg is /proc/loadavg's one-minute figure at the start: above
	// zero, something else was running.
	LoadAvg string
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), CPUModel: "unknown", Kernel: runtime.GOOS}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			m.LoadAvg = f[0]
		}
	}
	return m
}

// Summary is the median over rounds of each figure of one side.
type Summary struct {
	RPS      float64
	P50, P99 time.Duration
	CPU      time.Duration
	SimCPU   time.Duration
	DBCPU    time.Duration
}

// Summarize takes the median of each figure over the rounds.
func Summarize(rounds []Round) Summary {
	pick := func(f func(Round) float64) float64 {
		v := make([]float64, len(rounds))
		for i, r := range rounds {
			v[i] = f(r)
		}
		return median(v)
	}
	dur := func(f func(Round) time.Duration) time.Duration {
		return time.Duration(pick(func(r Round) float64 { return float64(f(r)) }))
	}
	return Summary{
		RPS: pick(func(r Round) float64 { return r.RPS }),
		P50: dur(func(r Round) time.Duration { return r.P50 }),
		P99: dur(func(r Round) time.Duration { return r.P99 }),
		CPU: dur(func(r Round) time.Duration { return r.CPU }), SimCPU: dur(func(r Round) time.Duration { return r.SimCPU }),
		DBCPU: dur(func(r Round) time.Duration { return r.DBCPU }),
	}
}

// medianOf is the median of durations or byte counts.
func medianOf[T ~int64](d []T) T {
	v := make([]float64, len(d))
	for i, x := range d {
		v[i] = float64(x)
	}
	return T(median(v))
}

// Goal is one of issue 10's targets with this run's value.
type Goal struct {
	Name, Target, Value string
	Met                 bool
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// Goals checks the run against issue 10's measurable goals.
func (r *Results) Goals() []Goal {
	wb, wp := Summarize(r.Worklist.Bridge), Summarize(r.Worklist.Proxy)
	rb, rpx := Summarize(r.Read.Bridge), Summarize(r.Read.Proxy)
	rep := r.Reports
	calls := ratio(float64(r.Walk.BridgeQUBSCalls), float64(r.Walk.BridgePages))
	payload := float64(rep.PayloadBytes)
	heapSeq := ratio(float64(medianOf(rep.HeapSequential)), payload)
	heapConc := ratio(float64(medianOf(rep.HeapConcurrent)), payload)
	latency := ratio(float64(medianOf(rep.Minimal)), float64(medianOf(rep.Floor)))
	b2b := ratio(float64(medianOf(rep.BackToBack)), float64(medianOf(rep.Floor)))
	g := []Goal{
		{"1. worklist throughput, bridge/proxy", "≥ 0.5×", fmt.Sprintf("%.2f×", ratio(wb.RPS, wp.RPS)), ratio(wb.RPS, wp.RPS) >= 0.5},
		{"1. worklist CPU per page, bridge/proxy", "≤ 5×", fmt.Sprintf("%.1f×", ratio(float64(wb.CPU), float64(wp.CPU))), ratio(float64(wb.CPU), float64(wp.CPU)) <= 5},
		{"1. QUBS calls per FHIR page, full walk", "1", fmt.Sprintf("%.2f", calls), calls <= 1},
		{"1. short pages before the last (`_count` honoured)", "0", fmt.Sprint(r.Walk.BridgeShortPages), r.Walk.BridgeShortPages == 0},
		{"4. report POST latency, bridge/floor", "≤ 3×", fmt.Sprintf("%.1f×", latency), latency <= 3},
		{"4. the same, back to back (the previous report's delivery beside it)", "≤ 3×", fmt.Sprintf("%.1f×", b2b), b2b <= 3},
		{"4. peak heap per report (bytes allocated, POST to delivery), one at a time", "≤ 2× payload", fmt.Sprintf("%.2f×", heapSeq), len(rep.HeapSequential) > 0 && heapSeq <= 2},
		{fmt.Sprintf("4. the same, %d at once", r.Config.ConcurrentPosts), "≤ 2× payload", fmt.Sprintf("%.2f×", heapConc), len(rep.HeapConcurrent) > 0 && heapConc <= 2},
		{"4. bytes echoed by a report POST (no Prefer)", "a URL, not the payload", fmtBytes(rep.EchoFull), rep.EchoFull < int64(rep.PayloadBytes)/100},
		{"5. read ServiceRequest/{id}, bridge/proxy", "≥ 0.7×", fmt.Sprintf("%.2f×", ratio(rb.RPS, rpx.RPS)), ratio(rb.RPS, rpx.RPS) >= 0.7},
	}
	return g
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	}
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<20 || n <= -(1<<20):
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10 || n <= -(1<<10):
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

func fmtRatio(a, b float64) string {
	if b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// WriteMarkdown prints the run as markdown: the machine, the side-by-side
// table, the goals of issue 10, and every round so the noise shows.
func (r *Results) WriteMarkdown(w io.Writer) {
	c, m := r.Config, r.Machine
	fmt.Fprintf(w, "## qubs-fhir-bridge bench, %s\n\n", r.Started.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "Machine: %d × %s, %s, %s; load average %s at the start. ", m.CPUs, m.CPUModel, m.Kernel, m.GoVersion, m.LoadAvg)
	fmt.Fprintf(w, "Run: %d rounds (bridge, proxy, bridge, ...) of %v (worklist) and %v (reads) per side after %v of warm-up, %d clients, `_count=%d`, "+
		"%d appointments per domain (seed %d), bridge on %s with the audit on (a read waits for %s), log level %s; took %v.\n\n",
		c.Rounds, c.Duration, c.ReadDuration, c.Warmup, c.Clients, c.Count, c.Appointments, c.Seed, c.storeName(), c.auditWaitName(), c.BridgeLogLevel, r.Took.Round(time.Second))
	if len(r.Profiles) > 0 {
		fmt.Fprintf(w, "The bridge was profiled (its figures carry the profiler's cost): %d profiles in %s, for `go tool pprof`.\n\n", len(r.Profiles), c.ProfileDir)
	}

	wb, wp := Summarize(r.Worklist.Bridge), Summarize(r.Worklist.Proxy)
	rb, rp := Summarize(r.Read.Bridge), Summarize(r.Read.Proxy)
	rep := r.Reports
	fmt.Fprintln(w, "| work | figure | bridge | bare proxy / floor | ratio |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	row := func(work, fig, b, p, ratio string) {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", work, fig, b, p, ratio)
	}
	wk := fmt.Sprintf("worklist page of %d, %d clients", c.Count, c.Clients)
	row(wk, "throughput", fmt.Sprintf("%.0f req/s", wb.RPS), fmt.Sprintf("%.0f req/s", wp.RPS), fmtRatio(wb.RPS, wp.RPS))
	row("", "latency p50", fmtDur(wb.P50), fmtDur(wp.P50), fmtRatio(float64(wb.P50), float64(wp.P50)))
	row("", "latency p99", fmtDur(wb.P99), fmtDur(wp.P99), fmtRatio(float64(wb.P99), float64(wp.P99)))
	row("", "CPU per page (own process)", fmtDur(wb.CPU), fmtDur(wp.CPU), fmtRatio(float64(wb.CPU), float64(wp.CPU)))
	if isPostgres(c.Store) {
		row("", "PostgreSQL server CPU per page", fmtDur(wb.DBCPU), "—", "")
		row("", "CPU per page, own process + PostgreSQL", fmtDur(wb.CPU+wb.DBCPU), fmtDur(wp.CPU), fmtRatio(float64(wb.CPU+wb.DBCPU), float64(wp.CPU)))
	}
	row("", "QUBS (simulator) CPU per page", fmtDur(wb.SimCPU), fmtDur(wp.SimCPU), fmtRatio(float64(wb.SimCPU), float64(wp.SimCPU)))
	wl := r.Walk
	row("", fmt.Sprintf("QUBS calls per page, full walk (%d pages, %d studies)", wl.BridgePages, wl.BridgeEntries),
		fmt.Sprintf("%.2f", ratio(float64(wl.BridgeQUBSCalls), float64(wl.BridgePages))),
		fmt.Sprintf("%.2f", ratio(float64(wl.ProxyQUBSCalls), float64(wl.ProxyPages))), "")
	row("", "short pages before the last", fmt.Sprint(wl.BridgeShortPages), "—", "")
	rd := fmt.Sprintf("read `ServiceRequest/{id}`, %d clients", c.Clients)
	row(rd, "throughput", fmt.Sprintf("%.0f req/s", rb.RPS), fmt.Sprintf("%.0f req/s", rp.RPS), fmtRatio(rb.RPS, rp.RPS))
	row("", "latency p50", fmtDur(rb.P50), fmtDur(rp.P50), fmtRatio(float64(rb.P50), float64(rp.P50)))
	row("", "latency p99", fmtDur(rb.P99), fmtDur(rp.P99), fmtRatio(float64(rb.P99), float64(rp.P99)))
	row("", "CPU per read (own process)", fmtDur(rb.CPU), fmtDur(rp.CPU), fmtRatio(float64(rb.CPU), float64(rp.CPU)))
	if isPostgres(c.Store) {
		row("", "PostgreSQL server CPU per read", fmtDur(rb.DBCPU), "—", "")
	}
	rw := fmt.Sprintf("report with a %s PDF (%s of JSON)", fmtBytes(int64(rep.PayloadBytes)), fmtBytes(int64(rep.RequestBytes)))
	floor, minimal := medianOf(rep.Floor), medianOf(rep.Minimal)
	row(rw, fmt.Sprintf("POST latency, `return=minimal` (median of %d)", len(rep.Minimal)), fmtDur(minimal), fmtDur(floor)+" (floor)", fmtRatio(float64(minimal), float64(floor)))
	row("", fmt.Sprintf("POST latency, no Prefer (median of %d)", len(rep.Full)), fmtDur(medianOf(rep.Full)), fmtDur(floor)+" (floor)", fmtRatio(float64(medianOf(rep.Full)), float64(floor)))
	row("", fmt.Sprintf("POST latency, back to back, `return=minimal` (median of %d)", len(rep.BackToBack)), fmtDur(medianOf(rep.BackToBack)), fmtDur(floor)+" (floor)", fmtRatio(float64(medianOf(rep.BackToBack)), float64(floor)))
	row("", fmt.Sprintf("POST latency, %d at once (median)", len(rep.Concurrent)), fmtDur(medianOf(rep.Concurrent)), "—", "")
	if len(rep.Flush) > 0 {
		// Information, not a goal: the floor keeps nothing durable, the
		// bridge must before its 201.
		flush := medianOf(rep.Flush)
		row("", "POST latency, `return=minimal`, against the floor + one flush of the payload to disk (information)", fmtDur(minimal),
			fmtDur(floor)+" + "+fmtDur(flush), fmtRatio(float64(minimal), float64(floor+flush)))
	}
	payload := float64(rep.PayloadBytes)
	heap := func(v []int64) string {
		if len(v) == 0 {
			return "—"
		}
		return fmt.Sprintf("%s (%s–%s)", fmtBytes(medianOf(v)), fmtBytes(slices.Min(v)), fmtBytes(slices.Max(v)))
	}
	row("", fmt.Sprintf("heap per report: bytes allocated, POST to delivery, one at a time (median of %d; range)", len(rep.HeapSequential)),
		heap(rep.HeapSequential), "—", fmt.Sprintf("%.2f× payload", ratio(float64(medianOf(rep.HeapSequential)), payload)))
	row("", fmt.Sprintf("the same, %d at once (median of %d rounds, per report; range)", c.ConcurrentPosts, len(rep.HeapConcurrent)),
		heap(rep.HeapConcurrent), "—", fmt.Sprintf("%.2f× payload", ratio(float64(medianOf(rep.HeapConcurrent)), payload)))
	row("", "peak RSS growth, sequential (the collector's headroom in it)", fmtBytes(rep.PeakSequential), "—", fmt.Sprintf("%.1f× payload", ratio(float64(rep.PeakSequential), payload)))
	row("", fmt.Sprintf("peak RSS growth, %d at once", len(rep.Concurrent)), fmtBytes(rep.PeakConcurrent), "—", fmt.Sprintf("%.1f× payload", ratio(float64(rep.PeakConcurrent), payload)))
	row("", "bytes echoed back, no Prefer / `return=minimal`", fmtBytes(rep.EchoFull)+" / "+fmtBytes(rep.EchoMinimal), "—", "")
	if !rep.Delivered {
		fmt.Fprintln(w, "\nWarning: QUBS had not received every report when the peak RSS was read.")
	}

	fmt.Fprintln(w, "\n### Issue 10's goals")
	fmt.Fprintln(w, "\n| goal | target | this run | met |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, g := range r.Goals() {
		met := "no"
		if g.Met {
			met = "yes"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", g.Name, g.Target, g.Value, met)
	}

	fmt.Fprintln(w, "\n### Rounds")
	fmt.Fprintln(w, "\n| work | round | side | requests | req/s | p50 | p99 | CPU/req | QUBS CPU/req |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, x := range []struct {
		name string
		cmp  Comparison
	}{{"worklist", r.Worklist}, {"read", r.Read}} {
		for i := range max(len(x.cmp.Bridge), len(x.cmp.Proxy)) {
			for _, s := range []struct {
				name   string
				rounds []Round
			}{{"bridge", x.cmp.Bridge}, {"proxy", x.cmp.Proxy}} {
				if i >= len(s.rounds) {
					continue
				}
				rd := s.rounds[i]
				fmt.Fprintf(w, "| %s | %d | %s | %d | %.0f | %s | %s | %s | %s |\n", x.name, i+1, s.name, rd.Requests, rd.RPS,
					fmtDur(rd.P50), fmtDur(rd.P99), fmtDur(rd.CPU), fmtDur(rd.SimCPU))
			}
		}
	}
	durs := func(d []time.Duration) string {
		out := make([]string, len(d))
		for i, x := range d {
			out[i] = fmtDur(x)
		}
		return strings.Join(out, ", ")
	}
	lat := func(d []time.Duration) string {
		s := slices.Clone(d)
		slices.Sort(s)
		return durs(s)
	}
	fmt.Fprintf(w, "\nReport POSTs (sorted): return=minimal %s; no Prefer %s; back to back %s; at once %s; floor %s; flush %s. "+
		"Not counted: the first POST of each phase's fresh bridge (sequential, at once, heap) %s, as the floor's first round (its token) is not; "+
		"the sequential phase's warm-up after its first, in order, %s.\n",
		lat(rep.Minimal), lat(rep.Full), lat(rep.BackToBack), lat(rep.Concurrent), lat(rep.Floor), lat(rep.Flush), durs(rep.First), orNone(durs(rep.Warmup)))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
