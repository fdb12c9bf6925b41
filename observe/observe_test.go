package observe_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/observe"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/observe/observetest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite/sqlitetest"
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
	fams := observetest.Gather(t, reg)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"bridge_qubs_requests_total", map[string]string{"operation": "list_appointments", "code": "4xx", "retry": "false"}, 1},
		{"bridge_qubs_requests_total", map[string]string{"operation": "list_appointments", "code": "2xx", "retry": "true"}, 2},
		{"bridge_qubs_requests_total", map[string]string{"operation": "list_appointments", "code": "error", "retry": "false"}, 1},
		{"bridge_qubs_requests_total", map[string]string{"operation": "token", "code": "2xx", "retry": "false"}, 1},
		{"bridge_qubs_requests_total", map[string]string{"operation": "token", "code": "4xx", "retry": "false"}, 1},
		{"bridge_qubs_retry_after_seconds_total", map[string]string{"operation": "list_appointments"}, 1},
		{"bridge_qubs_token_fetches_total", map[string]string{"result": "ok"}, 1},
		{"bridge_qubs_token_fetches_total", map[string]string{"result": "error"}, 1},
	} {
		assert.Equal(t, c.want, fams.Value(c.name, c.labels), "%s%v", c.name, c.labels)
	}
	assert.Equal(t, 4.0, fams.Value("bridge_qubs_request_duration_seconds", map[string]string{"operation": "list_appointments"}), "one observation per attempt")
	assert.Equal(t, len(qubs.Operations)+1, testutil.CollectAndCount(reg, "bridge_qubs_request_duration_seconds"), "every operation resolved up front, and other")
}

// TestStoreMetrics: answers (not found) are not errors; a closed database
// is.
func TestStoreMetrics(t *testing.T) {
	t.Parallel()
	raw, err := sqlite.Open(context.Background(), sqlitetest.Path(t))
	require.NoError(t, err)
	m := observe.NewMetrics("test")
	st := observe.Store(raw, m, nil)
	ctx := context.Background()
	_, err = st.Report(ctx, "acme", "nope")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NoError(t, st.Ping(ctx))
	require.NoError(t, raw.Close())
	require.Error(t, st.Ping(ctx))
	fams := observetest.Gather(t, m.Registry())
	assert.Equal(t, 0.0, fams.Value("bridge_store_operation_errors_total", map[string]string{"operation": "report"}))
	assert.Equal(t, 1.0, fams.Value("bridge_store_operation_errors_total", map[string]string{"operation": "ping"}))
	assert.Equal(t, 2.0, fams.Value("bridge_store_operation_duration_seconds", map[string]string{"operation": "ping"}))
}
