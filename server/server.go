// Package server is the FHIR R4 HTTP face of the bridge: the Gin router, its
// middleware and the handlers. A handler reads like the workflow: parse the
// FHIR request, validate it, call QUBS, map the answer, respond. Every error
// is rendered as an OperationOutcome in one place (errors.go).
package server

import (
	"context"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel/trace"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auditjournal"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/observe"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/subs"
)

// QUBS is the part of the QUBS client the server uses; *qubs.Client
// implements it. Every method returns *qubs.Error on failure.
type QUBS interface {
	Token(ctx context.Context) error
	ListPending(ctx context.Context, domain string, pageSize int, nextToken string) (*qubs.AppointmentPage, error)
	GetPending(ctx context.Context, domain, appointmentID string) (*qubs.Appointment, error)
	Pending(ctx context.Context, domain string, pageSize int) iter.Seq2[qubs.Appointment, error]
	ListAttachments(ctx context.Context, domain, appointmentID string, opts qubs.AttachmentOptions) ([]qubs.Attachment, error)
	GetAttachment(ctx context.Context, domain, appointmentID, attachmentGUID string, opts qubs.AttachmentOptions) (*qubs.Attachment, error)
	ListComments(ctx context.Context, domain, appointmentID string) ([]qubs.Comment, error)
	GetComment(ctx context.Context, domain, appointmentID, commentGUID string) (*qubs.Comment, error)
	CreateComment(ctx context.Context, domain, appointmentID string, in qubs.NewComment, idempotencyKey string) (*qubs.Comment, error)
	CreateUploadURLs(ctx context.Context, domain, appointmentID string, in qubs.UploadRequest, idempotencyKey string) (*qubs.UploadURLs, error)
	Upload(ctx context.Context, u qubs.UploadURL, contentType string, size int64, body io.Reader) error
	Download(ctx context.Context, presignedURL string) (*qubs.Download, error)
}

var _ QUBS = (*qubs.Client)(nil)

// Config is what the server needs; cmd/qubs-fhir-bridge fills it from flags
// and the environment.
type Config struct {
	// PublicURL is BRIDGE_PUBLIC_URL: the absolute base of Bundle links and
	// Location headers. Empty means derive it from the request.
	PublicURL string
	QUBS      QUBS
	// Store keeps the reports, binaries, comments and documents the
	// bridge accepted. Nil serves the read-only worklist alone.
	Store store.Store
	// Kick, when set, wakes the delivery worker when a stored report
	// version is due (a new one, or one $redeliver made due again), so
	// that it goes to QUBS at once rather than at the next poll.
	// Accepted, when set, is called instead of Kick after a new version
	// is stored, with that version and its artifacts' bytes, which the
	// worker may then take from memory (delivery.Pool.Accepted); it must
	// wake the worker too.
	Kick     func()
	Accepted func(*store.Report)
	// SubscriptionPolicy decides which Subscription endpoints are
	// allowed (nil: https to public addresses only); SubscriptionKick,
	// when set, wakes the notification sender after a create.
	SubscriptionPolicy *subs.Policy
	SubscriptionKick   func()
	Zones              *mapping.Zones
	// CursorKey seals paging cursors. Replicas behind one load balancer must
	// share it, or a next link minted by one is refused by another.
	CursorKey []byte
	Logger    *slog.Logger
	// MaxBodyBytes caps request bodies; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// RequestTimeout bounds each request, QUBS calls included; 0 means
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// CacheTTL is how long resources derived from appointments (Patient,
	// Practitioner, Organization) are kept for reads; 0 means DefaultCacheTTL.
	CacheTTL time.Duration
	// Auth authenticates callers (BRIDGE_AUTH static, jwt or smart); nil
	// is mode none: everyone is anonymous with every scope, which cmd
	// allows on loopback only.
	Auth auth.Authenticator
	// AuthMode names BRIDGE_AUTH for the CapabilityStatement.
	AuthMode string
	// SMART, in mode smart, is the bridge's own authorization server:
	// its token endpoint is served at SMARTTokenPath, and its discovery
	// document under each FHIR base.
	SMART          *auth.SMART
	SMARTTokenURL  string
	SMARTTokenPath string
	// TrustedProxies are the addresses or CIDRs of reverse proxies whose
	// X-Forwarded-For names the client (for rate limits and the audit
	// trail). Empty trusts none: the peer address is the client.
	TrustedProxies []string
	// RateLimit bounds each client's request rate; zero disables it.
	RateLimit RateLimit
	// Version is reported in the CapabilityStatement.
	Version string
	// ReadinessInterval is how long one real QUBS call answers /readyz;
	// 0 means DefaultReadinessInterval.
	ReadinessInterval time.Duration
	// AuditBuffer is how many audit records may wait to be committed
	// (BRIDGE_AUDIT_BUFFER); when it is full, requests wait for room.
	// 0 means DefaultAuditBuffer.
	AuditBuffer int
	// AuditCommitReads makes successful reads and searches wait, before
	// their answer is sent, until their audit record is committed, as
	// writes and failures always do (BRIDGE_AUDIT_WAIT=commit). Otherwise
	// they wait only for room in the buffer, and a crash of the process
	// can lose at most AuditBuffer records (docs/store.md).
	AuditCommitReads bool
	// AuditJournal, when set, takes every audit record before its answer
	// is sent (BRIDGE_AUDIT_JOURNAL): successful reads and searches then
	// wait for that append, not for a commit (unless AuditCommitReads),
	// and a crash of the process loses no record of an answer sent. The
	// records it read back at its opening are written first. The server
	// owns it from New on: Close closes it.
	AuditJournal *auditjournal.Journal
	// Metrics, when set, counts requests, refusals and audit writes, and
	// reads the delivery queue from Store at each scrape; nil is metrics
	// off. The caller serves Metrics.Handler on a listener of its own.
	Metrics *observe.Metrics
	// Worklist, when set with Store, serves ServiceRequest searches from
	// the worklist index (BRIDGE_WORKLIST_INDEX=on) and is told what reads
	// and writes learn of single studies; nil searches QUBS as it goes.
	Worklist WorklistIndex
	// Tracer, when set, traces each request as a server span named by
	// method and route template, continuing a client's W3C traceparent;
	// nil is tracing off.
	Tracer trace.TracerProvider
}

// Defaults for Config.
const (
	// DefaultMaxBodyBytes fits twenty 2 MiB artifacts in base64 (4/3 larger)
	// plus the JSON around them.
	DefaultMaxBodyBytes   = 20*(qubs.MaxUploadBytes*4/3+4) + 1<<20
	DefaultRequestTimeout = 60 * time.Second
	DefaultCacheTTL       = 10 * time.Minute
)

// Server holds the router and what the handlers share.
type Server struct {
	cfg      Config
	log      *slog.Logger
	engine   *gin.Engine
	limiters *clientLimiters // nil when rate limiting is off
	cursors  *fhir.Cursors
	rests    *pageRests // worklist.go
	cache    *resourceCache
	domains  *domains
	upstream *upstreamCheck
	// deliveryFigures caches /readyz's delivery queue figures.
	deliveryFigures deliveryFigures
	// table is the served part of the route table; specs index it by
	// "METHOD /fhir/:domain/path".
	table     []routeSpec
	specs     map[string]*routeSpec
	validator *fhir.Validator
	started   time.Time
	auditor   *auditWriter // nil without a store
	throttles *throttleAudit
	// observed is what observeRequests needs per route (observe.go).
	observed observedRoutes
}

// New builds the server and its routes, and with a store starts the audit
// writer, which Close stops.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.ReadinessInterval == 0 {
		cfg.ReadinessInterval = DefaultReadinessInterval
	}
	if cfg.Zones == nil {
		cfg.Zones, _ = mapping.NewZones("Australia/Sydney", "")
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		cursors:  fhir.NewCursors(cfg.CursorKey),
		rests:    newPageRests(),
		cache:    newResourceCache(cfg.CacheTTL, 50_000),
		domains:  newDomains(),
		upstream: &upstreamCheck{interval: cfg.ReadinessInterval},
		started:  time.Now().UTC(),
	}
	v, err := fhir.NewValidator()
	if err != nil {
		// Only a broken build of google/fhir gets here.
		panic(fmt.Sprintf("server: building the FHIR validator: %v", err))
	}
	s.validator = v
	if cfg.RateLimit.Rate > 0 {
		s.limiters = newClientLimiters(cfg.RateLimit)
	}
	if cfg.Store != nil {
		s.auditor = newAuditWriter(cfg.Store, cfg.AuditBuffer, cfg.Logger.With("component", "audit"), cfg.Metrics, cfg.AuditJournal)
		cfg.Metrics.WatchAuditBacklog(s.auditor.backlog)
		s.throttles = newThrottleAudit(s.emitThrottleSummary)
		cfg.Metrics.WatchDeliveryQueue(cfg.Store.DeliveryStats, cfg.Logger.With("component", "metrics"))
		cfg.Metrics.WatchSubscriptions(cfg.Store.SubscriptionStats, cfg.Logger.With("component", "metrics"))
	}
	s.engine = s.routes()
	return s
}

// ServeHTTP makes the server an http.Handler. HEAD is answered as the GET
// of the same URL without its body (RFC 9110 §9.3.2: the same header
// fields), for every GET route at once rather than a HEAD route each.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodHead {
		s.engine.ServeHTTP(w, r)
		return
	}
	get := r.Clone(r.Context())
	get.Method = http.MethodGet
	s.engine.ServeHTTP(headWriter{w}, get)
}

// headWriter keeps the headers and status of an answer and drops its body.
// net/http drops a HEAD answer's body too, but only when it sees the
// original request; an http.Handler in front of this one may not pass it.
type headWriter struct{ http.ResponseWriter }

func (w headWriter) Write(p []byte) (int, error) { return len(p), nil }

// Flush lets streamed answers (Binary) flush their headers.
func (w headWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Close writes the audit records still queued and stops the audit writer.
// Call it after the HTTP server has stopped taking requests (a request
// arriving later is answered 503); when ctx ends first, because the store
// is down, the records left are counted in the error and the log. The
// store must stay open until Close returns.
func (s *Server) Close(ctx context.Context) error {
	if s.auditor == nil {
		return nil
	}
	s.throttles.flush()
	return s.auditor.close(ctx)
}

func (s *Server) routes() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.HandleMethodNotAllowed = true
	// Redirects would hand FHIR clients a 301 to follow instead of an
	// OperationOutcome; ids and paths are exact in FHIR.
	e.RedirectTrailingSlash = false
	e.RedirectFixedPath = false
	e.ContextWithFallback = true
	if err := e.SetTrustedProxies(s.cfg.TrustedProxies); err != nil {
		// cmd checks the list; a bad one here trusts nobody.
		_ = e.SetTrustedProxies(nil)
	}

	// Order matters: recovery first so a panic anywhere below still gets an
	// OperationOutcome; the security headers and the forwarded-header
	// filter before anything that answers or builds a link; the
	// correlation id next so every later log line and
	// error carries it; the access log after both so it sees the final
	// status; limits last, closest to the handlers that read bodies.
	// Requests are observed outermost, so that what recovery makes of a
	// panic is counted and traced too.
	if s.cfg.Metrics != nil || s.cfg.Tracer != nil {
		e.Use(s.observeRequests())
	}
	e.Use(s.recovery(), secureHeaders(), s.forwardedHeaders(), s.correlation(), s.accessLog(), s.limits())
	e.NoRoute(s.handle(func(c *gin.Context) error {
		return fhir.Errorf(http.StatusNotFound, "not-found", "no route for %s %s", c.Request.Method, c.Request.URL.Path)
	}))
	e.NoMethod(s.handle(func(c *gin.Context) error {
		c.Header("Allow", allowed(e.Routes(), c.Request.URL.Path))
		return fhir.Errorf(http.StatusMethodNotAllowed, "not-supported", "method %s is not supported here", c.Request.Method)
	}))

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)

	// The rate limit comes after the domain check and (when configured)
	// authentication, so it counts per authenticated client.
	// The audit comes before authentication so refused attempts are
	// recorded too; the rate limit after it, to count per client.
	// Whether QUBS lets the bridge reach the domain is asked last, so that
	// only authenticated callers, at their allowed rate, can make the
	// bridge ask.
	fhirBase := e.Group(fhirBasePattern, s.domain(), s.audit(), s.authenticate(), s.rateLimit(), s.declaredLength(), s.readableURL(), s.knownDomain())
	// Binary read answers in the attachment's own media type, so it is
	// outside JSON negotiation; every other route negotiates first.
	s.registerFHIR(fhirBase, fhirBase.Group("", s.negotiate()))
	if s.cfg.SMART != nil {
		// Rate limited per address: it is where credentials are guessed.
		// Every method reaches the handler, so that a GET learns in
		// OAuth's own JSON (invalid_request), not a FHIR OperationOutcome,
		// that the endpoint wants a POST.
		e.Any(s.cfg.SMARTTokenPath, s.rateLimit(), gin.WrapH(s.cfg.SMART.TokenHandler()))
	}
	s.observed = s.observedRoutes(e.Routes())
	return e
}

// handle adapts a handler that returns an error, so that errors are
// rendered in exactly one place.
func (s *Server) handle(fn func(*gin.Context) error) gin.HandlerFunc {
	return func(c *gin.Context) {
		if err := fn(c); err != nil {
			s.renderError(c, err)
		}
	}
}

// maxQUBSPageSize is the largest page QUBS serves; walks that filter use it
// to make as few calls as possible.
const maxQUBSPageSize = 500

// allowed lists the methods routed for a path, for the Allow header of a
// 405 answer.
func allowed(routes gin.RoutesInfo, path string) string {
	var methods []string
	for _, r := range routes {
		if routeMatches(r.Path, path) && !slices.Contains(methods, r.Method) {
			methods = append(methods, r.Method)
			if r.Method == http.MethodGet {
				methods = append(methods, http.MethodHead) // see ServeHTTP
			}
		}
	}
	slices.Sort(methods)
	return strings.Join(methods, ", ")
}

// routeMatches matches a path against a Gin pattern with :params.
func routeMatches(pattern, path string) bool {
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(xs) {
		return false
	}
	for i := range ps {
		if !strings.HasPrefix(ps[i], ":") && ps[i] != xs[i] {
			return false
		}
	}
	return true
}
