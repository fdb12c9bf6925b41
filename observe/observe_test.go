package observe_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/observe"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite"
)

func TestTracingEnabled(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		env     map[string]string
		on      bool
		wantErr string
	}{
		{"nothing set", nil, false, ""},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true, ""},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true, ""},
		{"exporter otlp", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true, ""},
		{"exporter none wins", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, false, ""},
		{"sdk disabled", map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, false, ""},
		{"http/protobuf", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, true, ""},
		{"grpc refused", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, false, "http/protobuf"},
		{"zipkin refused", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, false, "otlp only"},
	} {
		t.Run(c.name, func(t *testing.T) {
			on, err := observe.TracingEnabled(func(k string) string { return c.env[k] })
			if c.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), c.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.on, on)
		})
	}
}

// TestQUBSMetrics drives the real client against the simulator: a 429 with
// Retry-After then a retry, a dropped connection, a refused token.
func TestQUBSMetrics(t *testing.T) {
	t.Parallel()
	sim, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Seed: 1, Appointments: 5})
	require.NoError(t, err)
	t.Cleanup(func() { sim.Close() })
	m := observe.NewMetrics("test")
	newClient := func(secret string) *qubs.Client {
		c, err := qubs.New(qubs.Config{
			BaseURL: sim.URL, TokenURL: sim.TokenURL(), ClientID: qubssim.DefaultClientID, ClientSecret: secret,
			AuthStyle: oauth2.AuthStyleInParams, Observer: observe.QUBS(m, nil),
			Retry: qubs.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond},
		})
		require.NoError(t, err)
		return c
	}
	client := newClient(qubssim.DefaultClientSecret)
	ctx := context.Background()

	sim.AddFault(qubssim.Fault{Method: http.MethodGet, Route: "/pending", Count: 1, Status: http.StatusTooManyRequests, RetryAfter: "1"})
	_, err = client.ListPending(ctx, "acme", 10, "")
	require.NoError(t, err)
	// Two drops: net/http itself resends a GET once when a reused connection
	// dies, so only the second is seen.
	sim.AddFault(qubssim.Fault{Method: http.MethodGet, Route: "/pending", Count: 2, Drop: true})
	_, err = client.ListPending(ctx, "acme", 10, "")
	require.NoError(t, err)
	require.Error(t, newClient("wrong secret").Token(ctx))

	reg := m.Registry()
	for _, c := range []struct {
		metric string
		want   float64
	}{
		{`bridge_qubs_requests_total{operation="list_appointments",code="4xx",retry="false"}`, 1},
		{`bridge_qubs_requests_total{operation="list_appointments",code="2xx",retry="true"}`, 2},
		{`bridge_qubs_requests_total{operation="list_appointments",code="error",retry="false"}`, 1},
		{`bridge_qubs_requests_total{operation="token",code="2xx",retry="false"}`, 1},
		{`bridge_qubs_requests_total{operation="token",code="4xx",retry="false"}`, 1},
		{`bridge_qubs_retry_after_seconds_total{operation="list_appointments"}`, 1},
		{`bridge_qubs_token_fetches_total{result="ok"}`, 1},
		{`bridge_qubs_token_fetches_total{result="error"}`, 1},
	} {
		assert.Equal(t, c.want, gather(t, reg, c.metric), c.metric)
	}
	assert.Equal(t, 4.0, gather(t, reg, `bridge_qubs_request_duration_seconds{operation="list_appointments"}`), "one observation per attempt")
	assert.Equal(t, len(qubs.Operations)+1, testutil.CollectAndCount(reg, "bridge_qubs_request_duration_seconds"), "every operation resolved up front, and other")
}

// TestStoreMetrics: answers (not found) are not errors; a closed database
// is.
func TestStoreMetrics(t *testing.T) {
	t.Parallel()
	raw, err := sqlite.Open(context.Background(), t.TempDir()+"/b.db")
	require.NoError(t, err)
	m := observe.NewMetrics("test")
	st := observe.Store(raw, m, nil)
	ctx := context.Background()
	_, err = st.Report(ctx, "acme", "nope")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NoError(t, st.Ping(ctx))
	require.NoError(t, raw.Close())
	require.Error(t, st.Ping(ctx))
	reg := m.Registry()
	assert.Equal(t, 0.0, gather(t, reg, `bridge_store_operation_errors_total{operation="report"}`))
	assert.Equal(t, 1.0, gather(t, reg, `bridge_store_operation_errors_total{operation="ping"}`))
	assert.Equal(t, 2.0, gather(t, reg, `bridge_store_operation_duration_seconds{operation="ping"}`))
}

// gather returns the value of one series, written as in PromQL:
// name{label="value",...}; a histogram's value is its count. -1 when the
// series does not exist.
func gather(t *testing.T, reg *prometheus.Registry, series string) float64 {
	t.Helper()
	name, rest, _ := strings.Cut(series, "{")
	want := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(rest, "}"), ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			want[k] = strings.Trim(v, `"`)
		}
	}
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.Metric {
			if len(m.Label) != len(want) {
				continue
			}
			for _, l := range m.Label {
				if want[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return -1
}
