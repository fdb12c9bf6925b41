package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/observe"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
)

// telemetry is the metrics listener (BRIDGE_METRICS_LISTEN) and the trace
// exporter (OTEL_*), either or both off.
type telemetry struct {
	metrics *observe.Metrics         // nil: metrics off
	tp      *sdktrace.TracerProvider // nil: tracing off
	ln      net.Listener             // the metrics listener
	srv     *http.Server
	pprof   bool // serve /debug/pprof/ beside /metrics
}

// newTelemetry binds BRIDGE_METRICS_LISTEN (a busy port fails the start,
// as BRIDGE_LISTEN does) and sets tracing up from the OTEL_* variables.
// Nothing is served until serve.
func newTelemetry(ctx context.Context, opts *options, getenv func(string) string) (*telemetry, error) {
	t := &telemetry{}
	// Checked before anything is set up, so that a mistake leaves nothing
	// to close.
	switch v := opts.get("pprof"); v {
	case "on":
		if opts.get("metrics-listen") == "" {
			return nil, errors.New("BRIDGE_PPROF=on needs BRIDGE_METRICS_LISTEN: the profiles are served on the metrics listener")
		}
		t.pprof = true
	case "off", "":
	default:
		return nil, fmt.Errorf("BRIDGE_PPROF %q: want on or off", v)
	}
	on, err := observe.TracingEnabled(getenv)
	if err != nil {
		return nil, err
	}
	if on {
		if t.tp, err = observe.NewOTLPTracerProvider(ctx, version); err != nil {
			return nil, err
		}
	}
	if addr := opts.get("metrics-listen"); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.close(ctx)
			return nil, fmt.Errorf("BRIDGE_METRICS_LISTEN %s: %w", addr, err)
		}
		t.ln = ln
		t.metrics = observe.NewMetrics(version)
	}
	return t, nil
}

// tracer is the provider for the bridge's parts, nil (not a typed nil)
// when tracing is off.
func (t *telemetry) tracer() trace.TracerProvider {
	if t.tp == nil {
		return nil
	}
	return t.tp
}

// wire hands the metrics and the tracer to the server, the delivery
// workers and the subscription senders.
func (t *telemetry) wire(cfg *server.Config, bg *background) {
	cfg.Metrics, cfg.Tracer = t.metrics, t.tracer()
	bg.deliveryObserver = observe.Delivery(t.metrics, t.tracer())
	bg.subscriptionObserver = observe.Subscriptions(t.metrics)
}

// metricsLine is the demo's line about metrics.
func metricsLine(url string) string {
	if url == "" {
		return "off (BRIDGE_METRICS_LISTEN)"
	}
	return url
}

// url is where the metrics are served, "" when they are not.
func (t *telemetry) url() string {
	if t.ln == nil {
		return ""
	}
	return "http://" + t.ln.Addr().String() + "/metrics"
}

// serve serves /metrics on the metrics listener until close.
func (t *telemetry) serve(log *slog.Logger) {
	if t.ln == nil {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", t.metrics.Handler())
	if t.pprof {
		// net/http/pprof moves the write deadline of a CPU profile or
		// trace past its ?seconds=N itself.
		servePprof(mux)
	}
	t.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      30 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := t.srv.Serve(t.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "error", err.Error())
		}
	}()
	log.Info("serving metrics", "addr", t.ln.Addr().String(), "pprof", t.pprof)
}

// servePprof adds net/http/pprof's handlers under /debug/pprof/: the
// index and every named profile (heap, allocs, goroutine, block, mutex,
// threadcreate), CPU profiles, execution traces and symbols. Not
// /debug/pprof/cmdline: the command line can carry a secret
// (--qubs-client-secret). Registered on the metrics listener's own mux,
// never on http.DefaultServeMux, which the FHIR listener does not use
// either.
func servePprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/debug/pprof/cmdline" {
			http.NotFound(w, r)
			return
		}
		pprof.Index(w, r)
	})
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// close stops the metrics listener and flushes the spans not yet exported.
func (t *telemetry) close(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if t.srv != nil {
		_ = t.srv.Shutdown(ctx)
	} else if t.ln != nil {
		_ = t.ln.Close()
	}
	if t.tp != nil {
		_ = t.tp.Shutdown(ctx)
	}
}
