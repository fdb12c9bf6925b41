package observe

import (
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds every bridge_ metric on a registry of its own, so that
// several bridges in one process (tests) never share or collide. A nil
// *Metrics is metrics off: every method is then a no-op.
type Metrics struct {
	reg *prometheus.Registry

	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	httpInFlight prometheus.Gauge

	qubsRequests   *prometheus.CounterVec
	qubsDuration   *prometheus.HistogramVec
	qubsRetryAfter *prometheus.CounterVec
	tokenOK        prometheus.Counter
	tokenError     prometheus.Counter
	// qubs holds the children of each operation, resolved once.
	qubs map[string]*qubsOp

	deliveryAttempts *prometheus.CounterVec
	deliveryOutcomes *prometheus.CounterVec

	// subscriptionPosts are the children of
	// bridge_subscription_notifications_total by (type, outcome).
	subscriptionPosts   map[[2]string]prometheus.Counter
	subscriptionLatency prometheus.Histogram

	auditRecords  prometheus.Counter
	auditBatches  prometheus.Counter
	auditDuration prometheus.Histogram
	auditErrors   prometheus.Counter
	auditJournal  prometheus.Counter
	auditBacklog  atomic.Pointer[func() int]

	storeDuration *prometheus.HistogramVec
	storeErrors   *prometheus.CounterVec

	refusals [numRefusals]prometheus.Counter
}

// Refusal reasons of bridge_rate_limit_refusals_total.
type Refusal int

const (
	// RefusedClient: a client (or an address whose credentials were
	// refused) spent its request budget and was answered 429.
	RefusedClient Refusal = iota
	// RefusedAudit: the audit buffer stayed full until the request's
	// deadline and its answer was withheld (503).
	RefusedAudit
	// RefusedAnonymous: the shared budget of domain probes for
	// unauthenticated requests was spent; the public document was served
	// without the probe.
	RefusedAnonymous
	numRefusals
)

var refusalNames = [numRefusals]string{"client", "audit", "anonymous"}

// Latency buckets. HTTP and QUBS calls span milliseconds to the 60 s
// request timeout; store calls and audit batches are mostly sub-millisecond
// on SQLite and a few milliseconds on PostgreSQL.
var (
	requestBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	storeBuckets   = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
)

// NewMetrics registers every metric, the Go runtime and process collectors
// and bridge_build_info{version} on a new registry.
func NewMetrics(version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	f := factory{promauto.With(m.reg)}
	m.httpRequests = f.counterVec("bridge_http_requests_total", "FHIR and other HTTP requests answered, by route template, method and status class.", "route", "method", "code")
	m.httpDuration = f.histogramVec("bridge_http_request_duration_seconds", "Time to answer an HTTP request, by route template and method.", requestBuckets, "route", "method")
	m.httpInFlight = f.gauge("bridge_http_requests_in_flight", "HTTP requests being answered.")

	m.qubsRequests = f.counterVec("bridge_qubs_requests_total", "HTTP attempts to QUBS (API, token endpoint, presigned URLs), by operation, status class (error: no answer) and whether the attempt is a retry.", "operation", "code", "retry")
	m.qubsDuration = f.histogramVec("bridge_qubs_request_duration_seconds", "Time of one HTTP attempt to QUBS until its answer's headers, by operation.", requestBuckets, "operation")
	m.qubsRetryAfter = f.counterVec("bridge_qubs_retry_after_seconds_total", "Seconds spent waiting because QUBS answered with Retry-After, by operation.", "operation")
	tokens := f.counterVec("bridge_qubs_token_fetches_total", "QUBS access token requests, by result (ok, error).", "result")
	m.tokenOK, m.tokenError = tokens.WithLabelValues("ok"), tokens.WithLabelValues("error")

	m.deliveryAttempts = f.counterVec("bridge_delivery_attempts_total", "Delivery attempts of report versions to QUBS, by domain.", "domain")
	m.deliveryOutcomes = f.counterVec("bridge_delivery_outcomes_total", "Ends of delivery attempts, by domain and outcome (delivered, failed, superseded, retry, lease_lost).", "domain", "outcome")

	m.initSubscriptions(f)

	m.auditRecords = f.counter("bridge_audit_records_written_total", "Audit records committed to the store.")
	m.auditBatches = f.counter("bridge_audit_batches_total", "Audit batches committed to the store (one transaction each).")
	m.auditDuration = f.histogram("bridge_audit_write_duration_seconds", "Time of one attempt to commit an audit batch.", storeBuckets)
	m.auditErrors = f.counter("bridge_audit_write_errors_total", "Attempts to commit an audit batch that failed (the batch is retried).")
	m.auditJournal = f.counter("bridge_audit_journal_errors_total", "Audit records the journal could not take; their requests waited for the commit instead.")
	f.gaugeFunc("bridge_audit_buffer_depth", "Audit records queued or being written, not yet committed.", func() float64 {
		if fn := m.auditBacklog.Load(); fn != nil {
			return float64((*fn)())
		}
		return 0
	})

	m.storeDuration = f.histogramVec("bridge_store_operation_duration_seconds", "Time of one store call, by operation.", storeBuckets, "operation")
	m.storeErrors = f.counterVec("bridge_store_operation_errors_total", "Store calls that failed for want of the database (internal errors; not found, conflicts and invalid input are answers, not errors), by operation.", "operation")

	refusals := f.counterVec("bridge_rate_limit_refusals_total", "Requests refused or served short by a budget, by reason (client: 429 per client; audit: 503 for a full audit buffer; anonymous: domain probe budget of unauthenticated requests spent).", "reason")
	for i, name := range refusalNames {
		m.refusals[i] = refusals.WithLabelValues(name)
	}

	build := f.gaugeVec("bridge_build_info", "Always 1; the labels name the bridge's version and the Go version that built it.", "version", "goversion")
	build.WithLabelValues(version, runtime.Version()).Set(1)

	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.initQUBS()
	return m
}

// Registry is where the metrics live, for tests and for collectors added
// by the caller.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text (or OpenMetrics)
// format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// RouteMetrics are the children of one route and method, resolved once so
// that a request costs two atomic adds and no allocation.
type RouteMetrics struct {
	codes    [5]prometheus.Counter // 1xx..5xx
	duration prometheus.Observer
}

// Route resolves the children of a route template and method. Call it once
// per route at start-up; nil when m is nil.
func (m *Metrics) Route(method, route string) *RouteMetrics {
	if m == nil {
		return nil
	}
	r := &RouteMetrics{duration: m.httpDuration.WithLabelValues(route, method)}
	for i := range r.codes {
		r.codes[i] = m.httpRequests.WithLabelValues(route, method, codeNames[i])
	}
	return r
}

// Observe counts a request answered with status after d.
func (r *RouteMetrics) Observe(status int, d time.Duration) {
	if r == nil {
		return
	}
	i := codeIndex(status)
	if i == codeError {
		i = 4 // no valid status was written: the server failed
	}
	r.codes[i].Inc()
	r.duration.Observe(d.Seconds())
}

// InFlight adds delta to the requests being answered.
func (m *Metrics) InFlight(delta float64) {
	if m != nil {
		m.httpInFlight.Add(delta)
	}
}

// Refused counts a request refused, or served short, by a budget.
func (m *Metrics) Refused(r Refusal) {
	if m != nil && r >= 0 && r < numRefusals {
		m.refusals[r].Inc()
	}
}

// AuditBatch records one attempt to commit an audit batch of n records.
func (m *Metrics) AuditBatch(n int, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.auditDuration.Observe(d.Seconds())
	if err != nil {
		m.auditErrors.Inc()
		return
	}
	m.auditBatches.Inc()
	m.auditRecords.Add(float64(n))
}

// AuditJournalFailed records a record the audit journal could not take.
func (m *Metrics) AuditJournalFailed() {
	if m != nil {
		m.auditJournal.Inc()
	}
}

// AuditWithWrite records an audit record committed in the transaction of
// the change it records (a report write, see server.storeAudited): a
// record written, in no batch of its own.
func (m *Metrics) AuditWithWrite() {
	if m != nil {
		m.auditRecords.Inc()
	}
}

// WatchAuditBacklog makes bridge_audit_buffer_depth read backlog; the last
// call wins.
func (m *Metrics) WatchAuditBacklog(backlog func() int) {
	if m != nil {
		m.auditBacklog.Store(&backlog)
	}
}

// Status classes of the code labels.
const codeError = 5

var codeNames = [6]string{"1xx", "2xx", "3xx", "4xx", "5xx", "error"}

// codeIndex is the class of an HTTP status, codeError for 0 (no answer).
func codeIndex(status int) int {
	if status < 100 || status > 599 {
		return codeError
	}
	return status/100 - 1
}

// StatusClass is the code label of an HTTP status: "2xx" and so on, or
// "error" when no answer came (status 0).
func StatusClass(status int) string { return codeNames[codeIndex(status)] }

// factory is promauto's registering factory on one registry, with the
// options this package sets (a name, a help, buckets) as arguments.
type factory struct{ promauto.Factory }

func (f factory) counter(name, help string) prometheus.Counter {
	return f.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return f.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	return f.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return f.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}

func (f factory) gaugeFunc(name, help string, fn func() float64) {
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn)
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	return f.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return f.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
}
