package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"golang.org/x/oauth2"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auditjournal"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/delivery"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/observe"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/retention"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/subs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/worklist"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

var errUsage = errors.New("usage")

// Main is the program, separate from main() so that end-to-end tests run
// the real thing on port 0 and stop it through the context.
type Main struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string

	// Ready is closed once every listener of the command is bound; then
	// BridgeURL and SimURL hold their addresses.
	Ready     chan struct{}
	BridgeURL string
	SimURL    string
	// MetricsURL is where /metrics is served, "" when metrics are off.
	MetricsURL string

	// Stdin feeds hash-token when no token is given as an argument.
	Stdin io.Reader
	args  []string

	// MemoryLimit reports the container's memory limit, which serve
	// follows with the runtime's soft limit (setMemoryLimit); nil leaves
	// the runtime's limit alone, as tests that run serve in their own
	// process do. Its overrides, GOMEMLIMIT and AUTOMEMLIMIT, are read
	// from the process's environment, not Getenv: the runtime and the
	// library read them there.
	MemoryLimit memlimit.Provider
}

// NewMain returns a Main wired to the process's stdout, stderr and
// environment.
func NewMain() *Main {
	return &Main{Stdout: os.Stdout, Stderr: os.Stderr, Stdin: os.Stdin, Getenv: os.Getenv, Ready: make(chan struct{}),
		MemoryLimit: memlimit.FromCgroup}
}

// commands lists the options each command reads.
var commands = map[string][]string{
	"serve": {"qubs-api-url", "qubs-token-url", "qubs-client-id", "qubs-client-secret", "qubs-client-secret-file",
		"qubs-auth-style", "listen", "public-url", "store", "auth", "static-tokens-file", "jwt-jwks-url", "jwt-issuer",
		"jwt-audience", "jwt-algorithms", "jwt-domains-claim", "jwt-skew", "jwt-scope-claim", "smart-clients-file",
		"smart-signing-key-file", "smart-token-ttl", "default-timezone", "site-timezones", "cursor-key",
		"trusted-proxies", "tls-cert", "tls-key", "retention", "audit-retention", "audit-buffer", "audit-wait", "audit-journal", "rate-limit", "rate-burst", "artifact-reserve", "delivery-workers", "delivery-lease", "subscription-allow-nets", "subscription-error-after", "metrics-listen", "pprof", "log-level", "domains",
		"worklist-index", "worklist-sync-interval", "comment-poll-rate"},
	"demo": {"listen", "public-url", "store", "default-timezone", "site-timezones", "sim-listen", "seed", "appointments", "churn",
		"retention", "audit-retention", "audit-buffer", "audit-wait", "audit-journal", "rate-limit", "rate-burst", "artifact-reserve", "delivery-workers", "delivery-lease", "subscription-allow-nets", "subscription-error-after", "metrics-listen", "pprof", "log-level",
		"worklist-index", "worklist-sync-interval", "comment-poll-rate"},
	"qubs-sim":   {"listen", "seed", "appointments", "churn", "used-upload-url", "log-level"},
	"hash-token": {"log-level"},
}

func init() {
	// check validates exactly what serve reads.
	commands["check"] = commands["serve"]
}

// Run runs the command named by args[0] until ctx is done.
func (m *Main) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		m.help(m.Stderr)
		return errUsage
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		// Asked for, help is the answer: stdout, so that it pipes to a
		// pager or grep.
		m.help(m.Stdout)
		return nil
	}
	cmd := args[0]
	if cmd == "bench" {
		return m.bench(ctx, args[1:])
	}
	if cmd == "deliveries" {
		return m.deliveries(ctx, args[1:])
	}
	names, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(m.Stderr, "unknown command %q\n\n", cmd)
		m.help(m.Stderr)
		return errUsage
	}
	opts := commandOptions(cmd)
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	opts.register(fs, names...)
	usageOut := m.Stderr
	if slices.ContainsFunc(args[1:], func(a string) bool { return a == "-h" || a == "--help" || a == "-help" }) {
		usageOut = m.Stdout // asked for, not a mistake
	}
	fs.Usage = func() {
		fmt.Fprintf(usageOut, "usage: qubs-fhir-bridge %s [flags]\n\n", cmd)
		opts.usage(usageOut, names...)
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 && cmd != "hash-token" {
		fmt.Fprintf(m.Stderr, "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return errUsage
	}
	opts.resolve(m.Getenv)
	if cmd == "hash-token" {
		m.args = fs.Args()
		return m.hashToken()
	}
	log, err := m.logger(opts.get("log-level"))
	if err != nil {
		return err
	}
	log.Info("configuration", "command", cmd, "version", version, "settings", opts.effective(names...))
	switch cmd {
	case "hash-token":
		return m.hashToken()
	case "serve":
		return m.serve(ctx, opts, log)
	case "check":
		return m.check(ctx, opts, log)
	case "demo":
		return m.demo(ctx, opts, log)
	default:
		return m.sim(ctx, opts, log)
	}
}

// commandOptions is the configuration of one command, with the defaults
// that differ from serve's.
func commandOptions(cmd string) *options {
	opts := newOptions()
	switch cmd {
	case "qubs-sim":
		// The simulator alone listens on --listen, with its own twin so
		// that BRIDGE_LISTEN of a bridge in the same shell is not taken.
		opts.byFlag["listen"].env = "QUBS_SIM_LISTEN"
		opts.byFlag["listen"].def = "127.0.0.1:8090"
		opts.byFlag["listen"].usage = "listen address of the QUBS simulator (API, token endpoint and presigned URLs)"
	case "demo":
		// Without BRIDGE_STORE the demo keeps its reports in a temporary
		// SQLite file removed when it stops.
		opts.byFlag["store"].def = ""
		// One person on loopback exploring synthetic data: never throttle.
		opts.byFlag["rate-limit"].def = "0"
		// Metrics on, on a free loopback port the demo prints: a fixed
		// one would collide with a second demo or a Prometheus.
		opts.byFlag["metrics-listen"].def = "127.0.0.1:0"
	}
	return opts
}

func (m *Main) help(w io.Writer) {
	fmt.Fprintf(w, `qubs-fhir-bridge %s: a FHIR R4 server in front of the QUBS Integrations API

usage: qubs-fhir-bridge <command> [flags]

commands:
  serve      the FHIR server against a real QUBS
  demo       a seeded QUBS simulator and the bridge in one process, on loopback
  qubs-sim   the QUBS simulator alone
  hash-token the SHA-256 of a static bearer token (from stdin), for BRIDGE_STATIC_TOKENS_FILE
  check      validate serve's whole configuration (QUBS, store, auth files, clock) without serving
  deliveries list, retry or abandon report deliveries to QUBS (docs/deliveries.md)
  bench      the bridge and a bare reverse proxy side by side over the simulator (docs/performance.md)
  help       this text

Every flag has an environment twin; flags win over the environment.
`, version)
	opts := newOptions()
	opts.usage(w, opts.order...)
}

func (m *Main) logger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("BRIDGE_LOG_LEVEL %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(m.Stderr, &slog.HandlerOptions{Level: l})), nil
}

func (m *Main) serve(ctx context.Context, opts *options, log *slog.Logger) error {
	listen := opts.get("listen")
	if err := checkAuth(opts.get("auth"), listen); err != nil {
		return err
	}
	if opts.get("auth") == "smart" && opts.get("public-url") == "" {
		return errors.New("BRIDGE_AUTH=smart needs BRIDGE_PUBLIC_URL: clients sign their assertions for the token URL's exact address")
	}
	if err := checkStore(opts.get("store")); err != nil {
		return err
	}
	secret, err := opts.clientSecret()
	if err != nil {
		return err
	}
	switch {
	case opts.get("qubs-client-id") == "" && secret == "":
		return errors.New("QUBS_CLIENT_ID and QUBS_CLIENT_SECRET (or QUBS_CLIENT_SECRET_FILE) are not set: serve needs the bridge's QUBS client credentials")
	case opts.get("qubs-client-id") == "":
		return errors.New("QUBS_CLIENT_ID is not set (QUBS_CLIENT_SECRET is)")
	case secret == "":
		return errors.New("QUBS_CLIENT_SECRET (or QUBS_CLIENT_SECRET_FILE) is not set (QUBS_CLIENT_ID is)")
	}
	style, err := authStyle(opts.get("qubs-auth-style"))
	if err != nil {
		return err
	}
	if m.MemoryLimit != nil {
		setMemoryLimit(log, m.MemoryLimit)
	}
	tel, err := newTelemetry(ctx, opts, m.Getenv)
	if err != nil {
		return err
	}
	defer tel.close(ctx)
	client, err := qubs.New(qubs.Config{
		BaseURL:      opts.get("qubs-api-url"),
		TokenURL:     opts.get("qubs-token-url"),
		ClientID:     opts.get("qubs-client-id"),
		ClientSecret: secret,
		AuthStyle:    style,
		UserAgent:    "qubs-fhir-bridge/" + version,
		Observer:     observe.QUBS(tel.metrics, tel.tracer()),
	})
	if err != nil {
		return fmt.Errorf("QUBS client: %w", err)
	}
	cfg, err := serverConfig(opts, client, log, cursorKey(opts.get("cursor-key"), secret))
	if err != nil {
		return err
	}
	bg, err := backgroundOptions(opts)
	if err != nil {
		return err
	}
	tel.wire(&cfg, &bg)
	// Everything that can be checked without side effects comes first:
	// the auth files and keys, then the port (a busy port is the
	// commonest start-up mistake), then QUBS's word on the credentials;
	// only then is the store opened (created and migrated on first use),
	// so that no mistake leaves a new database behind.
	replay := &lateReplay{}
	if err := configureAuth(&cfg, opts, replay, log); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("BRIDGE_LISTEN %s: %w", listen, err)
	}
	defer ln.Close()
	if err := checkQUBSCredentials(ctx, client, log); err != nil {
		return err
	}
	if lvl := checkStoreLevel(ctx, opts.get("store")); lvl.ahead {
		// Not fatal: during a rolling upgrade old replicas run on a schema
		// a newer release migrated (additive migrations; docs/store.md).
		log.Warn("start-up check", "check", lvl.name, "result", "fail", "reason", userMessage(lvl.err))
	}
	st, err := openStore(ctx, opts.get("store"))
	if err != nil {
		return err
	}
	defer st.Close()
	st = observe.Store(st, tel.metrics, tel.tracer())
	replay.ReplayCache = st // jti replay claims shared by every replica of the store
	if cfg.AuditJournal, err = openAuditJournal(opts, log); err != nil {
		return err
	}
	m.BridgeURL = "http://" + ln.Addr().String()
	if bg.tls != nil {
		m.BridgeURL = "https://" + ln.Addr().String()
	}
	tel.serve(log)
	m.MetricsURL = tel.url()
	close(m.Ready)
	log.Info("serving FHIR", "addr", ln.Addr().String(), "tls", bg.tls != nil)
	go warnQUBSChecks(ctx, opts, log)
	return serveWithDelivery(ctx, ln, cfg, st, client, bg, log)
}

// checkQUBSCredentials fetches a QUBS token once at start. Credentials
// QUBS refuses are an operator's mistake that no retry fixes: fail now,
// with a line that names the settings. QUBS being down is not: say so
// loudly and serve anyway (answers from the store, reports accepted for
// later delivery); every request tries again.
func checkQUBSCredentials(ctx context.Context, client *qubs.Client, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err := client.Token(ctx)
	switch {
	case err == nil:
		return nil
	case qubs.KindOf(err) == qubs.KindUnauthorized:
		return fmt.Errorf("QUBS refused the bridge's credentials (QUBS_CLIENT_ID, QUBS_CLIENT_SECRET or QUBS_CLIENT_SECRET_FILE, QUBS_TOKEN_URL): %w", err)
	default:
		log.Warn("QUBS token endpoint not reachable at start; serving anyway, each request tries again",
			"qubs_kind", qubs.KindOf(err).String(), "error", err.Error())
		return nil
	}
}

// serveWithDelivery runs the FHIR server and the delivery worker until ctx
// is done: the server stops taking requests first, then the worker stops
// between two deliveries, so nothing accepted is left half done (an
// interrupted delivery is retried from the store on the next start).
func serveWithDelivery(ctx context.Context, ln net.Listener, cfg server.Config, st store.Store, client *qubs.Client, bg background, log *slog.Logger) error {
	host, _ := os.Hostname()
	replica := fmt.Sprintf("%s-%d", host, os.Getpid())
	worker := delivery.Worker{Store: st, QUBS: client, Logger: log.With("component", "delivery"), Name: replica, Observer: bg.deliveryObserver, Lease: bg.lease}
	var syncer *worklist.Syncer
	if bg.worklistIndex {
		syncer = &worklist.Syncer{Store: st, QUBS: client, Zones: cfg.Zones, Owner: replica, Intervals: bg.worklistIntervals, Logger: log.With("component", "worklist")}
		for _, d := range bg.domains {
			syncer.Add(d)
		}
		cfg.Worklist = syncer
		// A delivered report changes the study in QUBS: re-read it.
		wlog := log.With("component", "worklist")
		worker.Delivered = func(ctx context.Context, domain, appointmentID string) {
			if err := syncer.Refresh(ctx, domain, appointmentID); err != nil {
				wlog.Warn("worklist index: refresh after delivery failed", "domain", domain, "error", err.Error())
			}
		}
	}
	var comments *worklist.CommentWatch
	if syncer != nil {
		comments = &worklist.CommentWatch{Store: st, QUBS: client, Syncer: syncer, Owner: replica, Rate: bg.commentRate,
			Logger: log.With("component", "comments")}
	}
	pool := delivery.NewPool(bg.workers, worker)
	cfg.Store, cfg.Kick, cfg.Accepted = st, pool.Kick, pool.Accepted
	reserve, nudge := store.ArtifactReserver(nil), make(chan struct{}, 1)
	if r, ok := st.(store.ArtifactReserver); ok && bg.artifactReserve > 0 {
		reserve = r
		cfg.Accepted = func(rep *store.Report) {
			pool.Accepted(rep)
			if len(rep.Artifacts) > 0 {
				select {
				case nudge <- struct{}{}:
				default: // one waiting is enough
				}
			}
		}
	}
	sender, dispatcher := subscriptionWorkers(ln, &cfg, st, bg, fmt.Sprintf("%s-%d", host, os.Getpid()), log)
	wctx, stopWorkers := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if syncer != nil {
		wg.Add(2)
		go func() { defer wg.Done(); syncer.Run(wctx) }()
		go func() { defer wg.Done(); comments.Run(wctx) }()
	}
	wg.Add(4)
	go func() { defer wg.Done(); pool.Run(wctx) }()
	go func() { defer wg.Done(); dispatcher.Run(wctx) }()
	go func() {
		defer wg.Done()
		retention.Run(wctx, st, bg.retention, bg.auditRetention, time.Hour, log.With("component", "retention"))
	}()
	if reserve != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keepArtifactReserve(wctx, reserve, bg.artifactReserve, nudge, time.Second, log.With("component", "artifact-reserve"))
		}()
	}
	srv := server.New(cfg)
	sender.Resolve = srv.NotificationFocus(sender.Base)
	go func() { defer wg.Done(); sender.Run(wctx) }()
	if bg.ready != nil {
		go func() {
			if syncer != nil {
				rctx, cancel := context.WithTimeout(wctx, readyWait)
				for _, d := range bg.domains {
					if _, err := syncer.Ready(rctx, d); err != nil {
						log.Warn("worklist index: the first walk is not done yet", "domain", d, "error", err.Error())
						break
					}
				}
				cancel()
			}
			bg.ready()
		}()
	}
	err := serveHTTP(ctx, ln, srv, bg.tls, log)
	// The HTTP server has drained: no request can queue an audit record
	// any more, and the store is still open for the last batch.
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cerr := srv.Close(cctx); cerr != nil {
		err = errors.Join(err, cerr)
	}
	stopWorkers()
	wg.Wait()
	return err
}

// keepArtifactReserve keeps want bytes of room for artifacts made in the
// store (ReserveArtifactSpace): at the start, and after reports with
// artifacts were accepted (nudge), at most once a pause (serve: a
// second) while reports are few. While they use up the room (room was
// made within the last pause) it checks again after a nudge sooner: a
// tenth of the pause after its last call ended, or three times as long
// as that call took if that is longer, so that making room takes at most
// a quarter of the time, however long a top-up takes. After a failure it
// waits the whole pause. A request then never waits for the table to
// grow unless reports come faster than the room is made.
//
// Why sooner: one top-up a second makes at most want a second, 16 MiB
// by default, eight 2 MiB reports; a reporting system sending its
// reports one after another sent about 28 a second in the harness, and
// most of them then grew the table themselves, 4–5 ms more each
// (docs/performance.md, "Room for artifacts as fast as reports use it").
// Why the bound: a top-up's VACUUM reads the table's whole index, tenths
// of a second once many reports' chunks are kept (docs/known-gaps.md).
// Once a pause goes by without room made, the whole pause comes back.
func keepArtifactReserve(ctx context.Context, r store.ArtifactReserver, want int64, nudge <-chan struct{}, pause time.Duration, log *slog.Logger) {
	var (
		failing string    // the last failure logged: once, not at every report
		made    time.Time // when room was last made
	)
	for {
		start := time.Now()
		added, err := r.ReserveArtifactSpace(ctx, want)
		took := time.Since(start)
		wait := pause
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if err.Error() != failing {
				failing = err.Error()
				log.Warn("making room for artifacts failed; reports are stored anyway, growing the table as they go", "error", failing)
			}
		} else {
			if failing != "" {
				failing = ""
				log.Info("making room for artifacts works again")
			}
			if added > 0 {
				made = time.Now()
				log.Debug("made room for artifacts", "bytes", added)
			}
			if time.Since(made) < pause { // false while none was made: the zero time is long past
				wait = max(pause/10, 3*took)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		select {
		case <-ctx.Done():
			return
		case <-nudge:
		}
	}
}

// background holds the settings of what runs beside the HTTP server.
type background struct {
	// artifactReserve is BRIDGE_ARTIFACT_RESERVE in bytes; 0 is off.
	artifactReserve int64
	retention       time.Duration
	auditRetention  time.Duration
	workers         int // delivery workers
	lease           time.Duration
	tls             *tls.Config // nil serves plain HTTP
	// deliveryObserver watches the delivery workers (metrics, traces);
	// nil when both are off.
	deliveryObserver delivery.Observer
	// subscriptionObserver watches the notification senders (metrics).
	subscriptionObserver subs.Observer
	// worklistIndex serves ServiceRequest searches from the index the
	// syncer keeps, walking each domain every worklistIntervals.
	worklistIndex     bool
	worklistIntervals worklist.Intervals
	// commentRate is BRIDGE_COMMENT_POLL_RATE: the comment watch's QUBS
	// calls per second per domain.
	commentRate float64
	// domains are BRIDGE_DOMAINS: indexed from the start (others from
	// their first search).
	domains []string
	// subscriptionNets and subscriptionErrorAfter are
	// BRIDGE_SUBSCRIPTION_ALLOW_NETS and _ERROR_AFTER.
	subscriptionNets       []netip.Prefix
	subscriptionErrorAfter time.Duration
	// ready, when set, is called once the HTTP server is up and the
	// first walk of each of domains has finished (at once without the
	// index; after readyWait at most): the demo's banner.
	ready func()
}

// readyWait bounds how long bg.ready waits for first walks: past it the
// searches wait for their walk themselves (or answer 503).
const readyWait = 2 * time.Minute

func backgroundOptions(opts *options) (background, error) {
	keep, err := retention.ParseDuration(opts.get("retention"))
	if err != nil {
		return background{}, fmt.Errorf("BRIDGE_RETENTION: %w", err)
	}
	keepAudit, err := retention.ParseDuration(opts.get("audit-retention"))
	if err != nil {
		return background{}, fmt.Errorf("BRIDGE_AUDIT_RETENTION: %w", err)
	}
	if keepAudit < keep {
		return background{}, errors.New("BRIDGE_AUDIT_RETENTION must not be shorter than BRIDGE_RETENTION: the audit trail outlives the PHI it is about")
	}
	bg := background{retention: keep, auditRetention: keepAudit, domains: splitList(opts.get("domains"))}
	switch v := opts.get("worklist-index"); v {
	case "on":
		bg.worklistIndex = true
	case "off":
	default:
		return background{}, fmt.Errorf("BRIDGE_WORKLIST_INDEX %q: want on or off", v)
	}
	if bg.worklistIntervals, err = worklist.ParseIntervals(opts.get("worklist-sync-interval")); err != nil {
		return background{}, fmt.Errorf("BRIDGE_WORKLIST_SYNC_INTERVAL: %w", err)
	}
	bg.commentRate, err = strconv.ParseFloat(opts.get("comment-poll-rate"), 64)
	if err != nil || !(bg.commentRate > 0 && bg.commentRate <= 100) {
		return background{}, fmt.Errorf("BRIDGE_COMMENT_POLL_RATE %q: want a number of calls per second, above 0 and at most 100", opts.get("comment-poll-rate"))
	}
	if bg.artifactReserve, err = parseMiB(opts.get("artifact-reserve"), 4096); err != nil {
		return background{}, fmt.Errorf("BRIDGE_ARTIFACT_RESERVE: %w", err)
	}
	bg.workers, err = strconv.Atoi(opts.get("delivery-workers"))
	if err != nil || bg.workers < 1 || bg.workers > 64 {
		return background{}, fmt.Errorf("BRIDGE_DELIVERY_WORKERS %q: want 1..64", opts.get("delivery-workers"))
	}
	bg.lease, err = time.ParseDuration(opts.get("delivery-lease"))
	// At least 10 s: leases are compared on each replica's clock
	// (docs/store.md, "Clocks"), so they must dwarf the clocks' skew.
	if err != nil || bg.lease < 10*time.Second || bg.lease > 10*time.Minute {
		return background{}, fmt.Errorf("BRIDGE_DELIVERY_LEASE %q: want a duration within 10s..10m", opts.get("delivery-lease"))
	}
	if bg.subscriptionNets, err = subs.ParseNets(opts.get("subscription-allow-nets")); err != nil {
		return background{}, fmt.Errorf("BRIDGE_SUBSCRIPTION_ALLOW_NETS: %w", err)
	}
	bg.subscriptionErrorAfter, err = time.ParseDuration(opts.get("subscription-error-after"))
	if err != nil || bg.subscriptionErrorAfter < time.Minute {
		return background{}, fmt.Errorf("BRIDGE_SUBSCRIPTION_ERROR_AFTER %q: want a duration of 1m or more", opts.get("subscription-error-after"))
	}
	cert, key := opts.get("tls-cert"), opts.get("tls-key")
	if (cert == "") != (key == "") {
		return background{}, errors.New("BRIDGE_TLS_CERT and BRIDGE_TLS_KEY go together")
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return background{}, fmt.Errorf("loading BRIDGE_TLS_CERT/BRIDGE_TLS_KEY: %w", err)
		}
		bg.tls = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	}
	return bg, nil
}

// parseMiB reads a size in MiB, "64MiB", at most limit MiB; "0" is 0.
func parseMiB(v string, limit int64) (int64, error) {
	if v == "0" {
		return 0, nil
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(v, "MiB"), 10, 64)
	if err != nil || !strings.HasSuffix(v, "MiB") || n < 0 || n > limit {
		return 0, fmt.Errorf("%q: want a size like 64MiB, at most %dMiB, or 0", v, limit)
	}
	return n << 20, nil
}

// auditOptions reads BRIDGE_AUDIT_BUFFER, BRIDGE_AUDIT_WAIT and
// BRIDGE_AUDIT_JOURNAL. auto lets reads wait for their record's append to
// the journal when there is one: a crash of the process then loses none,
// and the read waits for no commit. Without a journal, auto lets reads
// wait for their record's commit on PostgreSQL, where it commits without
// waiting for the disk (synchronous_commit off for the audit) and beside
// other writes; on SQLite the one write connection is shared with report
// writes, so a read would queue behind them, and reads wait only for room
// in the buffer.
func auditOptions(opts *options) (buffer int, commitReads bool, err error) {
	buffer, err = strconv.Atoi(opts.get("audit-buffer"))
	if err != nil || buffer < 1 || buffer > 1_000_000 {
		return 0, false, fmt.Errorf("BRIDGE_AUDIT_BUFFER %q: want 1..1000000 records", opts.get("audit-buffer"))
	}
	if opts.get("audit-journal") == "" {
		return 0, false, errors.New("BRIDGE_AUDIT_JOURNAL is empty: want auto, off or a directory")
	}
	journal := auditjournal.Dir(opts.get("audit-journal"), opts.get("store")) != ""
	switch opts.get("audit-wait") {
	case "commit":
		return buffer, true, nil
	case "queue":
		return buffer, false, nil
	case "auto":
		return buffer, !journal && strings.HasPrefix(opts.get("store"), "postgres"), nil
	}
	return 0, false, fmt.Errorf("BRIDGE_AUDIT_WAIT %q: want commit, queue or auto", opts.get("audit-wait"))
}

// openAuditJournal opens the audit journal BRIDGE_AUDIT_JOURNAL names for
// BRIDGE_STORE (auditjournal.Dir), nil when there is none.
func openAuditJournal(opts *options, log *slog.Logger) (*auditjournal.Journal, error) {
	dir := auditjournal.Dir(opts.get("audit-journal"), opts.get("store"))
	if dir == "" {
		return nil, nil
	}
	j, err := auditjournal.Open(dir, auditjournal.Options{Logger: log.With("component", "audit")})
	if err != nil {
		return nil, fmt.Errorf("BRIDGE_AUDIT_JOURNAL: %w", err)
	}
	return j, nil
}

func rateLimit(opts *options) (server.RateLimit, error) {
	r, err := strconv.ParseFloat(opts.get("rate-limit"), 64)
	if err != nil || r < 0 {
		return server.RateLimit{}, fmt.Errorf("BRIDGE_RATE_LIMIT %q: want a number of requests per second, 0 to disable", opts.get("rate-limit"))
	}
	b, err := strconv.Atoi(opts.get("rate-burst"))
	if err != nil || b < 1 {
		return server.RateLimit{}, fmt.Errorf("BRIDGE_RATE_BURST %q: want a positive integer", opts.get("rate-burst"))
	}
	return server.RateLimit{Rate: r, Burst: b}, nil
}

// openStore opens BRIDGE_STORE: sqlite:PATH or a postgres:// URL.
func openStore(ctx context.Context, dsn string) (store.Store, error) {
	if err := checkStore(dsn); err != nil {
		return nil, err
	}
	if path, ok := strings.CutPrefix(dsn, "sqlite:"); ok {
		st, err := sqlite.Open(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("opening the SQLite store: %w", err)
		}
		return st, nil
	}
	st, err := postgres.Open(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("opening the PostgreSQL store %s: %w", redactURL(dsn), err)
	}
	return st, nil
}

func (m *Main) demo(ctx context.Context, opts *options, log *slog.Logger) error {
	simOpts, err := simOptions(opts, log)
	if err != nil {
		return err
	}
	if !isLoopback(opts.get("listen")) || !isLoopback(opts.get("sim-listen")) {
		return errors.New("the demo serves unauthenticated synthetic data and listens on loopback only")
	}
	sim, err := qubssim.Start(opts.get("sim-listen"), simOpts)
	if err != nil {
		return fmt.Errorf("starting the QUBS simulator: %w", err)
	}
	defer sim.Close()
	tel, err := newTelemetry(ctx, opts, m.Getenv)
	if err != nil {
		return err
	}
	defer tel.close(ctx)
	client, err := qubs.New(qubs.Config{
		BaseURL:      sim.URL,
		TokenURL:     sim.TokenURL(),
		ClientID:     qubssim.DefaultClientID,
		ClientSecret: qubssim.DefaultClientSecret,
		AuthStyle:    oauth2.AuthStyleInParams,
		UserAgent:    "qubs-fhir-bridge/" + version,
		Observer:     observe.QUBS(tel.metrics, tel.tracer()),
	})
	if err != nil {
		return fmt.Errorf("QUBS client: %w", err)
	}
	if opts.get("site-timezones") == "" {
		// The simulator's sites span Australian zones; tell the bridge
		// which is which, as an operator would with BRIDGE_SITE_TIMEZONES.
		opts.byFlag["site-timezones"].value = siteZones(sim.SiteTimeZones())
	}
	if opts.get("store") == "" {
		// The demo's reports live as long as the demo. Set before the
		// server's configuration, which reads the store's kind (the
		// audit's wait and journal).
		dir, err := os.MkdirTemp("", "qubs-fhir-bridge-demo-")
		if err != nil {
			return fmt.Errorf("demo store: %w", err)
		}
		defer os.RemoveAll(dir)
		opts.byFlag["store"].value = "sqlite:" + filepath.Join(dir, "bridge.db")
	}
	cfg, err := serverConfig(opts, client, log, cursorKey("", qubssim.DefaultClientSecret))
	if err != nil {
		return err
	}
	bg, err := backgroundOptions(opts)
	if err != nil {
		return err
	}
	tel.wire(&cfg, &bg)
	st, err := openStore(ctx, opts.get("store"))
	if err != nil {
		return err
	}
	defer st.Close()
	st = observe.Store(st, tel.metrics, tel.tracer())
	if cfg.AuditJournal, err = openAuditJournal(opts, log); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", opts.get("listen"))
	if err != nil {
		return fmt.Errorf("listening on %s: %w", opts.get("listen"), err)
	}
	m.BridgeURL, m.SimURL = "http://"+ln.Addr().String(), sim.URL
	base := m.BridgeURL + "/fhir/" + sim.Domains()[0]
	if cfg.PublicURL != "" {
		base = strings.TrimRight(cfg.PublicURL, "/") + "/fhir/" + sim.Domains()[0]
	}
	hook, err := startDemoHook(m.Stdout)
	if err != nil {
		return err
	}
	defer hook.close()
	example, exampleAppt := "ServiceRequest-id", "appointment-id"
	if ids := sim.PendingIDs(sim.Domains()[0]); len(ids) > 0 {
		exampleAppt = ids[0]
		if id, err := mapping.ServiceRequestID(ids[0]); err == nil {
			example = id
		}
	}
	// The banner waits for the first walk of every seeded domain, so that
	// a newcomer's first search is answered from the index, never with
	// "being built" (a walk of the seed takes seconds; longer on a busy
	// machine).
	bg.domains = sim.Domains()
	bg.ready = func() {
		fmt.Fprintf(m.Stdout, `qubs-fhir-bridge demo: FHIR R4 over a seeded QUBS simulator (synthetic patients only)

  FHIR base:       %[1]s
  other domains:   %[2]s
  QUBS simulator:  %[3]s   (what QUBS received: %[3]s/_sim/inspect)
  metrics:         %[5]s

The worklist:
  curl -s '%[1]s/ServiceRequest?_count=5&_include=ServiceRequest:subject'

Report on a study:
  curl -s -X POST '%[1]s/DiagnosticReport' -H 'Content-Type: application/fhir+json' \
    -d '{"resourceType":"DiagnosticReport","status":"preliminary","code":{"text":"Imaging report"},"basedOn":[{"reference":"ServiceRequest/%[4]s"}],"conclusion":"No acute abnormality."}'

Subscriptions (FHIR R4 Subscriptions Backport, rest-hook): a webhook receiver at
%[6]s is subscribed to every topic and prints each notification
here as a "webhook:" line; report on a study (above) to see a report-delivery
event. Add an alert in QUBS as its own users do, and the comment watch tells it
once it polls that study (every studies / BRIDGE_COMMENT_POLL_RATE seconds):
  curl -s -X POST '%[3]s/_sim/comments' \
    -d '{"domain":"%[10]s","appointmentId":"%[11]s","commentText":"Contrast allergy","isAlert":true}'
Subscribe an endpoint of your own (docs/subscriptions.md):
  curl -s -X POST '%[1]s/Subscription' -H 'Content-Type: application/fhir+json' \
    -d '{"resourceType":"Subscription","status":"requested","reason":"mine","criteria":"%[7]s","_criteria":{"extension":[{"url":"%[8]s","valueString":"ServiceRequest?modality=CT"}]},"channel":{"type":"rest-hook","endpoint":"http://127.0.0.1:9999/hook","payload":"application/fhir+json","_payload":{"extension":[{"url":"%[9]s","valueCode":"id-only"}]}}}'

Ctrl-C stops it.
`, base, strings.Join(sim.Domains()[1:], ", "), sim.URL, example, metricsLine(tel.url()),
			hook.url, subs.TopicURLs[0], subs.ExtFilterCriteria, subs.ExtPayloadContent, sim.Domains()[0], exampleAppt)
		m.MetricsURL = tel.url()
		close(m.Ready)
		go subscribeDemoHook(ctx, m.BridgeURL+"/fhir/"+sim.Domains()[0], hook.url, log)
	}
	tel.serve(log)
	return serveWithDelivery(ctx, ln, cfg, st, client, bg, log)
}

func (m *Main) sim(ctx context.Context, opts *options, log *slog.Logger) error {
	simOpts, err := simOptions(opts, log)
	if err != nil {
		return err
	}
	sim, err := qubssim.Start(opts.get("listen"), simOpts)
	if err != nil {
		return fmt.Errorf("starting the QUBS simulator: %w", err)
	}
	defer sim.Close()
	m.SimURL = sim.URL
	fmt.Fprintf(m.Stdout, `QUBS simulator (not for production; synthetic data)
  API base:     %s
  token URL:    %s
  client:       %s / %s
  domains:      %s
  inspection:   %s/_sim/inspect
  churn:        %s/_sim/churn (rate %s; POST {"rate":"10/m"} or to /step {"events":5})

Point a bridge at it (paste into the shell that runs qubs-fhir-bridge serve):
  export QUBS_API_URL=%s QUBS_TOKEN_URL=%s
  export QUBS_CLIENT_ID=%s QUBS_CLIENT_SECRET=%s
`, sim.URL, sim.TokenURL(), qubssim.DefaultClientID, qubssim.DefaultClientSecret, strings.Join(sim.Domains(), ", "), sim.URL,
		sim.URL, opts.get("churn"), sim.URL, sim.TokenURL(), qubssim.DefaultClientID, qubssim.DefaultClientSecret)
	close(m.Ready)
	<-ctx.Done()
	return nil
}

func simOptions(opts *options, log *slog.Logger) (qubssim.Options, error) {
	seed, err := strconv.ParseInt(opts.get("seed"), 10, 64)
	if err != nil {
		return qubssim.Options{}, fmt.Errorf("QUBS_SIM_SEED %q is not an integer", opts.get("seed"))
	}
	n, err := strconv.Atoi(opts.get("appointments"))
	if err != nil || n < 1 || n > 100_000 {
		return qubssim.Options{}, fmt.Errorf("QUBS_SIM_APPOINTMENTS %q: want 1..100000", opts.get("appointments"))
	}
	used, err := qubssim.ParseUsedUploadURL(opts.get("used-upload-url"))
	if err != nil {
		return qubssim.Options{}, fmt.Errorf("QUBS_SIM_USED_UPLOAD_URL: %w", err)
	}
	churn, err := qubssim.ParseChurnRate(opts.get("churn"))
	if err != nil {
		return qubssim.Options{}, fmt.Errorf("QUBS_SIM_CHURN: %w", err)
	}
	return qubssim.Options{Seed: seed, Appointments: n, ChurnRate: churn, UsedUploadURL: used, Logger: log.With("component", "qubs-sim")}, nil
}

func serverConfig(opts *options, client *qubs.Client, log *slog.Logger, key []byte) (server.Config, error) {
	zones, err := mapping.NewZones(opts.get("default-timezone"), opts.get("site-timezones"))
	if err != nil {
		return server.Config{}, fmt.Errorf("time zones: %w", err)
	}
	public := opts.get("public-url")
	if public != "" {
		if err := checkPublicURL(public); err != nil {
			return server.Config{}, err
		}
	}
	rl, err := rateLimit(opts)
	if err != nil {
		return server.Config{}, err
	}
	auditBuffer, commitReads, err := auditOptions(opts)
	if err != nil {
		return server.Config{}, err
	}
	var proxies []string
	for _, p := range strings.Split(opts.get("trusted-proxies"), ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if net.ParseIP(p) == nil {
			if _, _, err := net.ParseCIDR(p); err != nil {
				return server.Config{}, fmt.Errorf("BRIDGE_TRUSTED_PROXIES: %q is neither an address nor a CIDR", p)
			}
		}
		proxies = append(proxies, p)
	}
	return server.Config{
		TrustedProxies:   proxies,
		RateLimit:        rl,
		PublicURL:        strings.TrimRight(public, "/"),
		QUBS:             client,
		Zones:            zones,
		CursorKey:        key,
		Logger:           log,
		Version:          version,
		AuditBuffer:      auditBuffer,
		AuditCommitReads: commitReads,
	}, nil
}

// siteZones writes a site-to-zone map in BRIDGE_SITE_TIMEZONES syntax.
func siteZones(m map[string]string) string {
	sites := make([]string, 0, len(m))
	for site := range m {
		sites = append(sites, site)
	}
	sort.Strings(sites)
	var parts []string
	for _, site := range sites {
		parts = append(parts, site+"="+m[site])
	}
	return strings.Join(parts, ";")
}

// serveHTTP serves until ctx is done, then drains in-flight requests.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler, tlsCfg *tls.Config, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute, // twenty 2 MiB artifacts from a slow client
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		TLSConfig:         tlsCfg,
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

func checkAuth(mode, listen string) error {
	switch mode {
	case "none":
		if !isLoopback(listen) {
			return fmt.Errorf("BRIDGE_AUTH=none is refused on %s: without authentication the bridge listens on loopback only", listen)
		}
		return nil
	case "static", "jwt", "smart":
		return nil
	}
	return fmt.Errorf("BRIDGE_AUTH %q: want none, static, jwt or smart", mode)
}

// smartTokenPath is where mode smart serves its token endpoint.
const smartTokenPath = "/auth/token"

// configureAuth builds the authenticator of BRIDGE_AUTH.
// lateReplay lets mode smart be configured, and its files checked, before
// the store that keeps the replay claims is opened; serve sets the store
// before it takes any request.
type lateReplay struct{ auth.ReplayCache }

func configureAuth(cfg *server.Config, opts *options, replay auth.ReplayCache, log *slog.Logger) error {
	switch opts.get("auth") {
	case "static":
		path := opts.get("static-tokens-file")
		if path == "" {
			return errors.New("BRIDGE_AUTH=static needs BRIDGE_STATIC_TOKENS_FILE")
		}
		a, err := auth.NewStatic(path)
		if err != nil {
			return fmt.Errorf("BRIDGE_STATIC_TOKENS_FILE: %w", err)
		}
		cfg.Auth = a
	case "jwt":
		skew, err := time.ParseDuration(opts.get("jwt-skew"))
		if err != nil {
			return fmt.Errorf("BRIDGE_JWT_SKEW %q: want a duration such as 60s", opts.get("jwt-skew"))
		}
		a, err := auth.NewJWT(auth.JWTConfig{
			Skew:         skew,
			ScopeClaim:   opts.get("jwt-scope-claim"),
			JWKSURL:      opts.get("jwt-jwks-url"),
			Issuer:       opts.get("jwt-issuer"),
			Audience:     splitList(opts.get("jwt-audience")),
			Algorithms:   splitList(opts.get("jwt-algorithms")),
			DomainsClaim: opts.get("jwt-domains-claim"),
		})
		if err != nil {
			return fmt.Errorf("BRIDGE_AUTH=jwt (BRIDGE_JWT_*): %w", err)
		}
		cfg.Auth = a
	case "smart":
		tokenURL := strings.TrimRight(opts.get("public-url"), "/") + smartTokenPath
		ttl, err := time.ParseDuration(opts.get("smart-token-ttl"))
		if err != nil {
			return fmt.Errorf("BRIDGE_SMART_TOKEN_TTL %q: want a duration such as 5m", opts.get("smart-token-ttl"))
		}
		sm, err := auth.NewSMART(auth.SMARTConfig{
			TokenTTL:       ttl,
			ClientsFile:    opts.get("smart-clients-file"),
			SigningKeyFile: opts.get("smart-signing-key-file"),
			TokenURL:       tokenURL,
			Replay:         replay,
			Logger:         log.With("component", "smart"),
			ResourceTypes:  server.ResourceTypes,
		})
		if err != nil {
			return fmt.Errorf("BRIDGE_AUTH=smart (BRIDGE_SMART_*): %w", err)
		}
		cfg.Auth, cfg.SMART, cfg.SMARTTokenURL, cfg.SMARTTokenPath = sm.Authenticator(), sm, tokenURL, smartTokenPath
	}
	cfg.AuthMode = opts.get("auth")
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// hashToken prints the SHA-256 of a static bearer token, read from the
// argument or, better (it stays out of shell history), from stdin.
func (m *Main) hashToken() error {
	var token string
	if len(m.args) > 0 {
		token = m.args[0]
	} else if m.Stdin != nil {
		b, err := io.ReadAll(io.LimitReader(m.Stdin, 8<<10))
		if err != nil {
			return fmt.Errorf("reading the token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return errors.New("give the token on stdin: printf %s \"$TOKEN\" | qubs-fhir-bridge hash-token")
	}
	fmt.Fprintln(m.Stdout, auth.HashToken(token))
	return nil
}

func checkStore(store string) error {
	if strings.HasPrefix(store, "sqlite:") && len(store) > len("sqlite:") {
		return nil
	}
	if strings.HasPrefix(store, "postgres://") || strings.HasPrefix(store, "postgresql://") {
		return nil
	}
	return fmt.Errorf("BRIDGE_STORE %q: want sqlite:PATH or a postgres:// URL", redactURL(store))
}

func checkPublicURL(s string) error {
	if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") {
		return fmt.Errorf("BRIDGE_PUBLIC_URL %q must be an absolute http(s) URL", s)
	}
	return nil
}

func authStyle(s string) (oauth2.AuthStyle, error) {
	switch s {
	case "body", "post", "client_secret_post":
		return oauth2.AuthStyleInParams, nil
	case "basic", "client_secret_basic":
		return oauth2.AuthStyleInHeader, nil
	case "auto":
		return oauth2.AuthStyleAutoDetect, nil
	}
	return 0, fmt.Errorf("QUBS_AUTH_STYLE %q: want body, basic or auto", s)
}

// cursorKey is BRIDGE_CURSOR_KEY when set; otherwise a key derived from
// the QUBS client secret, which every replica of one deployment shares, so
// next links work across replicas without another secret to manage.
func cursorKey(explicit, qubsSecret string) []byte {
	if explicit != "" {
		k := sha256.Sum256([]byte(explicit))
		return k[:]
	}
	mac := hmac.New(sha256.New, []byte(qubsSecret))
	mac.Write([]byte("qubs-fhir-bridge paging cursors v1"))
	return mac.Sum(nil)
}

// goNames matches what packages of this code base put in front of an
// error for its developers (store.Wrap's "sqlite.Open: internal: ",
// "auth.NewStatic(\"/x.json\"): "): an operator needs the setting and the
// cause, not the function.
var goNames = regexp.MustCompile(`\b[a-z][a-z0-9]*\.[A-Z][A-Za-z0-9]*(\([^()]*\))?: (internal: |invalid: )?`)

// userMessage is the one line that tells an operator why the program
// stopped: the settings named by the error, the cause, no Go names, no
// line breaks.
func userMessage(err error) string {
	msg := goNames.ReplaceAllString(err.Error(), "")
	return strings.Join(strings.Fields(msg), " ")
}
