package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/observe"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/observe/observetest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/server"
)

// withTelemetry observes the bridge as cmd does: the QUBS client, the
// server, the store (call it after withStore) and, through startWorker, the
// delivery worker. Either may be nil.
func withTelemetry(m *observe.Metrics, tp trace.TracerProvider) envOption {
	return func(_ *qubssim.Options, qc *qubs.Config, sc *server.Config) {
		qc.Observer = observe.QUBS(m, tp)
		if m != nil {
			sc.Metrics = m
		}
		if tp != nil {
			sc.Tracer = tp
		}
		if sc.Store != nil {
			sc.Store = observe.Store(sc.Store, m, tp)
		}
	}
}

func withRateLimit(rl server.RateLimit) envOption {
	return func(_ *qubssim.Options, _ *qubs.Config, sc *server.Config) { sc.RateLimit = rl }
}

// metricsListener serves m over real HTTP, as BRIDGE_METRICS_LISTEN does.
func metricsListener(t testing.TB, m *observe.Metrics) string {
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	return srv.URL + "/metrics"
}

type labels = map[string]string

// TestMetricsAfterWorkflow runs a real workflow through the router and the
// simulator (worklist search, a read, a report delivered to QUBS, two 404s,
// a request over the rate limit), then scrapes /metrics over HTTP and
// checks the counts.
func TestMetricsAfterWorkflow(t *testing.T) {
	t.Parallel()
	m := observe.NewMetrics("test-version")
	u := metricsListener(t, m)
	// Four requests in the burst; the fifth is refused.
	e := newEnv(t, withStore(t), withTelemetry(m, nil), withRateLimit(server.RateLimit{Rate: 0.001, Burst: 4}))
	appt, srID := firstPending(t, e.sim, 2)

	require.Equal(t, http.StatusOK, get(t, e.base+"/ServiceRequest?_count=10").status)
	require.Equal(t, http.StatusOK, get(t, e.base+"/ServiceRequest/"+srID).status)
	// QUBS takes a second over the submission, so the queue is seen
	// holding it.
	e.sim.AddFault(qubssim.Fault{Method: http.MethodPost, Route: "/report", Count: 1, Latency: time.Second})
	r := post(t, e.base+"/DiagnosticReport", report{srID: srID, status: "final", text: "Final report " + phiMarker}.json(), nil)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	queued := observetest.Scrape(t, u)
	assert.Equal(t, 1.0, queued.Value("bridge_delivery_queue_depth", labels{"domain": "acme"}))
	assert.GreaterOrEqual(t, queued.Value("bridge_delivery_oldest_pending_age_seconds", labels{"domain": "acme"}), 0.0)
	assert.Equal(t, 0.0, queued.Value("bridge_delivery_failed", labels{"domain": "acme"}))
	require.Equal(t, http.StatusNotFound, get(t, e.base+"/ServiceRequest/no-such-study").status)
	require.Equal(t, http.StatusNotFound, get(t, e.srv.URL+"/no/such/route").status)
	require.Equal(t, http.StatusTooManyRequests, get(t, e.base+"/ServiceRequest?_count=10").status)
	eventually(t, "the report delivered", func() bool { return len(e.sim.Reports("acme", appt.AppointmentID)) == 1 })

	var fams observetest.Families
	// The collectors of one scrape run side by side: the queue's figures,
	// read from the store, can predate the outcome counted in the same
	// scrape when the delivery commits during it. Both settle.
	eventually(t, "the delivery and the audit counted", func() bool {
		fams = observetest.Scrape(t, u)
		return fams.Value("bridge_delivery_outcomes_total", labels{"domain": "acme", "outcome": "delivered"}) == 1 &&
			fams.Value("bridge_delivery_queue_depth", labels{"domain": "acme"}) == 0 &&
			fams.Value("bridge_audit_records_written_total", nil) == 5
	})

	const search, read = "/fhir/:domain/ServiceRequest", "/fhir/:domain/ServiceRequest/:id"
	for _, c := range []struct {
		name   string
		labels labels
		want   float64
	}{
		{"bridge_http_requests_total", labels{"route": search, "method": "GET", "code": "2xx"}, 1},
		{"bridge_http_requests_total", labels{"route": search, "method": "GET", "code": "4xx"}, 1}, // the 429
		{"bridge_http_requests_total", labels{"route": read, "method": "GET", "code": "2xx"}, 1},
		{"bridge_http_requests_total", labels{"route": read, "method": "GET", "code": "4xx"}, 1},
		{"bridge_http_requests_total", labels{"route": "/fhir/:domain/DiagnosticReport", "method": "POST", "code": "2xx"}, 1},
		{"bridge_http_requests_total", labels{"route": "other", "method": "GET", "code": "4xx"}, 1},
		{"bridge_http_request_duration_seconds", labels{"route": search, "method": "GET"}, 2},
		{"bridge_http_requests_in_flight", nil, 0},
		{"bridge_rate_limit_refusals_total", labels{"reason": "client"}, 1},
		{"bridge_rate_limit_refusals_total", labels{"reason": "audit"}, 0},
		{"bridge_rate_limit_refusals_total", labels{"reason": "anonymous"}, 0},
		{"bridge_qubs_requests_total", labels{"operation": "create_report", "code": "2xx", "retry": "false"}, 1},
		{"bridge_qubs_requests_total", labels{"operation": "create_report", "code": "2xx", "retry": "true"}, 0},
		{"bridge_qubs_request_duration_seconds", labels{"operation": "create_report"}, 1},
		{"bridge_qubs_retry_after_seconds_total", labels{"operation": "list_appointments"}, 0},
		{"bridge_qubs_token_fetches_total", labels{"result": "ok"}, 1},
		{"bridge_qubs_token_fetches_total", labels{"result": "error"}, 0},
		{"bridge_qubs_requests_total", labels{"operation": "token", "code": "2xx", "retry": "false"}, 1},
		{"bridge_delivery_attempts_total", labels{"domain": "acme"}, 1},
		{"bridge_delivery_outcomes_total", labels{"domain": "acme", "outcome": "delivered"}, 1},
		{"bridge_delivery_queue_depth", labels{"domain": "acme"}, 0},
		{"bridge_delivery_oldest_pending_age_seconds", labels{"domain": "acme"}, 0},
		{"bridge_audit_records_written_total", nil, 5},
		{"bridge_audit_write_errors_total", nil, 0},
		{"bridge_audit_buffer_depth", nil, 0},
		{"bridge_store_operation_errors_total", labels{"operation": "create_report"}, 0},
		{"bridge_store_operation_duration_seconds", labels{"operation": "create_report"}, 1},
		{"bridge_store_operation_duration_seconds", labels{"operation": "complete_delivery"}, 1},
		{"bridge_build_info", labels{"version": "test-version", "goversion": fams["bridge_build_info"].GetMetric()[0].GetLabel()[0].GetValue()}, 1},
	} {
		assert.Equal(t, c.want, fams.Value(c.name, c.labels), "%s%v", c.name, c.labels)
	}
	// The search, the domain probe and the read each read QUBS; the 404
	// read's 4xx is QUBS's own answer.
	assert.GreaterOrEqual(t, fams.Sum("bridge_qubs_requests_total", labels{"operation": "list_appointments", "code": "2xx"}), 1.0)
	assert.GreaterOrEqual(t, fams.Sum("bridge_qubs_requests_total", labels{"operation": "get_appointment", "code": "4xx"}), 1.0)
	assert.Greater(t, fams.Value("bridge_audit_batches_total", nil), 0.0)
	for _, std := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "go_gc_duration_seconds", "process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"} {
		assert.Contains(t, fams, std, "the standard collectors are registered")
	}
	assertLabelsClean(t, fams, e)
	assertDocumented(t, fams)
}

// assertDocumented checks docs/metrics.md against a scrape: every metric
// its table lists is served, and every bridge_ metric served is listed.
func assertDocumented(t *testing.T, fams observetest.Families) {
	t.Helper()
	doc, err := os.ReadFile("../docs/metrics.md")
	require.NoError(t, err)
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_:]+)` \\|").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	require.Greater(t, len(documented), 20)
	for name := range documented {
		assert.Contains(t, fams, name, "docs/metrics.md lists %s", name)
	}
	for name := range fams {
		if strings.HasPrefix(name, "bridge_") {
			assert.True(t, documented[name], "%s is served but not in docs/metrics.md", name)
		}
	}
}

// assertLabelsClean fails when a label value of any bridge_ metric holds
// PHI or an id: every value must be one of the fixed words, a route
// template, a QUBS domain or a version.
func assertLabelsClean(t *testing.T, fams observetest.Families, e *env) {
	t.Helper()
	var all strings.Builder
	codes := []string{"1xx", "2xx", "3xx", "4xx", "5xx", "error"}
	for name, f := range fams {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				v := l.GetValue()
				all.WriteString(name + "{" + l.GetName() + "=" + v + "}\n")
				if !strings.HasPrefix(name, "bridge_") {
					continue
				}
				switch l.GetName() {
				case "route":
					assert.True(t, v == "other" || !strings.ContainsAny(v, "?=&") && (v == "/healthz" || v == "/readyz" || strings.HasPrefix(v, "/fhir/:domain")), "route %q is a template", v)
				case "code":
					assert.Contains(t, codes, v)
				case "retry":
					assert.Contains(t, []string{"true", "false"}, v)
				case "domain":
					assert.Contains(t, e.sim.Domains(), v)
				case "method", "operation", "outcome", "reason", "result", "version", "goversion", "type", "status":
					assert.Regexp(t, `^[A-Za-z0-9_.\-+]+$`, v, "%s is a fixed word", l.GetName())
				default:
					t.Errorf("unexpected label %s on %s", l.GetName(), name)
				}
			}
		}
	}
	labels := all.String()
	assertNoPHI(t, labels, e.sim)
	for _, id := range e.sim.AppointmentIDs("acme") {
		if strings.Contains(labels, id) {
			t.Fatalf("a metric label holds appointment id %s", id)
		}
	}
}

// TestMetricsAnonymousProbeRefusals counts the public requests served
// without a domain probe once the shared budget of unauthenticated probes
// is spent.
func TestMetricsAnonymousProbeRefusals(t *testing.T) {
	t.Parallel()
	m := observe.NewMetrics("test")
	u := metricsListener(t, m)
	e := newEnv(t, withTelemetry(m, nil))
	for _, d := range []string{"made-up-1", "made-up-2", "made-up-3", "made-up-4", "made-up-5", "made-up-6", "made-up-7", "made-up-8"} {
		res, _ := send(t, http.MethodGet, e.srv.URL+"/fhir/"+d+"/metadata", nil, nil)
		require.Contains(t, []int{http.StatusOK, http.StatusNotFound}, res.StatusCode)
	}
	// A request is counted once its handler returns, which can be after
	// the client has read a large answer (the CapabilityStatement goes
	// out as it is written).
	var fams observetest.Families
	eventually(t, "the eight requests counted", func() bool {
		fams = observetest.Scrape(t, u)
		return fams.Sum("bridge_http_requests_total", labels{"route": "/fhir/:domain/metadata"}) == 8
	})
	assert.GreaterOrEqual(t, fams.Value("bridge_rate_limit_refusals_total", labels{"reason": "anonymous"}), 1.0)
	assert.Equal(t, 8.0, fams.Sum("bridge_http_requests_total", labels{"route": "/fhir/:domain/metadata"}))
}

// spans is an in-memory trace exporter at sample ratio 1.
func spans(t testing.TB) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

// TestTraces follows a search, a read and a report through the bridge: one
// server span per request named by method and route template, child spans
// for QUBS and store calls and for the delivery attempt, the correlation id
// as an attribute, traceparent sent to QUBS and continued from the client,
// and nothing of the patient's in any span.
func TestTraces(t *testing.T) {
	t.Parallel()
	tp, exp := spans(t)
	e := newEnv(t, withStore(t), withTelemetry(nil, tp))
	appt, srID := firstPending(t, e.sim, 4)

	// A client that traces sends its own traceparent; the bridge continues it.
	const clientTrace, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	r := do(t, http.MethodGet, e.base+"/ServiceRequest?_count=5", http.Header{
		"Traceparent": {"00-" + clientTrace + "-" + clientSpan + "-01"}, "X-Correlation-Id": {"corr-search-1"}}, nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, http.StatusOK, get(t, e.base+"/ServiceRequest/"+srID).status)
	r = post(t, e.base+"/DiagnosticReport", report{srID: srID, status: "preliminary", text: "Prelim " + phiMarker, pdfs: [][]byte{pdf("artifact " + phiMarker)}}.json(),
		http.Header{"X-Correlation-Id": {"corr-post-1"}})
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	eventually(t, "the report delivered", func() bool { return len(e.sim.Reports("acme", appt.AppointmentID)) == 1 })
	var got tracetest.SpanStubs
	eventually(t, "the delivery attempt's span", func() bool {
		got = exp.GetSpans()
		return slices.ContainsFunc(got, func(s tracetest.SpanStub) bool { return s.Name == "delivery attempt" })
	})

	byName := func(name string) []tracetest.SpanStub {
		var out []tracetest.SpanStub
		for _, s := range got {
			if s.Name == name {
				out = append(out, s)
			}
		}
		return out
	}
	childrenOf := func(parent tracetest.SpanStub, name string) []tracetest.SpanStub {
		var out []tracetest.SpanStub
		for _, s := range byName(name) {
			if s.Parent.SpanID() == parent.SpanContext.SpanID() && s.SpanContext.TraceID() == parent.SpanContext.TraceID() {
				out = append(out, s)
			}
		}
		return out
	}
	attr := func(s tracetest.SpanStub, key string) string {
		for _, a := range s.Attributes {
			if string(a.Key) == key {
				return a.Value.Emit()
			}
		}
		return ""
	}

	search := byName("GET /fhir/:domain/ServiceRequest")
	require.Len(t, search, 1)
	assert.Equal(t, trace.SpanKindServer, search[0].SpanKind)
	assert.Equal(t, clientTrace, search[0].SpanContext.TraceID().String(), "the client's trace is continued")
	assert.Equal(t, clientSpan, search[0].Parent.SpanID().String())
	assert.Equal(t, "corr-search-1", attr(search[0], "bridge.correlation_id"))
	assert.Equal(t, "/fhir/:domain/ServiceRequest", attr(search[0], "http.route"))
	assert.Equal(t, "200", attr(search[0], "http.response.status_code"))
	assert.Equal(t, "acme", attr(search[0], "bridge.domain"))
	lists := childrenOf(search[0], "QUBS list_appointments")
	require.NotEmpty(t, lists, "the search's QUBS calls are its children")
	assert.Equal(t, "corr-search-1", attr(lists[0], "bridge.correlation_id"))
	assert.Equal(t, trace.SpanKindClient, lists[0].SpanKind)

	reads := byName("GET /fhir/:domain/ServiceRequest/:id")
	require.Len(t, reads, 1)
	assert.NotEmpty(t, childrenOf(reads[0], "QUBS get_appointment"))

	posts := byName("POST /fhir/:domain/DiagnosticReport")
	require.Len(t, posts, 1)
	assert.Len(t, childrenOf(posts[0], "store create_report"), 1, "store calls are children of the request")
	assert.Equal(t, "201", attr(posts[0], "http.response.status_code"))

	attempts := byName("delivery attempt")
	require.Len(t, attempts, 1)
	assert.Equal(t, "delivered", attr(attempts[0], "bridge.delivery.outcome"))
	assert.Equal(t, "acme", attr(attempts[0], "bridge.domain"))
	submits := childrenOf(attempts[0], "QUBS create_report")
	require.Len(t, submits, 1, "the submission is a child of its attempt")
	assert.Len(t, childrenOf(attempts[0], "QUBS upload_url"), 1)
	assert.Len(t, childrenOf(attempts[0], "QUBS upload_put"), 1)
	assert.Len(t, childrenOf(attempts[0], "store complete_delivery"), 1)

	// W3C traceparent reached QUBS, naming the span of the call.
	traced := map[string]string{} // span id -> trace id, of QUBS spans
	for _, s := range got {
		if strings.HasPrefix(s.Name, "QUBS ") {
			traced[s.SpanContext.SpanID().String()] = s.SpanContext.TraceID().String()
		}
	}
	var sawSubmit bool
	for _, rec := range e.sim.Requests() {
		if strings.Contains(rec.Path, "/presigned/") {
			assert.Empty(t, rec.TraceParent, "no trace context to the object store")
			continue
		}
		parts := strings.Split(rec.TraceParent, "-")
		require.Len(t, parts, 4, "%s %s carries a traceparent: %q", rec.Method, rec.Route, rec.TraceParent)
		assert.Equal(t, traced[parts[2]], parts[1], "the traceparent names the QUBS call's span")
		if strings.HasSuffix(rec.Route, "/report") {
			sawSubmit = true
			assert.Equal(t, submits[0].SpanContext.TraceID().String(), parts[1])
		}
	}
	assert.True(t, sawSubmit)

	assertSpansClean(t, got, e, appt.AppointmentID, srID)
}

// assertSpansClean fails when a span name, attribute, event or status holds
// PHI, a token, a URL or a patient or study id, as assertNoPHI checks the
// logs.
func assertSpansClean(t *testing.T, got tracetest.SpanStubs, e *env, ids ...string) {
	t.Helper()
	var b strings.Builder
	for _, s := range got {
		b.WriteString(s.Name + "\n" + s.Status.Description + "\n")
		for _, a := range s.Attributes {
			b.WriteString(string(a.Key) + "=" + a.Value.Emit() + "\n")
		}
		for _, ev := range s.Events {
			b.WriteString(ev.Name + "\n")
			for _, a := range ev.Attributes {
				b.WriteString(string(a.Key) + "=" + a.Value.Emit() + "\n")
			}
		}
		for _, a := range s.Resource.Attributes() {
			b.WriteString(string(a.Key) + "=" + a.Value.Emit() + "\n")
		}
	}
	text := b.String()
	assertNoPHI(t, text, e.sim)
	assert.NotContains(t, text, "http://", "no URL in spans")
	assert.NotContains(t, text, "?", "no query in spans")
	// An id counts where it stands alone, not inside a longer word: the
	// correlation ids the bridge makes are 32 random hex digits, and a
	// six-digit patient id turned up inside one (CI, 2026-12-03).
	holds := func(id string) bool {
		return regexp.MustCompile(`(^|[^0-9A-Za-z])` + regexp.QuoteMeta(id) + `([^0-9A-Za-z]|$)`).MatchString(text)
	}
	for _, id := range ids {
		assert.False(t, holds(id), "no patient or study id in spans: %s", id)
	}
	for _, d := range e.sim.Domains() {
		for _, id := range e.sim.AppointmentIDs(d) {
			if a, ok := e.sim.Appointment(d, id); ok && a.PatientID != "" && len(a.PatientID) > 3 && holds(a.PatientID) {
				t.Errorf("a span holds patient id %s", a.PatientID)
			}
		}
	}
}

// BenchmarkSearch100Observed is BenchmarkSearch100's plain case with
// metrics and tracing both off, then both on (every span sampled, given to
// a no-op exporter, so the cost measured is the bridge's and the SDK's,
// not an exporter's).
func BenchmarkSearch100Observed(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			opts := []envOption{withStore(b), noKick()}
			if on {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewNoopExporter()), sdktrace.WithSampler(sdktrace.AlwaysSample()))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				opts = append(opts, withTelemetry(observe.NewMetrics("bench"), tp))
			}
			getLoop(b, newEnv(b, opts...), "/fhir/acme/ServiceRequest?_count=100")
		})
	}
}
