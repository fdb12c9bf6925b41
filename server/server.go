// Package server is the FHIR R4 HTTP face of the bridge: the Gin router, its
// middleware and the handlers. A handler reads like the workflow: parse the
// FHIR request, validate it, call QUBS, map the answer, respond. Every error
// is rendered as an OperationOutcome in one place (errors.go).
package server

import (
	"context"
	"iter"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// QUBS is the part of the QUBS client the server uses; *qubs.Client
// implements it. Every method returns *qubs.Error on failure.
type QUBS interface {
	Token(ctx context.Context) error
	ListPending(ctx context.Context, domain string, pageSize int, nextToken string) (*qubs.AppointmentPage, error)
	GetPending(ctx context.Context, domain, appointmentID string) (*qubs.Appointment, error)
	Pending(ctx context.Context, domain string, pageSize int) iter.Seq2[qubs.Appointment, error]
}

var _ QUBS = (*qubs.Client)(nil)

// Config is what the server needs; cmd/qubs-fhir-bridge fills it from flags
// and the environment.
type Config struct {
	// PublicURL is BRIDGE_PUBLIC_URL: the absolute base of Bundle links and
	// Location headers. Empty means derive it from the request.
	PublicURL string
	QUBS      QUBS
	Zones     *mapping.Zones
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
	// Version is reported in the CapabilityStatement.
	Version string
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
	cfg     Config
	log     *slog.Logger
	engine  *gin.Engine
	cursors *fhir.Cursors
	cache   *resourceCache
	started time.Time
}

// New builds the server and its routes.
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
	if cfg.Zones == nil {
		cfg.Zones, _ = mapping.NewZones("Australia/Sydney", "")
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		cursors: fhir.NewCursors(cfg.CursorKey),
		cache:   newResourceCache(cfg.CacheTTL, 50_000),
		started: time.Now().UTC(),
	}
	s.engine = s.routes()
	return s
}

// ServeHTTP makes the server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.engine.ServeHTTP(w, r) }

func (s *Server) routes() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.HandleMethodNotAllowed = true
	// Redirects would hand FHIR clients a 301 to follow instead of an
	// OperationOutcome; ids and paths are exact in FHIR.
	e.RedirectTrailingSlash = false
	e.RedirectFixedPath = false
	e.ContextWithFallback = true

	// Order matters: recovery first so a panic anywhere below still gets an
	// OperationOutcome; the correlation id next so every later log line and
	// error carries it; the access log after both so it sees the final
	// status; limits last, closest to the handlers that read bodies.
	e.Use(s.recovery(), s.correlation(), s.accessLog(), s.limits())
	e.NoRoute(s.handle(func(c *gin.Context) error {
		return fhir.Errorf(http.StatusNotFound, "not-found", "no route for %s %s", c.Request.Method, c.Request.URL.Path)
	}))
	e.NoMethod(s.handle(func(c *gin.Context) error {
		return fhir.Errorf(http.StatusMethodNotAllowed, "not-supported", "method %s is not supported here", c.Request.Method)
	}))

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)

	base := e.Group("/fhir/:domain", s.negotiate(), s.domain())
	base.GET("/metadata", s.handle(s.metadata))
	base.GET("/ServiceRequest", s.handle(s.searchServiceRequests))
	base.POST("/ServiceRequest/_search", s.handle(s.searchServiceRequests))
	base.GET("/ServiceRequest/:id", s.handle(s.readServiceRequest))
	for _, typ := range derivedTypes {
		base.GET("/"+typ+"/:id", s.handle(s.readDerived(typ)))
	}
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
