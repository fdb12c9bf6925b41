package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auditjournal"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite"
)

// maxClockSkew is how far the bridge's clock may be from QUBS's before
// check fails: JWT and SMART assertion lifetimes are minutes, validated
// with BRIDGE_JWT_SKEW (60 s by default), and QUBS judges its own tokens
// and presigned URLs by its clock.
const maxClockSkew = 60 * time.Second

// checkDomainProbeID is the appointment a domain probe asks for: QUBS
// checks the token's domain scope (403) before it looks the appointment up
// (404), so any id tells the two apart; this one cannot exist.
const checkDomainProbeID = "qubs-fhir-bridge-check"

// checkResult is one line of `qubs-fhir-bridge check`: a name, and either a
// detail (ok) or the reason it failed. Neither holds a secret or PHI.
type checkResult struct {
	name, detail string
	err          error
}

func (r checkResult) String() string {
	if r.err != nil {
		return fmt.Sprintf("fail %-18s %s", r.name, userMessage(r.err))
	}
	return fmt.Sprintf("ok   %-18s %s", r.name, r.detail)
}

// check runs every start-up check of serve, and the ones serve only warns
// about, without serving: one line each on stdout, exit 1 if any failed.
func (m *Main) check(ctx context.Context, opts *options, log *slog.Logger) error {
	results := []checkResult{checkConfig(opts), checkAuthFiles(ctx, opts, log)}
	results = append(results, checkStoreLevel(ctx, opts.get("store")).checkResult, checkAuditJournal(opts))
	results = append(results, checkQUBS(ctx, opts, true)...)
	failed := false
	for _, r := range results {
		fmt.Fprintln(m.Stdout, r)
		failed = failed || r.err != nil
	}
	if failed {
		return errReported
	}
	return nil
}

// checkConfig validates serve's settings, except those of the auth, store
// and QUBS lines, with serve's own loaders.
func checkConfig(opts *options) checkResult {
	r := checkResult{name: "config", detail: "serve's settings are valid"}
	if err := checkAuth(opts.get("auth"), opts.get("listen")); err != nil {
		r.err = err
	} else if _, err := serverConfig(opts, nil, slog.New(slog.DiscardHandler), nil); err != nil {
		r.err = err
	} else if _, err := backgroundOptions(opts); err != nil {
		r.err = err
	} else if _, err := authStyle(opts.get("qubs-auth-style")); err != nil {
		r.err = err
	}
	return r
}

// checkAuthFiles loads what BRIDGE_AUTH needs, as serve does, and for mode
// jwt fetches the JWKS once.
func checkAuthFiles(ctx context.Context, opts *options, log *slog.Logger) checkResult {
	mode := opts.get("auth")
	r := checkResult{name: "auth", detail: "BRIDGE_AUTH=" + mode}
	if mode == "smart" && opts.get("public-url") == "" {
		r.err = errors.New("BRIDGE_AUTH=smart needs BRIDGE_PUBLIC_URL")
		return r
	}
	var cfg server.Config
	if err := configureAuth(&cfg, opts, &lateReplay{}, log); err != nil {
		r.err = err
		return r
	}
	switch mode {
	case "none":
		r.detail += ": no inbound authentication (loopback only)"
	case "static":
		r.detail += ": BRIDGE_STATIC_TOKENS_FILE loaded"
	case "smart":
		r.detail += ": BRIDGE_SMART_CLIENTS_FILE loaded"
		if opts.get("smart-signing-key-file") != "" {
			r.detail += ", BRIDGE_SMART_SIGNING_KEY_FILE loaded"
		} else {
			r.detail += ", signing key generated at start (replicas cannot share it)"
		}
	case "jwt":
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		n, err := auth.CheckJWKS(ctx, opts.get("jwt-jwks-url"))
		if err != nil {
			r.err = fmt.Errorf("BRIDGE_JWT_JWKS_URL: %w", err)
			return r
		}
		if n == 0 {
			r.err = errors.New("BRIDGE_JWT_JWKS_URL: the JWK Set holds no usable public signing key")
			return r
		}
		r.detail += fmt.Sprintf(": BRIDGE_JWT_JWKS_URL holds %d signing keys", n)
	}
	return r
}

// storeLevel is the store line and whether the database is ahead of this
// binary, which serve only warns about (a rolling upgrade runs old
// replicas on a newer schema; migrations are additive).
type storeLevel struct {
	checkResult
	ahead bool
}

// checkStoreLevel reads the store's migration level without creating or
// migrating anything.
func checkStoreLevel(ctx context.Context, dsn string) storeLevel {
	r := storeLevel{checkResult: checkResult{name: "store"}}
	if err := checkStore(dsn); err != nil {
		r.err = err
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var (
		level  store.SchemaLevel
		err    error
		engine = "postgres"
	)
	path, isSQLite := strings.CutPrefix(dsn, "sqlite:")
	if isSQLite {
		engine = "sqlite"
		level, err = sqlite.SchemaLevel(ctx, path)
	} else {
		level, err = postgres.SchemaLevel(ctx, dsn)
	}
	if err != nil {
		r.err = fmt.Errorf("BRIDGE_STORE %s: cannot read the database: %w", redactURL(dsn), err)
		return r
	}
	switch {
	case level.New:
		dir := filepath.Dir(path)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			r.err = fmt.Errorf("BRIDGE_STORE: %s does not exist and its directory %s is missing", path, dir)
			return r
		}
		r.detail = fmt.Sprintf("sqlite: %s does not exist yet; serve creates it with migrations 1..%d", path, level.Known)
	case level.State() == "ahead":
		r.ahead = true
		r.err = fmt.Errorf("%s: ahead: the database is at migration %d, this binary knows up to %d: a newer release migrated it "+
			"(serve runs on, migrations being additive, but upgrade this binary or restore the backup taken before the upgrade)",
			engine, level.Applied, level.Known)
	case level.State() == "behind":
		r.detail = fmt.Sprintf("%s: behind: at migration %d of %d; serve applies the rest at start", engine, level.Applied, level.Known)
	default:
		r.detail = fmt.Sprintf("%s: up to date (migration %d)", engine, level.Applied)
	}
	return r
}

// checkAuditJournal checks what serve needs of BRIDGE_AUDIT_JOURNAL's
// directory, creating and locking nothing.
func checkAuditJournal(opts *options) checkResult {
	r := checkResult{name: "audit-journal"}
	dir := auditjournal.Dir(opts.get("audit-journal"), opts.get("store"))
	if dir == "" {
		r.detail = "none (BRIDGE_AUDIT_JOURNAL=" + opts.get("audit-journal") + "): reads wait for their audit record's commit, or only for its place in the queue (BRIDGE_AUDIT_WAIT)"
		return r
	}
	st, err := auditjournal.Probe(dir)
	switch {
	case errors.Is(err, auditjournal.ErrInUse):
		r.err = fmt.Errorf("BRIDGE_AUDIT_JOURNAL %s is in use by another process: each replica needs a directory of its own", dir)
	case err != nil:
		r.err = fmt.Errorf("BRIDGE_AUDIT_JOURNAL: %w", err)
	case !st.Exists:
		r.detail = dir + " does not exist yet; serve creates it"
	case st.Segments > 0:
		r.detail = fmt.Sprintf("%s: %d segment(s) left by an earlier run; serve writes their records to the store at start", dir, st.Segments)
	default:
		r.detail = dir + ": ready"
	}
	return r
}

// checkQUBS fetches a token, probes each BRIDGE_DOMAINS domain with one
// cheap read, and compares the local clock with QUBS's Date header, on a
// client of its own (few retries, its own transport recording Date). With
// token false (serve, which checked the token already) the token line is
// left out.
func checkQUBS(ctx context.Context, opts *options, token bool) []checkResult {
	var out []checkResult
	tokenLine := checkResult{name: "qubs-token", detail: "QUBS issued a token for QUBS_CLIENT_ID"}
	secret, err := opts.clientSecret()
	switch {
	case err != nil:
	case opts.get("qubs-client-id") == "" || secret == "":
		err = errors.New("QUBS_CLIENT_ID and QUBS_CLIENT_SECRET (or QUBS_CLIENT_SECRET_FILE) must both be set")
	}
	if err != nil {
		tokenLine.err = err
		return []checkResult{tokenLine}
	}
	style, _ := authStyle(opts.get("qubs-auth-style")) // the config line reports a bad one
	dates := &dateRecorder{base: http.DefaultTransport.(*http.Transport).Clone()}
	client, err := qubs.New(qubs.Config{
		BaseURL: opts.get("qubs-api-url"), TokenURL: opts.get("qubs-token-url"),
		ClientID: opts.get("qubs-client-id"), ClientSecret: secret, AuthStyle: style,
		HTTPClient: &http.Client{Transport: dates, Timeout: 15 * time.Second},
		Retry:      qubs.RetryPolicy{MaxAttempts: 2, BaseDelay: 200 * time.Millisecond, MaxDelay: time.Second},
		UserAgent:  "qubs-fhir-bridge/" + version + " (check)",
	})
	if err != nil {
		tokenLine.err = fmt.Errorf("QUBS_API_URL or QUBS_TOKEN_URL: %w", err)
		return []checkResult{tokenLine}
	}
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	haveToken := true
	if err := client.Token(tctx); err != nil {
		haveToken = false
		if qubs.KindOf(err) == qubs.KindUnauthorized {
			tokenLine.err = errors.New("QUBS refused the bridge's credentials (QUBS_CLIENT_ID, QUBS_CLIENT_SECRET or QUBS_CLIENT_SECRET_FILE, QUBS_TOKEN_URL)")
		} else {
			tokenLine.err = fmt.Errorf("QUBS_TOKEN_URL unreachable or failing (%s): %w", qubs.KindOf(err), err)
		}
	}
	if token || tokenLine.err != nil {
		out = append(out, tokenLine)
	}
	domains := splitList(opts.get("domains"))
	if len(domains) == 0 && token {
		out = append(out, checkResult{name: "qubs-domains", detail: "BRIDGE_DOMAINS not set: no domain probed"})
	}
	for _, d := range domains {
		r := checkResult{name: "qubs-domain " + d}
		if !haveToken {
			r.err = errors.New("not checked: no QUBS token")
			out = append(out, r)
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		_, err := client.GetPending(dctx, d, checkDomainProbeID)
		cancel()
		switch qubs.KindOf(err) {
		case qubs.KindNotFound:
			r.detail = "reachable with the bridge's credentials"
		case qubs.KindForbidden:
			r.err = fmt.Errorf("QUBS answers 403: the bridge's credentials do not reach domain %q (BRIDGE_DOMAINS, or ask QUBS to add it)", d)
		default:
			if err == nil {
				r.detail = "reachable with the bridge's credentials"
			} else {
				r.err = fmt.Errorf("QUBS_API_URL: the probe of domain %q failed (%s): %w", d, qubs.KindOf(err), err)
			}
		}
		out = append(out, r)
	}
	return append(out, dates.check())
}

// dateRecorder is a RoundTripper that keeps the Date header of QUBS's last
// answer and the local time it was received at (the middle of the round
// trip, the best estimate of when QUBS wrote it).
type dateRecorder struct {
	base       http.RoundTripper
	mu         sync.Mutex
	remote, at time.Time
}

func (d *dateRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	sent := time.Now()
	res, err := d.base.RoundTrip(req)
	if err != nil {
		return res, err
	}
	if t, perr := http.ParseTime(res.Header.Get("Date")); perr == nil {
		d.mu.Lock()
		d.remote, d.at = t, sent.Add(time.Since(sent)/2)
		d.mu.Unlock()
	}
	return res, nil
}

// check compares the clocks; Date has a resolution of one second.
func (d *dateRecorder) check() checkResult {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := checkResult{name: "clock"}
	if d.remote.IsZero() {
		r.err = errors.New("no answer from QUBS carried a Date header to compare the clock with")
		return r
	}
	// Date is truncated to the second: its middle is the best estimate.
	skew := d.at.Sub(d.remote.Add(500 * time.Millisecond)).Round(time.Second)
	abs, side := skew, "ahead of"
	if abs < 0 {
		abs, side = -abs, "behind"
	}
	if abs > maxClockSkew {
		r.err = fmt.Errorf("the local clock is %s %s QUBS's Date header (at most %s apart): fix NTP on this host; tokens and assertions are judged by these clocks",
			abs, side, maxClockSkew)
		return r
	}
	r.detail = fmt.Sprintf("within %s of QUBS's Date header (at most %s)", abs, maxClockSkew)
	return r
}

// warnQUBSChecks runs check's domain and clock lines once serve is up, off
// its start path: each failure is a warning (QUBS down or a domain not
// granted is no reason to refuse the other domains; readiness reports
// QUBS), and the lines go to the log.
func warnQUBSChecks(ctx context.Context, opts *options, log *slog.Logger) {
	for _, r := range checkQUBS(ctx, opts, false) {
		if r.err != nil {
			log.Warn("start-up check", "check", r.name, "result", "fail", "reason", userMessage(r.err))
		} else {
			log.Info("start-up check", "check", r.name, "result", "ok", "detail", r.detail)
		}
	}
}
