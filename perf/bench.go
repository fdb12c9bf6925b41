package perf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/internal/proccpu"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// Config is what a bench run does. DefaultConfig takes about 70 seconds
// on two cores.
type Config struct {
	// Launch starts this program (simulator, bridge, proxy); required.
	Launch Launcher
	// Progress receives a line per phase; nil is quiet.
	Progress io.Writer

	Rounds       int           // bridge/proxy round pairs per workload
	Duration     time.Duration // of one worklist round, per side
	ReadDuration time.Duration // of one read round, per side
	Warmup       time.Duration // per side and workload, before the rounds
	Clients      int           // concurrent closed-loop clients
	Count        int           // _count of a FHIR page, pageSize of a QUBS page

	Domain       string
	Seed         int64
	Appointments int // the simulator seeds this many per domain, spread over statuses

	ReportPosts int // sequential report POSTs with return=minimal, as many without, as many back to back
	// ReportWarmup is how many POSTs the sequential phase's fresh bridge
	// gets before its measured ones, beyond its first (Reports.First). A
	// fresh bridge's first reports were about twice as slow on PostgreSQL
	// as its later ones (a new schema's first room for chunks, new
	// database backends touching shared buffers for the first time):
	// start-up, which a long-running bridge has behind it.
	ReportWarmup    int
	ConcurrentPosts int // report POSTs sent at once
	// PDFBytes is the size of the report's PDF; 0 is the largest QUBS
	// accepts (2 MiB), the size issue 10 measures. Tests use less.
	PDFBytes int

	// BridgeLogLevel is the bridge's BRIDGE_LOG_LEVEL; "info" is serve's
	// default and logs a line per request, part of the real cost.
	BridgeLogLevel string
	// AuditWait is the bridge's BRIDGE_AUDIT_WAIT: "auto" (serve's
	// default: reads wait for their audit record's commit on PostgreSQL,
	// not on SQLite), "commit" or "queue".
	AuditWait string
	// AuditJournal is the bridge's BRIDGE_AUDIT_JOURNAL: "auto" (serve's
	// default: beside a SQLite database, none with PostgreSQL), "off", or
	// "on": a directory of the bridge's own in the run's temporary
	// directory, as the Helm chart gives each PostgreSQL replica.
	AuditJournal string
	// ArtifactReserve is the bridge's BRIDGE_ARTIFACT_RESERVE; "" leaves
	// serve's default.
	ArtifactReserve string

	// Store is where the bridges keep their data: "" for SQLite (serve's
	// default) in the run's temporary directory, or a postgres:// URL,
	// where each bridge gets a schema of its own, dropped at the end.
	Store string

	// ProfileDir, when set, receives the bridge's profiles (profile.go):
	// CPU per worklist and read round, heap and allocations after each
	// report phase. Created if missing.
	ProfileDir string
}

// DefaultConfig is the configuration of "qubs-fhir-bridge bench" without
// flags.
func DefaultConfig() Config {
	return Config{
		Rounds: 3, Duration: 5 * time.Second, ReadDuration: 3 * time.Second, Warmup: time.Second,
		Clients: 16, Count: 100, Domain: "acme", Seed: 1, Appointments: 1200,
		// Fifteen of each: the floor alone spread from 8 to 15 ms within
		// runs of five (2026-12-03), too few for a steady median.
		ReportPosts: 15, ConcurrentPosts: 8, BridgeLogLevel: "info",
		// Ten: on PostgreSQL, a fresh bridge's first ten POSTs took about
		// 50 ms, the next ten about 25 (2026-12-04, docs/performance.md).
		ReportWarmup: 10,
		AuditWait:    "auto", AuditJournal: "auto",
	}
}

func (c Config) check() error {
	switch {
	case c.Launch == nil:
		return errors.New("bench: no launcher")
	case c.Rounds < 1 || c.Clients < 1 || c.ReportPosts < 1 || c.ConcurrentPosts < 1:
		return errors.New("bench: rounds, clients, report-posts and concurrent-posts must be at least 1")
	case c.ReportWarmup < 0:
		return errors.New("bench: report-warmup must not be negative")
	case c.Duration <= 0 || c.ReadDuration <= 0 || c.Warmup < 0:
		return errors.New("bench: durations must be positive")
	case c.Count < qubs.MinPageSize || c.Count > qubs.MaxPageSize:
		return fmt.Errorf("bench: count must be within %d..%d, what both QUBS and the bridge accept", qubs.MinPageSize, qubs.MaxPageSize)
	case c.PDFBytes < 0 || c.PDFBytes > qubs.MaxUploadBytes:
		return fmt.Errorf("bench: the PDF must be at most %d bytes, what QUBS accepts", qubs.MaxUploadBytes)
	case c.Appointments < 1 || c.Appointments > 100_000:
		return errors.New("bench: appointments must be within 1..100000")
	case c.AuditWait != "auto" && c.AuditWait != "commit" && c.AuditWait != "queue":
		return fmt.Errorf("bench: audit-wait %q: want auto, commit or queue", c.AuditWait)
	case c.AuditJournal != "auto" && c.AuditJournal != "off" && c.AuditJournal != "on":
		return fmt.Errorf("bench: audit-journal %q: want auto, off or on", c.AuditJournal)
	case c.Store != "" && !isPostgres(c.Store):
		return errors.New("bench: the store must be empty (SQLite) or a postgres:// URL")
	}
	return nil
}

// Round is one side's measurement in one round of a workload.
type Round struct {
	Requests int
	Errors   int
	RPS      float64
	P50, P99 time.Duration
	// CPU is the CPU time of the side's own process (bridge or proxy) per
	// request, SimCPU the simulator's. DBCPU is the local PostgreSQL
	// server's (every process named postgres, whoever it serves) when the
	// bridge's store is PostgreSQL, else zero: on the same cores it costs
	// throughput like the bridge's own.
	CPU, SimCPU, DBCPU time.Duration
}

// Comparison holds the rounds of one workload, bridge and proxy.
type Comparison struct {
	Bridge, Proxy []Round
}

// Walk is a full sequential walk of the domain's worklist through each
// side, with the QUBS calls it cost as the simulator counted them.
type Walk struct {
	BridgePages, BridgeEntries, BridgeQUBSCalls int
	// BridgeShortPages counts pages before the last with fewer than
	// Count entries.
	BridgeShortPages                       int
	ProxyPages, ProxyItems, ProxyQUBSCalls int
}

// Reports holds the figures of a DiagnosticReport with a 2 MiB PDF.
type Reports struct {
	PayloadBytes, RequestBytes int
	// Floor is the same QUBS work without the bridge: upload URL, PUT,
	// report submission, through qubs.Client from the harness.
	Floor []time.Duration
	// Flush is the least durability adds to the floor: the payload
	// written to a new file in the run's directory and flushed to disk
	// (fsync), as many times as the floor. The bridge answers 201 only
	// once a report is durable in its store, which the floor is not
	// (QUBS keeps it); Floor+Flush is information beside the goal,
	// which stays Floor.
	Flush []time.Duration
	// Minimal and Full are sequential POSTs with Prefer: return=minimal
	// and without Prefer, each sent once QUBS has received the report
	// before it, as the floor's rounds follow each other.
	Minimal, Full []time.Duration
	// BackToBack are sequential POSTs with return=minimal, each sent as
	// soon as the one before was answered: the delivery of the one
	// before (reading its PDF back, uploading it to QUBS) runs beside it.
	BackToBack []time.Duration
	// Concurrent are the latencies of ConcurrentPosts POSTs sent at once
	// (return=minimal).
	Concurrent []time.Duration
	// First are the POSTs each phase's fresh bridge gets before its
	// measured ones (sequential, then at once), not counted in any
	// figure, as the floor's first round is not: the bridge's first QUBS
	// token, connections and first use of the code are in them.
	First []time.Duration
	// Warmup are the sequential phase's POSTs after its first and before
	// its measured ones (Config.ReportWarmup), each sent once QUBS had the
	// one before; not counted either.
	Warmup []time.Duration
	// EchoMinimal and EchoFull are the body bytes of the answers.
	EchoMinimal, EchoFull int64
	// PeakSequential and PeakConcurrent are how far the bridge's peak RSS
	// (VmHWM) rose above its RSS before the phase, each phase on a fresh
	// bridge process, deliveries to QUBS included.
	PeakSequential, PeakConcurrent int64
	// HeapSequential are the bytes the bridge allocated for each of
	// ReportPosts reports, one at a time, from its POST until QUBS had
	// it; HeapConcurrent the same per report for rounds of ConcurrentPosts
	// at once (runner.reportHeap).
	HeapSequential, HeapConcurrent []int64
	// Delivered says whether QUBS received every report before the peak
	// was read.
	Delivered bool
}

// Results is a bench run.
type Results struct {
	Machine  Machine
	Config   Config
	Started  time.Time
	Took     time.Duration
	Walk     Walk
	Worklist Comparison
	Read     Comparison
	Reports  Reports
	// Schemas are the PostgreSQL schemas the bridges ran on (Config.Store),
	// dropped when Run returns.
	Schemas []string
	// Profiles are the files written to Config.ProfileDir.
	Profiles []string
}

// Run starts a simulator, a bridge (SQLite store unless Config.Store says
// otherwise, audit on, as serve runs by default) and a bare proxy, and
// measures them side by side.
func Run(ctx context.Context, cfg Config) (res *Results, err error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, res: &Results{Config: cfg, Started: time.Now().UTC(), Machine: machine()}}
	r.res.Config.Launch, r.res.Config.Progress = nil, nil
	if u, err := url.Parse(cfg.Store); err == nil && cfg.Store != "" {
		r.res.Config.Store = u.Redacted() // results are printed and kept
	}
	defer r.close()
	if cfg.ProfileDir != "" {
		if err := checkProfileDir(cfg.ProfileDir); err != nil {
			return nil, err
		}
	}
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	for _, phase := range []func(context.Context) error{r.walk, r.worklist, r.reads, r.reports} {
		if err := phase(ctx); err != nil {
			return nil, err
		}
	}
	r.res.Took = time.Since(r.res.Started)
	r.res.Schemas = r.schemas
	return r.res, nil
}

type runner struct {
	cfg Config
	res *Results
	dir string

	sim, proxy, bridge          *child
	simURL, proxyURL, bridgeURL string
	zones                       string
	ids                         []string // pending appointment ids, from the proxy walk

	bridgeHTTP, proxyHTTP *http.Client
	bridges               int
	schemas               []string // PostgreSQL schemas of the bridges (store.go)

	mu sync.Mutex // guards res.Profiles, written by profiles' goroutines
}

func (r *runner) logf(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, "bench: "+format+"\n", args...)
	}
}

func (r *runner) close() {
	for _, c := range []*child{r.bridge, r.proxy, r.sim} {
		if c != nil {
			c.stop()
		}
	}
	if r.dir != "" {
		os.RemoveAll(r.dir)
	}
	r.dropSchemas()
}

var (
	simReady = printed(regexp.MustCompile(`API base:\s+(\S+)`))
	proxyRe  = printed(regexp.MustCompile(regexp.QuoteMeta(proxyReady) + `(\S+)`))
)

func (r *runner) qubsEnv() []string {
	return []string{
		"QUBS_API_URL=" + r.simURL,
		"QUBS_TOKEN_URL=" + r.simURL + "/oauth2/token",
		"QUBS_CLIENT_ID=" + qubssim.DefaultClientID,
		"QUBS_CLIENT_SECRET=" + qubssim.DefaultClientSecret,
	}
}

func loadClient(clients int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = clients * 2
	t.MaxIdleConns = clients * 4
	return &http.Client{Transport: t, Timeout: 2 * time.Minute}
}

func (r *runner) setup(ctx context.Context) error {
	var err error
	if r.dir, err = os.MkdirTemp("", "qubs-fhir-bridge-bench-"); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	// The sites span Australian zones; tell the bridge which is which, as
	// the demo does. The simulator is deterministic per seed, so a copy
	// here knows the same sites.
	zones := qubssim.New(qubssim.Options{Seed: r.cfg.Seed, Appointments: r.cfg.Appointments}).SiteTimeZones()
	var sites []string
	for site, z := range zones {
		sites = append(sites, site+"="+z)
	}
	sort.Strings(sites)
	r.zones = strings.Join(sites, ";")

	r.logf("starting the QUBS simulator (%d appointments per domain)", r.cfg.Appointments)
	r.sim, r.simURL, err = startChild(ctx, r.cfg.Launch, r.dir, "qubs-sim", []string{"qubs-sim", "--listen", "127.0.0.1:0"}, []string{
		"QUBS_SIM_SEED=" + strconv.FormatInt(r.cfg.Seed, 10),
		"QUBS_SIM_APPOINTMENTS=" + strconv.Itoa(r.cfg.Appointments),
		// A line per request would make the simulator's share noisier;
		// it is the same QUBS for both sides anyway.
		"BRIDGE_LOG_LEVEL=warn",
	}, simReady)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	r.logf("starting the bare proxy")
	r.proxy, r.proxyURL, err = startChild(ctx, r.cfg.Launch, r.dir, "proxy", []string{"bench", ProxyCommand, "--listen", "127.0.0.1:0"}, r.qubsEnv(), proxyRe)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	r.logf("starting the bridge (%s store, audit on, reads waiting for %s, log level %s)", r.cfg.storeName(), r.cfg.auditWaitName(), r.cfg.BridgeLogLevel)
	if r.bridge, r.bridgeURL, err = r.startBridge(ctx, false); err != nil {
		return err
	}
	r.bridgeHTTP, r.proxyHTTP = loadClient(r.cfg.Clients), loadClient(r.cfg.Clients)
	return nil
}

// startBridge starts a bridge as an operator would run serve, on a store
// of its own. Its address is chosen here, and it is ready when /healthz
// answers: what it logs depends on the log level under test. With
// metrics it serves its Prometheus metrics (child.metrics) even without
// profiles.
func (r *runner) startBridge(ctx context.Context, metrics bool) (*child, string, error) {
	r.bridges++
	name := "bridge-" + strconv.Itoa(r.bridges)
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	storeURL, err := r.bridgeStore(ctx, name)
	if err != nil {
		return nil, "", err
	}
	profEnv, pprofURL, err := r.pprofEnv()
	metricsURL := pprofURL
	if err == nil && metrics && pprofURL == "" {
		profEnv, metricsURL, err = metricsEnv()
	}
	if err != nil {
		return nil, "", err
	}
	env := append(append(r.qubsEnv(), profEnv...),
		"BRIDGE_LISTEN="+addr,
		"BRIDGE_AUTH=none",
		"BRIDGE_STORE="+storeURL,
		// The bench is one client sending as fast as it can; the per-client
		// limit would measure the limiter.
		"BRIDGE_RATE_LIMIT=0",
		"BRIDGE_LOG_LEVEL="+r.cfg.BridgeLogLevel,
		"BRIDGE_AUDIT_WAIT="+r.cfg.AuditWait,
		"BRIDGE_AUDIT_JOURNAL="+r.auditJournal(name),
		"BRIDGE_SITE_TIMEZONES="+r.zones,
	)
	if r.cfg.ArtifactReserve != "" {
		env = append(env, "BRIDGE_ARTIFACT_RESERVE="+r.cfg.ArtifactReserve)
	}
	u := "http://" + addr
	healthy := func([]byte) (string, bool) {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := get(ctx, http.DefaultClient, u+"/healthz")
		return u, err == nil
	}
	c, _, err := startChild(ctx, r.cfg.Launch, r.dir, name, []string{"serve"}, env, healthy)
	if err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	c.pprof, c.metrics = pprofURL, metricsURL
	return c, u, nil
}

// freeLoopbackAddr picks a port the kernel says is free. Another process
// could take it before the bridge binds it; the bridge then fails to start
// and says so.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (r *runner) fhirBase() string { return r.bridgeURL + "/fhir/" + r.cfg.Domain }
func (r *runner) qubsBase() string {
	return r.proxyURL + "/integrations/v1/" + url.PathEscape(r.cfg.Domain) + "/reporting/appointments"
}
func (r *runner) firstFHIR() string {
	return r.fhirBase() + "/ServiceRequest?_count=" + strconv.Itoa(r.cfg.Count)
}
func (r *runner) firstQUBS() string {
	return r.qubsBase() + "/pending?pageSize=" + strconv.Itoa(r.cfg.Count)
}

// simRequests is the number of API requests the simulator has answered
// (its inspection view; admin requests are not counted).
func (r *runner) simRequests(ctx context.Context) (int, error) {
	b, err := get(ctx, http.DefaultClient, r.simURL+"/_sim/inspect")
	if err != nil {
		return 0, fmt.Errorf("bench: reading the simulator's counters: %w", err)
	}
	var v struct{ Requests int }
	if err := json.Unmarshal(b, &v); err != nil {
		return 0, fmt.Errorf("bench: reading the simulator's counters: %w", err)
	}
	return v.Requests, nil
}

// walk pages through the whole worklist once through each side, one
// request at a time, and counts the QUBS calls each page cost.
func (r *runner) walk(ctx context.Context) error {
	r.logf("walking the %s worklist through both sides", r.cfg.Domain)
	// Tokens are fetched on first use; a first page each keeps them out
	// of the count.
	if _, err := get(ctx, r.bridgeHTTP, r.firstFHIR()); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if _, err := get(ctx, r.proxyHTTP, r.firstQUBS()); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	w := &r.res.Walk
	before, err := r.simRequests(ctx)
	if err != nil {
		return err
	}
	var sizes []int
	for u := r.firstFHIR(); u != ""; {
		b, err := get(ctx, r.bridgeHTTP, u)
		if err != nil {
			return fmt.Errorf("bench: bridge walk: %w", err)
		}
		var page struct {
			Link  []struct{ Relation, URL string }
			Entry []struct{ Search struct{ Mode string } }
		}
		if err := json.Unmarshal(b, &page); err != nil {
			return fmt.Errorf("bench: bridge walk: %w", err)
		}
		n := 0
		for _, e := range page.Entry {
			if e.Search.Mode != "include" {
				n++
			}
		}
		sizes = append(sizes, n)
		u = ""
		for _, l := range page.Link {
			if l.Relation == "next" {
				u = l.URL
			}
		}
	}
	after, err := r.simRequests(ctx)
	if err != nil {
		return err
	}
	w.BridgePages, w.BridgeQUBSCalls = len(sizes), after-before
	for i, n := range sizes {
		w.BridgeEntries += n
		if i < len(sizes)-1 && n < r.cfg.Count {
			w.BridgeShortPages++
		}
	}

	before = after
	for u := r.firstQUBS(); u != ""; {
		b, err := get(ctx, r.proxyHTTP, u)
		if err != nil {
			return fmt.Errorf("bench: proxy walk: %w", err)
		}
		var page struct {
			Items     []struct{ AppointmentID string }
			NextToken *string
		}
		if err := json.Unmarshal(b, &page); err != nil {
			return fmt.Errorf("bench: proxy walk: %w", err)
		}
		w.ProxyPages++
		for _, it := range page.Items {
			r.ids = append(r.ids, it.AppointmentID)
		}
		u = ""
		if page.NextToken != nil && *page.NextToken != "" {
			u = r.firstQUBS() + "&nextToken=" + url.QueryEscape(*page.NextToken)
		}
	}
	if after, err = r.simRequests(ctx); err != nil {
		return err
	}
	w.ProxyItems, w.ProxyQUBSCalls = len(r.ids), after-before
	if len(r.ids) == 0 {
		return fmt.Errorf("bench: the %s domain has no pending appointment", r.cfg.Domain)
	}
	r.logf("walk: bridge %d pages, %d QUBS calls; proxy %d pages, %d QUBS calls", w.BridgePages, w.BridgeQUBSCalls, w.ProxyPages, w.ProxyQUBSCalls)
	return nil
}

// side is one contender in a workload.
type side struct {
	name string
	proc *child
	step func(client int) step
}

// compare runs warm-up, then rounds of bridge and proxy in turn (A B A B),
// reading the CPU time of each process around each round.
func (r *runner) compare(ctx context.Context, what string, d time.Duration, bridge, proxy side, out *Comparison) error {
	for _, s := range []side{bridge, proxy} {
		if r.cfg.Warmup > 0 {
			if res := drive(ctx, r.cfg.Clients, r.cfg.Warmup, s.step); res.errors > 0 {
				return fmt.Errorf("bench: %s warm-up through the %s: %d errors, first: %w", what, s.name, res.errors, res.firstErr)
			}
		}
	}
	for i := range r.cfg.Rounds {
		for _, s := range []side{bridge, proxy} {
			rd, err := r.round(ctx, d, s, fmt.Sprintf("%s-%s-round%d.cpu.pb.gz", what, s.name, i+1))
			if err != nil {
				return fmt.Errorf("bench: %s through the %s: %w", what, s.name, err)
			}
			if s.name == bridge.name {
				out.Bridge = append(out.Bridge, rd)
			} else {
				out.Proxy = append(out.Proxy, rd)
			}
			r.logf("%s round %d/%d, %s: %.0f req/s, p99 %v, CPU %v/req", what, i+1, r.cfg.Rounds, s.name, rd.RPS, rd.P99.Round(10*time.Microsecond), rd.CPU.Round(time.Microsecond))
		}
	}
	return nil
}

// round drives one side for d and measures it; profile names the file of
// its CPU profile, when the side's process serves one.
func (r *runner) round(ctx context.Context, d time.Duration, s side, profile string) (Round, error) {
	for _, c := range []*child{s.proc, r.sim} {
		if err := c.alive(); err != nil {
			return Round{}, err
		}
	}
	cpu0, err := cpuTime(s.proc.pid())
	if err != nil {
		return Round{}, err
	}
	sim0, err := cpuTime(r.sim.pid())
	if err != nil {
		return Round{}, err
	}
	db0 := r.dbCPU()
	prof := r.profileRound(ctx, s.proc, d, profile)
	defer prof.stop() // a round that fails leaves no profile running
	res := drive(ctx, r.cfg.Clients, d, s.step)
	db1 := r.dbCPU()
	cpu1, err := cpuTime(s.proc.pid())
	if err != nil {
		return Round{}, err
	}
	sim1, err := cpuTime(r.sim.pid())
	if err != nil {
		return Round{}, err
	}
	if res.errors > 0 {
		return Round{}, fmt.Errorf("%d of %d requests failed, first: %w", res.errors, res.errors+res.requests, res.firstErr)
	}
	if res.requests == 0 {
		return Round{}, errors.New("no request completed")
	}
	// After the readings: the profile runs a little past the round.
	if err := prof.wait(); err != nil {
		return Round{}, err
	}
	n := time.Duration(res.requests)
	return Round{
		Requests: res.requests, RPS: float64(res.requests) / res.elapsed.Seconds(),
		P50: quantile(res.lat, 0.50), P99: quantile(res.lat, 0.99),
		CPU: (cpu1 - cpu0) / n, SimCPU: (sim1 - sim0) / n, DBCPU: (db1 - db0) / n,
	}, nil
}

// dbCPU is the local PostgreSQL server's CPU time so far, when the bridge's
// store is PostgreSQL (zero otherwise, and when it runs elsewhere).
func (r *runner) dbCPU() time.Duration {
	if !isPostgres(r.cfg.Store) {
		return 0
	}
	return proccpu.Named("postgres")
}

// worklist: every client walks the worklist page by page, following next
// links, and starts again at the first page at the end.
func (r *runner) worklist(ctx context.Context) error {
	bridge := side{name: "bridge", proc: r.bridge, step: func(int) step {
		u := r.firstFHIR()
		return func(ctx context.Context) error {
			b, err := get(ctx, r.bridgeHTTP, u)
			if err != nil {
				u = r.firstFHIR()
				return err
			}
			next, err := nextLink(b)
			if err != nil || next == "" {
				u = r.firstFHIR()
				return err
			}
			u = next
			return nil
		}
	}}
	proxy := side{name: "proxy", proc: r.proxy, step: func(int) step {
		u := r.firstQUBS()
		return func(ctx context.Context) error {
			b, err := get(ctx, r.proxyHTTP, u)
			if err != nil {
				u = r.firstQUBS()
				return err
			}
			tok, err := nextToken(b)
			if err != nil || tok == "" {
				u = r.firstQUBS()
				return err
			}
			u = r.firstQUBS() + "&nextToken=" + url.QueryEscape(tok)
			return nil
		}
	}}
	return r.compare(ctx, "worklist", r.cfg.Duration, bridge, proxy, &r.res.Worklist)
}

// reads: every client reads random pending studies by id.
func (r *runner) reads(ctx context.Context) error {
	srIDs := make([]string, len(r.ids))
	for i, id := range r.ids {
		sr, err := mapping.ServiceRequestID(id)
		if err != nil {
			return fmt.Errorf("bench: appointment id %q: %w", id, err)
		}
		srIDs[i] = sr
	}
	reader := func(hc *http.Client, u func(i int) string) func(int) step {
		return func(client int) step {
			rng := rand.New(rand.NewPCG(uint64(client), 42))
			return func(ctx context.Context) error {
				_, err := get(ctx, hc, u(rng.IntN(len(srIDs))))
				return err
			}
		}
	}
	bridge := side{name: "bridge", proc: r.bridge, step: reader(r.bridgeHTTP, func(i int) string {
		return r.fhirBase() + "/ServiceRequest/" + srIDs[i]
	})}
	proxy := side{name: "proxy", proc: r.proxy, step: reader(r.proxyHTTP, func(i int) string {
		return r.qubsBase() + "/" + url.PathEscape(r.ids[i])
	})}
	return r.compare(ctx, "read", r.cfg.ReadDuration, bridge, proxy, &r.res.Read)
}
