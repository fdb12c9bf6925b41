package observe

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// opOther is the operation label of a call the client did not name (a bug:
// every call names one), so that it is still counted.
const opOther = "other"

// qubsOp are the children of one QUBS operation, resolved once.
type qubsOp struct {
	requests   [6][2]prometheus.Counter // by codeIndex, then retry
	duration   prometheus.Observer
	retryAfter prometheus.Counter
	spanName   string
}

func (m *Metrics) initQUBS() {
	m.qubs = make(map[string]*qubsOp, len(qubs.Operations)+1)
	for _, op := range append(qubs.Operations[:len(qubs.Operations):len(qubs.Operations)], opOther) {
		o := &qubsOp{duration: m.qubsDuration.WithLabelValues(op), retryAfter: m.qubsRetryAfter.WithLabelValues(op)}
		for i, code := range codeNames {
			o.requests[i][0] = m.qubsRequests.WithLabelValues(op, code, "false")
			o.requests[i][1] = m.qubsRequests.WithLabelValues(op, code, "true")
		}
		m.qubs[op] = o
	}
}

func (m *Metrics) qubsOp(op string) *qubsOp {
	if o, ok := m.qubs[op]; ok {
		return o
	}
	return m.qubs[opOther]
}

// qubsObserver implements qubs.Observer.
type qubsObserver struct {
	m      *Metrics
	tracer trace.Tracer
}

// QUBS returns the observer of the QUBS client: bridge_qubs_* metrics (when
// m is set) and one client span per HTTP attempt, named "QUBS <operation>",
// with W3C traceparent sent to QUBS (when tp is set). Nil when both are
// off.
func QUBS(m *Metrics, tp trace.TracerProvider) qubs.Observer {
	if m == nil && tp == nil {
		return nil
	}
	return &qubsObserver{m: m, tracer: Tracer(tp)}
}

func (o *qubsObserver) Attempt(req *http.Request, a qubs.Attempt) (*http.Request, func(int, error)) {
	start := time.Now()
	var span trace.Span
	if o.tracer != nil {
		ctx := req.Context()
		attrs := []trace.SpanStartOption{
			trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attrOperation.String(a.Operation), attrMethod.String(req.Method), attrAttempt.Int(a.Number)),
		}
		if id := qubs.CorrelationID(ctx); id != "" && a.ToQUBS {
			attrs = append(attrs, trace.WithAttributes(attrCorrelationID.String(id)))
		}
		ctx, span = o.tracer.Start(ctx, "QUBS "+a.Operation, attrs...)
		if a.ToQUBS {
			// Only QUBS gets the trace context; a presigned URL's object
			// store has no use for it.
			Propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
		}
		req = req.WithContext(ctx)
	}
	retry := 0
	if a.Retry() {
		retry = 1
	}
	return req, func(status int, err error) {
		if o.m != nil {
			op := o.m.qubsOp(a.Operation)
			op.requests[codeIndex(status)][retry].Inc()
			op.duration.Observe(time.Since(start).Seconds())
		}
		if span != nil {
			if status != 0 {
				span.SetAttributes(attrStatus.Int(status))
			}
			switch {
			case err != nil:
				// The error's text may quote a URL, which for presigned
				// ones is a credential: only that there was none.
				span.SetStatus(codes.Error, "no answer")
			case status >= 500:
				span.SetStatus(codes.Error, StatusClass(status))
			}
			span.End()
		}
	}
}

func (o *qubsObserver) RetryAfter(op string, waited time.Duration) {
	if o.m != nil {
		o.m.qubsOp(op).retryAfter.Add(waited.Seconds())
	}
}

func (o *qubsObserver) TokenFetch(err error) {
	if o.m == nil {
		return
	}
	if err != nil {
		o.m.tokenError.Inc()
		return
	}
	o.m.tokenOK.Inc()
}
