package observe

import (
	"context"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/delivery"
)

// deliveryObserver implements delivery.Observer.
type deliveryObserver struct {
	m      *Metrics
	tracer trace.Tracer
}

// Delivery returns the observer of the delivery workers:
// bridge_delivery_attempts_total and bridge_delivery_outcomes_total (when
// m is set) and a "delivery attempt" span per attempt, parent of its QUBS
// and store spans (when tp is set). Nil when both are off.
func Delivery(m *Metrics, tp trace.TracerProvider) delivery.Observer {
	if m == nil && tp == nil {
		return nil
	}
	return &deliveryObserver{m: m, tracer: Tracer(tp)}
}

func (o *deliveryObserver) Attempt(ctx context.Context, a delivery.AttemptInfo) (context.Context, func(string)) {
	if o.m != nil {
		o.m.deliveryAttempts.WithLabelValues(a.Domain).Inc()
	}
	var span trace.Span
	if o.tracer != nil {
		ctx, span = o.tracer.Start(ctx, "delivery attempt", trace.WithAttributes(
			attrDomain.String(a.Domain), attrDelivery.Int(a.Attempt), attrCorrelationID.String(a.CorrelationID)))
	}
	return ctx, func(outcome string) {
		if o.m != nil {
			o.m.deliveryOutcomes.WithLabelValues(a.Domain, outcome).Inc()
		}
		if span != nil {
			span.SetAttributes(attrOutcome.String(outcome))
			if outcome == delivery.OutcomeFailed {
				span.SetStatus(codes.Error, outcome)
			}
			span.End()
		}
	}
}
