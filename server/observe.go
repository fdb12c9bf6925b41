package server

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/observe"
)

// unmatchedRoute is the route label of requests no route matched: the
// raw path would let any client mint label values (and holds ids).
const unmatchedRoute = "other"

// routeKey finds a route's observers without allocating.
type routeKey struct{ method, route string }

// routeObservers is what is resolved once per route and method: the
// metric children and the span name.
type routeObservers struct {
	metrics  *observe.RouteMetrics
	spanName string
	route    attribute.KeyValue // http.route; unset for unmatched requests
	method   attribute.KeyValue
}

type observedRoutes map[routeKey]*routeObservers

// knownMethods are the method labels; any other method a client sends is
// counted as "other", so that clients cannot mint label values.
var knownMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions}

// observedRoutes resolves the observers of every registered route, and of
// unmatched requests per method.
func (s *Server) observedRoutes(routes gin.RoutesInfo) observedRoutes {
	if s.cfg.Metrics == nil && s.cfg.Tracer == nil {
		return nil
	}
	out := observedRoutes{}
	for _, r := range routes {
		out[routeKey{r.Method, r.Path}] = &routeObservers{
			metrics:  s.cfg.Metrics.Route(r.Method, r.Path),
			spanName: r.Method + " " + r.Path,
			route:    attribute.String("http.route", r.Path),
			method:   attribute.String("http.request.method", r.Method),
		}
	}
	for _, m := range append(knownMethods, unmatchedRoute) {
		out[routeKey{m, unmatchedRoute}] = &routeObservers{
			metrics: s.cfg.Metrics.Route(m, unmatchedRoute),
			// OTel's rule for a request without a route: the method alone.
			spanName: m,
			method:   attribute.String("http.request.method", m),
		}
	}
	return out
}

// of returns the observers of a request.
func (o observedRoutes) of(c *gin.Context) *routeObservers {
	route := c.FullPath()
	if route != "" {
		if r := o[routeKey{c.Request.Method, route}]; r != nil {
			return r
		}
	}
	if r := o[routeKey{c.Request.Method, unmatchedRoute}]; r != nil {
		return r
	}
	return o[routeKey{unmatchedRoute, unmatchedRoute}]
}

// observeRequests counts every request by route template, method and
// status class (bridge_http_*) and, with tracing on, makes it a server span
// named by method and route template, the parent of the request's QUBS and
// store spans. The span continues a client's W3C traceparent. Its
// attributes are the route, the method, the status, the QUBS domain and
// the correlation id: never the path or the query, which hold patient and
// study ids.
func (s *Server) observeRequests() gin.HandlerFunc {
	tracer := observe.Tracer(s.cfg.Tracer)
	return func(c *gin.Context) {
		start := time.Now()
		o := s.observed.of(c)
		var span trace.Span
		if tracer != nil {
			ctx := observe.Propagator.Extract(c.Request.Context(), propagation.HeaderCarrier(c.Request.Header))
			attrs := []attribute.KeyValue{o.method}
			if o.route.Valid() {
				attrs = append(attrs, o.route)
			}
			ctx, span = tracer.Start(ctx, o.spanName, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
			c.Request = c.Request.WithContext(ctx)
		}
		s.cfg.Metrics.InFlight(1)
		// Deferred: a handler aborted with http.ErrAbortHandler panics
		// through here, and must not stay in flight for ever.
		defer s.cfg.Metrics.InFlight(-1)
		c.Next()
		status := c.Writer.Status()
		o.metrics.Observe(status, time.Since(start))
		if span != nil {
			span.SetAttributes(attribute.Int("http.response.status_code", status),
				attribute.String("bridge.correlation_id", correlationIDOf(c)))
			// Only a domain the caller was let into: the path's domain is
			// anyone's to make up, and a made-up one per request would
			// grow a tracing backend's tag index without bound.
			if d := domainOf(c); d != "" && principalOf(c) != nil && status != http.StatusNotFound &&
				status != http.StatusUnauthorized && status != http.StatusForbidden {
				span.SetAttributes(attribute.String("bridge.domain", d))
			}
			if status >= 500 {
				span.SetStatus(codes.Error, observe.StatusClass(status))
			}
			span.End()
		}
	}
}
