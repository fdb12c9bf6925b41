// Package observe is the bridge's operational telemetry: Prometheus
// metrics on a private registry (served on their own listener,
// BRIDGE_METRICS_LISTEN) and OpenTelemetry traces (exported over OTLP when
// the standard OTEL_* variables ask for it). docs/metrics.md lists every
// metric.
//
// The packages that do the work (qubs, delivery, store, server) know
// neither library: they expose small observer hooks, and this package
// implements them. Everything here is nil-safe, so that with metrics or
// tracing off the hooks cost a nil check.
//
// Nothing observed carries PHI or an identifier: labels and span
// attributes are fixed words (route templates, operation names, status
// classes, outcomes), QUBS domains and correlation ids. Never a URL (a
// presigned one is a credential, the others hold appointment ids), a
// query, a body or a token.
package observe
