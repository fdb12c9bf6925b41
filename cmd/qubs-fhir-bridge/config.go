package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
)

// option is one setting with its flag and its environment twin. Flags win
// over the environment, the environment over the default.
type option struct {
	flag, env, def, usage string
	secret                bool
	value                 string
}

// options is the whole configuration of every command; each command uses
// the ones it names.
type options struct {
	byFlag map[string]*option
	order  []string
}

func newOptions() *options {
	o := &options{byFlag: map[string]*option{}}
	add := func(flag, env, def, usage string, secret bool) {
		o.byFlag[flag] = &option{flag: flag, env: env, def: def, usage: usage, secret: secret}
		o.order = append(o.order, flag)
	}
	add("qubs-api-url", "QUBS_API_URL", "https://partners.qubs.io", "QUBS base URL", false)
	add("qubs-token-url", "QUBS_TOKEN_URL", "https://authenticate.qubs.io/oauth2/token", "OAuth2 token endpoint of QUBS", false)
	add("qubs-client-id", "QUBS_CLIENT_ID", "", "QUBS OAuth2 client id", false)
	add("qubs-client-secret", "QUBS_CLIENT_SECRET", "", "QUBS OAuth2 client secret (prefer the file)", true)
	add("qubs-client-secret-file", "QUBS_CLIENT_SECRET_FILE", "", "file holding the QUBS client secret", false)
	add("qubs-auth-style", "QUBS_AUTH_STYLE", "body", "how the bridge sends its QUBS client credentials to QUBS_TOKEN_URL: body (form fields, client_secret_post), basic (HTTP Basic, client_secret_basic) or auto (try one, then the other)", false)
	add("domains", "BRIDGE_DOMAINS", "", "comma-separated QUBS domains this deployment serves; check (and serve at start) probes each, and the worklist index walks each from the start; empty probes none (the bridge learns domains from QUBS)", false)
	add("listen", "BRIDGE_LISTEN", "127.0.0.1:8080", "listen address of the FHIR server", false)
	add("public-url", "BRIDGE_PUBLIC_URL", "", "absolute base URL used in Bundle links and Location headers; default derived from the request", false)
	add("store", "BRIDGE_STORE", "sqlite:qubs-fhir-bridge.db", "sqlite:PATH (one replica) or a postgres:// URL (several replicas)", false)
	add("auth", "BRIDGE_AUTH", "none", "inbound authentication: none (loopback only), static, jwt or smart", false)
	add("static-tokens-file", "BRIDGE_STATIC_TOKENS_FILE", "", "static: JSON array of {name, sha256, domains, scopes}", false)
	add("jwt-jwks-url", "BRIDGE_JWT_JWKS_URL", "", "jwt: the authorization server's JWKS URL", false)
	add("jwt-issuer", "BRIDGE_JWT_ISSUER", "", "jwt: the iss every token must carry", false)
	add("jwt-audience", "BRIDGE_JWT_AUDIENCE", "", "jwt: comma-separated audiences, one of which aud must contain", false)
	add("jwt-algorithms", "BRIDGE_JWT_ALGORITHMS", "", "jwt: comma-separated allowed algorithms (asymmetric only); default RS256,RS384,ES256,ES384,PS256", false)
	add("jwt-skew", "BRIDGE_JWT_SKEW", "60s", "jwt: clock tolerance for exp, nbf and iat (at most 5m)", false)
	add("jwt-scope-claim", "BRIDGE_JWT_SCOPE_CLAIM", "scope", "jwt: the claim holding the SMART scopes", false)
	add("smart-token-ttl", "BRIDGE_SMART_TOKEN_TTL", "5m", "smart: life of issued access tokens (at most 1h)", false)
	add("jwt-domains-claim", "BRIDGE_JWT_DOMAINS_CLAIM", "qubs_domains", "jwt: the claim listing the QUBS domains a token reaches", false)
	add("smart-clients-file", "BRIDGE_SMART_CLIENTS_FILE", "", "smart: JSON array of registered clients with their JWKS (inline or jwks_uri), scopes and domains", false)
	add("smart-signing-key-file", "BRIDGE_SMART_SIGNING_KEY_FILE", "", "smart: PEM P-256 key signing access tokens; replicas must share it (default: generated at start)", false)
	add("default-timezone", "BRIDGE_DEFAULT_TIMEZONE", "Australia/Sydney", "IANA zone of site-local dates and times", false)
	add("site-timezones", "BRIDGE_SITE_TIMEZONES", "", `per-site zones, "Site A=Australia/Perth;Site B=Australia/Brisbane"`, false)
	add("cursor-key", "BRIDGE_CURSOR_KEY", "", "secret sealing paging cursors; replicas must share it (default: derived from the QUBS client secret)", true)
	add("trusted-proxies", "BRIDGE_TRUSTED_PROXIES", "", "comma-separated addresses or CIDRs of reverse proxies whose X-Forwarded-For, -Host and -Proto are believed; default none", false)
	add("tls-cert", "BRIDGE_TLS_CERT", "", "PEM certificate (chain) file: serve HTTPS (TLS 1.2+) directly", false)
	add("tls-key", "BRIDGE_TLS_KEY", "", "PEM private key file of BRIDGE_TLS_CERT", false)
	add("retention", "BRIDGE_RETENTION", "7d", "how long stored report content, artifacts and binaries are kept (e.g. 7d, 36h)", false)
	add("audit-retention", "BRIDGE_AUDIT_RETENTION", "2555d", "how long audit records (no PHI) are kept", false)
	add("audit-buffer", "BRIDGE_AUDIT_BUFFER", "1024", "audit records that may wait to be committed; when full, requests wait (the most a crash can lose in audit-wait queue)", false)
	add("audit-wait", "BRIDGE_AUDIT_WAIT", "auto", "what a successful read waits for before answering: commit (its audit record committed), queue (queued, and journaled with a journal), auto (queue with a journal; without one, commit on PostgreSQL and queue on SQLite)", false)
	add("audit-journal", "BRIDGE_AUDIT_JOURNAL", "auto", "directory of this replica's audit journal, where each audit record is appended before its answer is sent and read back after a crash: auto (beside a SQLite database; none with PostgreSQL), off, or a directory (one per replica)", false)
	// 50/s with a burst of 200: fhirclient's resolveReferences fires about
	// 70 reads at once for one page, and the README's walk of the demo's
	// worklist (204 pages of 5) comes in under the burst plus what refills
	// while it runs; a client hammering the bridge (and QUBS behind it)
	// is still told to slow down. The demo turns it off.
	add("rate-limit", "BRIDGE_RATE_LIMIT", "50", "requests per second allowed to each client on average; 0 disables (the demo's default)", false)
	add("rate-burst", "BRIDGE_RATE_BURST", "200", "requests a client may burst above the rate", false)
	// Four: each delivery is a handful of QUBS calls, so four at a time
	// stay well below a partner API's rate limits (QUBS documents none
	// but answers 429 with Retry-After, which the client honours) while a
	// slow call no longer holds up every other appointment.
	add("artifact-reserve", "BRIDGE_ARTIFACT_RESERVE", "16MiB", "PostgreSQL only: room for report artifacts the bridge keeps made ahead of time in the store, so that storing a report does not wait for the table to grow (topped up in the background when half is used; 0 off; up to 4096MiB)", false)
	add("delivery-workers", "BRIDGE_DELIVERY_WORKERS", "4", "delivery workers per replica (1..64); each works one appointment at a time", false)
	add("delivery-lease", "BRIDGE_DELIVERY_LEASE", "20s", "how long a replica holds an appointment's delivery without renewing it (renewed every quarter of it): how soon a killed replica's deliveries are taken over; 10s..10m", false)
	add("worklist-index", "BRIDGE_WORKLIST_INDEX", "on", "on: keep an index of each domain's worklist in the store and serve ServiceRequest searches from it (docs/worklist-index.md); off: search QUBS as it goes", false)
	add("comment-poll-rate", "BRIDGE_COMMENT_POLL_RATE", "5", "QUBS calls per second per domain with which the comment watch polls the comments of indexed studies while a comments Subscription exists there (a study is re-polled every studies/rate seconds)", false)
	add("worklist-sync-interval", "BRIDGE_WORKLIST_SYNC_INTERVAL", "30s", `how often the index walks each domain's QUBS worklist, with per-domain overrides: "30s;acme=10s;coastal=2m"`, false)
	add("subscription-allow-nets", "BRIDGE_SUBSCRIPTION_ALLOW_NETS", "", "comma-separated CIDR ranges Subscription endpoints may reach although private or otherwise internal (https still required); default none", false)
	add("subscription-error-after", "BRIDGE_SUBSCRIPTION_ERROR_AFTER", "10m", "how long a Subscription's endpoint may fail before the subscription's status becomes error (it is still retried)", false)
	add("metrics-listen", "BRIDGE_METRICS_LISTEN", "", "address serving Prometheus metrics at /metrics (unauthenticated, no PHI); empty: off (demo: a free loopback port)", false)
	add("pprof", "BRIDGE_PPROF", "off", "on: also serve the Go runtime's profiles (net/http/pprof: heap, allocs, profile, goroutine, ...) at /debug/pprof/ on the metrics listener, for performance work; needs BRIDGE_METRICS_LISTEN. Profiles hold no PHI, but taking one costs CPU", false)
	add("log-level", "BRIDGE_LOG_LEVEL", "info", "debug, info, warn or error", false)
	add("sim-listen", "QUBS_SIM_LISTEN", "127.0.0.1:8090", "listen address of the QUBS simulator (demo)", false)
	add("seed", "QUBS_SIM_SEED", "1", "seed of the simulator's data", false)
	add("appointments", "QUBS_SIM_APPOINTMENTS", "1200", "pending appointments the simulator seeds", false)
	add("churn", "QUBS_SIM_CHURN", "off", "how fast the simulator's worklist changes (studies arrive, leave, change): off, or N/s, N/m, N/h; deterministic with the seed", false)
	add("used-upload-url", "QUBS_SIM_USED_UPLOAD_URL", "conflict", "what the simulator answers a second PUT to a used upload URL: conflict (409), overwrite (200) or forbidden (403)", false)
	return o
}

// register adds the named options to fs, under their flag names and, for
// the simulator command, "listen" mapped onto a different option.
func (o *options) register(fs *flag.FlagSet, names ...string) {
	for _, n := range names {
		opt := o.byFlag[n]
		fs.Func(n, fmt.Sprintf("%s (env %s, default %q)", opt.usage, opt.env, opt.def), func(v string) error {
			opt.value = v
			return nil
		})
	}
}

// resolve fills every option not set by a flag from the environment, else
// its default.
func (o *options) resolve(getenv func(string) string) {
	for _, opt := range o.byFlag {
		if opt.value != "" {
			continue
		}
		if v := getenv(opt.env); v != "" {
			opt.value = v
		} else {
			opt.value = opt.def
		}
	}
}

func (o *options) get(flag string) string { return o.byFlag[flag].value }

// print writes the effective configuration with secrets redacted, as the
// first thing the server logs, so an operator sees what it runs with.
func (o *options) effective(names ...string) map[string]string {
	out := map[string]string{}
	for _, n := range names {
		opt := o.byFlag[n]
		v := opt.value
		if opt.secret && v != "" {
			v = "[redacted]"
		}
		if n == "store" || n == "qubs-api-url" || n == "qubs-token-url" || n == "public-url" {
			v = redactURL(v)
		}
		out[opt.env] = v
	}
	return out
}

// redactURL hides a password in a URL such as postgres://user:pw@host/db,
// and in the query parameters pgx also takes one from
// (postgres://user@host/db?password=pw, sslpassword).
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "redacted")
		}
	}
	if q := u.Query(); q.Has("password") || q.Has("sslpassword") {
		for _, k := range []string{"password", "sslpassword"} {
			if q.Has(k) {
				q.Set(k, "redacted")
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}

func (o *options) usage(w io.Writer, names ...string) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  flag\tenvironment\tdefault\tmeaning")
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	for _, n := range sorted {
		opt := o.byFlag[n]
		fmt.Fprintf(tw, "  --%s\t%s\t%s\t%s\n", opt.flag, opt.env, opt.def, opt.usage)
	}
	tw.Flush()
}

// clientSecret reads QUBS_CLIENT_SECRET, else the file QUBS_CLIENT_SECRET_FILE.
func (o *options) clientSecret() (string, error) {
	if v := o.get("qubs-client-secret"); v != "" {
		return v, nil
	}
	path := o.get("qubs-client-secret-file")
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading QUBS_CLIENT_SECRET_FILE: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// isLoopback reports whether a listen address only accepts local
// connections; an empty host ("":8080) listens everywhere.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
