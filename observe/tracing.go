package observe

import (
	"context"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// instrumentation names the bridge's tracer.
const instrumentation = "github.com/qubs-fhir-bridge/qubs-fhir-bridge"

// Span attribute keys of the bridge's own (the http.* ones are OTel
// semantic conventions).
const (
	attrCorrelationID = attribute.Key("bridge.correlation_id")
	attrDomain        = attribute.Key("bridge.domain")
	attrOperation     = attribute.Key("qubs.operation")
	attrAttempt       = attribute.Key("qubs.attempt")
	attrStoreOp       = attribute.Key("bridge.store.operation")
	attrDelivery      = attribute.Key("bridge.delivery.attempt")
	attrOutcome       = attribute.Key("bridge.delivery.outcome")
	attrMethod        = attribute.Key("http.request.method")
	attrRoute         = attribute.Key("http.route")
	attrStatus        = attribute.Key("http.response.status_code")
)

// Propagator is what the bridge reads from FHIR clients and sends to QUBS:
// W3C Trace Context only. Baggage is left out on purpose: it is free text
// a client chooses, and would be forwarded to QUBS as is.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Tracer returns the bridge's tracer of tp, nil when tp is nil (tracing
// off).
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(instrumentation)
}

// TracingEnabled reads the standard OTEL_* variables: tracing is on when
// OTEL_TRACES_EXPORTER is otlp, or when it is unset and an OTLP endpoint
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is
// set; OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none turn it off.
// Only OTLP over HTTP (protobuf) is exported; any other exporter or
// protocol is an error, so that a setting the bridge would ignore is not
// taken for one that works.
func TracingEnabled(getenv func(string) string) (bool, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	on := false
	switch exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exp {
	case "none":
		return false, nil
	case "otlp":
		on = true
	case "":
		on = getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	default:
		return false, fmt.Errorf("OTEL_TRACES_EXPORTER %q: the bridge exports traces with otlp only (or none)", exp)
	}
	if !on {
		return false, nil
	}
	proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if proto != "" && proto != "http/protobuf" {
		return false, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: the bridge exports OTLP over http/protobuf only (port 4318 of a collector)", proto)
	}
	return true, nil
}

// NewTracerProvider builds the SDK's provider with exp behind a batch
// processor (OTEL_BSP_* apply), the sampler of OTEL_TRACES_SAMPLER
// (default: parent-based, always on), and a resource named
// qubs-fhir-bridge unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES
// say otherwise. Shut it down to flush the last spans.
func NewTracerProvider(ctx context.Context, exp sdktrace.SpanExporter, version string) (*sdktrace.TracerProvider, error) {
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "qubs-fhir-bridge"), attribute.String("service.version", version)),
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
	)
	if err != nil {
		return nil, fmt.Errorf("tracing resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME): %w", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

// NewOTLPTracerProvider is NewTracerProvider with the OTLP/HTTP exporter,
// which reads its endpoint, headers, timeout, compression and TLS files
// from the OTEL_EXPORTER_OTLP_* variables. It does not connect: spans that
// cannot be sent are dropped and reported by the SDK, never block a
// request.
func NewOTLPTracerProvider(ctx context.Context, version string) (*sdktrace.TracerProvider, error) {
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter (OTEL_EXPORTER_OTLP_*): %w", err)
	}
	return NewTracerProvider(ctx, exp, version)
}
