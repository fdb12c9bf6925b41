package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jackc/pgx/v5"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/perf"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
)

// benchChildEnv makes the test binary play the program, so that the bench
// can re-execute "itself" as simulator, bridge and proxy in tests.
const benchChildEnv = "QUBS_FHIR_BRIDGE_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(benchChildEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := NewMain().Run(ctx, os.Args[1:])
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "qubs-fhir-bridge:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testLauncher() (perf.Launcher, error) {
	return func(args, env []string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(append(perf.CleanEnviron(), env...), benchChildEnv+"=1")
		return cmd
	}, nil
}

// tinyBench is a run small enough for CI: it proves the harness works
// end to end, not how fast anything is.
func tinyBench() perf.Config {
	return perf.Config{
		Rounds: 2, Duration: 300 * time.Millisecond, ReadDuration: 200 * time.Millisecond, Warmup: 100 * time.Millisecond,
		Clients: 2, Count: 20, Domain: "acme", Seed: 1, Appointments: 120,
		ReportPosts: 1, ReportWarmup: 2, ConcurrentPosts: 2, PDFBytes: 64 << 10, BridgeLogLevel: "warn", AuditWait: "auto", AuditJournal: "auto",
	}
}

// TestBenchProducesSaneFigures runs the whole harness at tiny sizes: every
// figure is there and consistent with what the simulator saw. It asserts
// nothing about speed.
func TestBenchProducesSaneFigures(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts five processes")
	}
	launch, err := testLauncher()
	require.NoError(t, err)
	cfg := tinyBench()
	cfg.Launch, cfg.Progress = launch, testWriter{t}
	cfg.ProfileDir = filepath.Join(t.TempDir(), "profiles") // made by the run
	res, err := perf.Run(context.Background(), cfg)
	require.NoError(t, err)

	// The bridge's profiles: one CPU profile per bridge round, heap and
	// allocations after each report phase, each a gzipped pprof protobuf.
	var want []string
	for _, what := range []string{"worklist", "read"} {
		for i := range cfg.Rounds {
			want = append(want, fmt.Sprintf("%s-bridge-round%d.cpu.pb.gz", what, i+1))
		}
	}
	for _, phase := range []string{"reports-sequential", "reports-at-once", "reports-heap"} {
		want = append(want, phase+".heap.pb.gz", phase+".allocs.pb.gz")
	}
	assert.ElementsMatch(t, want, res.Profiles)
	for _, f := range want {
		b, err := os.ReadFile(filepath.Join(cfg.ProfileDir, f))
		require.NoError(t, err)
		assert.True(t, bytes.HasPrefix(b, []byte{0x1f, 0x8b}), "%s is gzipped", f)
	}

	w := res.Walk
	assert.Equal(t, w.ProxyPages, w.ProxyQUBSCalls, "the proxy makes exactly one QUBS call per page: the counting is right")
	// The bridge serves the walk from its worklist index (no QUBS call;
	// docs/worklist-index.md), or with BRIDGE_WORKLIST_INDEX=off reads
	// QUBS pages of 2 × _count, each once; either way it fills its pages
	// exactly.
	assert.LessOrEqual(t, w.BridgeQUBSCalls, w.ProxyQUBSCalls, "no QUBS page read twice")
	assert.Zero(t, w.BridgeShortPages, "_count honoured exactly")
	assert.Equal(t, w.ProxyItems, w.BridgeEntries, "both walks see every pending study once")
	assert.Greater(t, w.BridgePages, 1, "the walk follows next links")

	for name, cmp := range map[string]perf.Comparison{"worklist": res.Worklist, "read": res.Read} {
		for side, rounds := range map[string][]perf.Round{"bridge": cmp.Bridge, "proxy": cmp.Proxy} {
			require.Len(t, rounds, cfg.Rounds, "%s %s", name, side)
			for _, r := range rounds {
				assert.Positive(t, r.Requests, "%s %s", name, side)
				assert.Zero(t, r.Errors, "%s %s", name, side)
				assert.Positive(t, r.RPS, "%s %s", name, side)
				assert.LessOrEqual(t, r.P50, r.P99, "%s %s", name, side)
				assert.GreaterOrEqual(t, r.CPU, time.Duration(0), "%s %s", name, side)
			}
		}
	}

	rp := res.Reports
	assert.Equal(t, cfg.PDFBytes, rp.PayloadBytes)
	assert.Greater(t, rp.RequestBytes, rp.PayloadBytes*4/3, "the PDF travels as base64")
	assert.Len(t, rp.Floor, cfg.ReportPosts)
	require.Len(t, rp.Flush, cfg.ReportPosts, "the payload flushed as often as the floor ran")
	for _, d := range rp.Flush {
		assert.Positive(t, d)
	}
	assert.Len(t, rp.Minimal, cfg.ReportPosts)
	assert.Len(t, rp.Full, cfg.ReportPosts)
	assert.Len(t, rp.BackToBack, cfg.ReportPosts)
	assert.Len(t, rp.Concurrent, cfg.ConcurrentPosts)
	require.Len(t, rp.First, 3, "each phase's fresh bridge gets one report first, not counted")
	for _, d := range rp.First {
		assert.Positive(t, d)
	}
	require.Len(t, rp.Warmup, cfg.ReportWarmup, "then the sequential phase's warm-up, not counted either")
	for _, d := range rp.Warmup {
		assert.Positive(t, d)
	}
	assert.Len(t, rp.HeapSequential, cfg.ReportPosts)
	assert.Len(t, rp.HeapConcurrent, 3)
	assert.True(t, rp.Delivered, "QUBS received every report posted, the first ones included")
	assert.Positive(t, rp.EchoFull, "without Prefer the report comes back")
	assert.GreaterOrEqual(t, rp.PeakSequential, int64(0))

	var b strings.Builder
	res.WriteMarkdown(&b)
	assert.Contains(t, b.String(), "| worklist page of 20, 2 clients | throughput |")
	assert.Contains(t, b.String(), "### Issue 10's goals")
	assert.Contains(t, b.String(), "Not counted: the first POST of each phase's fresh bridge")
}

// TestBenchOnPostgres runs the harness with --store: the bridges run on
// schemas of their own in PostgreSQL, which are gone afterwards.
func TestBenchOnPostgres(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts five processes")
	}
	base := pgtest.BaseURL(t)
	launch, err := testLauncher()
	require.NoError(t, err)
	cfg := tinyBench()
	cfg.Launch, cfg.Progress, cfg.Store = launch, testWriter{t}, base
	cfg.AuditJournal = "on" // a directory of the bridge's own, as the Helm chart sets
	res, err := perf.Run(context.Background(), cfg)
	require.NoError(t, err)
	assert.True(t, res.Reports.Delivered, "QUBS received every report posted")
	assert.Len(t, res.Reports.Minimal, cfg.ReportPosts)
	var b strings.Builder
	res.WriteMarkdown(&b)
	assert.Contains(t, b.String(), "bridge on PostgreSQL")

	conn, err := pgx.Connect(context.Background(), base)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var left int
	require.NoError(t, conn.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)`, res.Schemas).Scan(&left))
	assert.NotEmpty(t, res.Schemas, "each bridge had a schema")
	assert.Zero(t, left, "the bridges' schemas are dropped")
}

func TestBenchCommandLine(t *testing.T) {
	t.Parallel()
	t.Run("help lists every flag with its environment twin", func(t *testing.T) {
		_, _, errOut := run(t, nil, "bench", "--help")
		for _, want := range []string{"--rounds", "BRIDGE_BENCH_ROUNDS", "--clients", "BRIDGE_BENCH_CLIENTS", "--duration", "--bridge-log-level"} {
			assert.Contains(t, errOut, want)
		}
	})
	t.Run("bad values are refused before anything starts", func(t *testing.T) {
		err, _, _ := run(t, nil, "bench", "--rounds", "x")
		assert.ErrorIs(t, err, errUsage)
		err, _, _ = run(t, map[string]string{"BRIDGE_BENCH_DURATION": "soon"}, "bench")
		assert.ErrorContains(t, err, "BRIDGE_BENCH_DURATION")
		err, _, _ = run(t, nil, "bench", "--count", "501")
		assert.ErrorContains(t, err, "count")
		err, _, _ = run(t, nil, "bench", "extra")
		assert.ErrorIs(t, err, errUsage)
		err, _, _ = run(t, nil, "bench", "--store", "mysql://db")
		assert.ErrorContains(t, err, "store")
	})
	t.Run("the proxy refuses to listen beyond loopback", func(t *testing.T) {
		err, _, _ := run(t, nil, "bench", "proxy", "--listen", "0.0.0.0:0")
		assert.ErrorContains(t, err, "loopback")
		err, _, _ = run(t, nil, "bench", "proxy")
		assert.ErrorContains(t, err, "QUBS_API_URL")
	})
	t.Run("help mentions the command", func(t *testing.T) {
		_, out, _ := run(t, nil, "help")
		assert.Contains(t, out, "bench ", "help asked for goes to stdout")
	})
}

// testWriter shows the bench's progress in the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(time.Now().Format("05.000"), strings.TrimSpace(string(p)))
	return len(p), nil
}

// run runs the program to completion and returns its error and output.
func run(t *testing.T, env map[string]string, args ...string) (error, string, string) {
	t.Helper()
	out, errOut := &syncBuffer{}, &syncBuffer{}
	m := &Main{Stdout: out, Stderr: errOut, Getenv: envFrom(env), Ready: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := m.Run(ctx, args)
	return err, out.String(), errOut.String()
}
