package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
)

// TestArtifactReserve: serve on PostgreSQL makes BRIDGE_ARTIFACT_RESERVE
// of room for artifacts at its start, a 2 MiB report's chunks go into it
// (the table does not grow), and the room is made again once less than
// half is left; with 0 nothing is made.
func TestArtifactReserve(t *testing.T) {
	t.Parallel()
	for _, reserve := range []string{"8MiB", "0"} {
		t.Run(reserve, func(t *testing.T) {
			t.Parallel()
			dsn := pgtest.DSN(t)
			m, _, errOut := start(t, map[string]string{"BRIDGE_STORE": dsn, "BRIDGE_ARTIFACT_RESERVE": reserve, "QUBS_SIM_APPOINTMENTS": "20"},
				"demo", "--listen", "127.0.0.1:0", "--sim-listen", "127.0.0.1:0")
			u, err := url.Parse(dsn)
			require.NoError(t, err)
			q := u.Query()
			q.Del("pool_max_conns")
			u.RawQuery = q.Encode()
			conn, err := pgx.Connect(context.Background(), u.String())
			require.NoError(t, err)
			defer conn.Close(context.Background())
			pages := func() int64 {
				var n int64
				require.NoError(t, conn.QueryRow(context.Background(),
					`SELECT pg_relation_size('report_artifact_chunks') / 8192`).Scan(&n))
				return n
			}
			const room = 8 << 20 / 8000
			used := func() int64 {
				var n int64
				require.NoError(t, conn.QueryRow(context.Background(), `SELECT COALESCE(SUM(chunks), 0) FROM report_artifacts`).Scan(&n))
				return n
			}
			// VACUUMs of the table so far: each top-up ends with one
			// (PostgreSQL counts a VACUUM when it ends).
			vacuums := func() int64 {
				var n int64
				require.NoError(t, conn.QueryRow(context.Background(),
					`SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'report_artifact_chunks'::regclass`).Scan(&n))
				return n
			}
			if reserve == "0" {
				postReport2MB(t, m.BridgeURL+"/fhir/acme", 0)
				assert.InDelta(t, 263, pages(), 1, "no room made: the table grew by the report")
				assert.Zero(t, vacuums())
				return
			}
			waitUntil(t, "the room made at the start", func() bool { return vacuums() >= 1 }, errOut.String)
			made := pages()
			assert.GreaterOrEqual(t, made, int64(room))
			postReport2MB(t, m.BridgeURL+"/fhir/acme", 0)
			assert.Equal(t, made, pages(), "the chunks went into the room made")
			postReport2MB(t, m.BridgeURL+"/fhir/acme", 1)
			postReport2MB(t, m.BridgeURL+"/fhir/acme", 2)
			// Less than half left after the second or the third: topped
			// up, so that at least half is free again.
			waitUntil(t, "the room made again", func() bool { return vacuums() >= 2 && pages()-used() >= room/2 }, func() string {
				return fmt.Sprintf("pages %d, made %d, chunks %d, vacuums %d", pages(), made, used(), vacuums())
			})
		})
	}
}

// postReport2MB posts a final report with a 2 MiB PDF for the i-th study
// of base's worklist.
func postReport2MB(t *testing.T, base string, i int) {
	t.Helper()
	status, body := fetch(t, base+"/ServiceRequest?_count=5&_sort=_id")
	require.Equal(t, http.StatusOK, status, "%s", body)
	var b struct {
		Entry []struct{ Resource struct{ ID string } }
	}
	require.NoError(t, json.Unmarshal(body, &b))
	require.Greater(t, len(b.Entry), i)
	pdf := append([]byte("%PDF-1.4\n"), make([]byte, 2<<20-9)...)
	_, _ = rand.NewChaCha8([32]byte{byte(i)}).Read(pdf[9:]) // never fails
	st := &study{srID: b.Entry[i].Resource.ID, appt: "reserve"}
	res, err := http.Post(base+"/DiagnosticReport", "application/fhir+json", bytes.NewReader(chaosReport(st, "final", "", pdf, "report.pdf")))
	require.NoError(t, err)
	out, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusCreated, res.StatusCode, "%s", out)
}

// waitUntil waits for cond, at most 30 s; logs (optional) tells why not.
func waitUntil(t *testing.T, what string, cond func() bool, logs ...func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			for _, l := range logs {
				t.Log(l())
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countingReserver counts calls, failing the first two.
type countingReserver struct{ calls atomic.Int32 }

func (c *countingReserver) ReserveArtifactSpace(context.Context, int64) (int64, error) {
	if c.calls.Add(1) <= 2 {
		return 0, errors.New("the database is away")
	}
	return 1, nil
}

// TestKeepArtifactReserve: the loop makes room at once, again only when
// nudged, nudges in its pause coalesce, a failure does not stop it and is
// logged once however often it repeats, and it stops with its context.
func TestKeepArtifactReserve(t *testing.T) {
	t.Parallel()
	r := &countingReserver{}
	logs := &syncBuffer{}
	const pause = 500 * time.Millisecond
	nudge := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		keepArtifactReserve(ctx, r, 1<<20, nudge, pause, slog.New(slog.NewTextHandler(logs, nil)))
	}()
	waitUntil(t, "the first call", func() bool { return r.calls.Load() == 1 })
	time.Sleep(2 * pause)
	assert.Equal(t, int32(1), r.calls.Load(), "not again without a nudge")
	nudge <- struct{}{}
	waitUntil(t, "the nudged call", func() bool { return r.calls.Load() == 2 })
	for range 3 {
		select {
		case nudge <- struct{}{}:
		default:
		}
	}
	waitUntil(t, "the coalesced call", func() bool { return r.calls.Load() == 3 })
	time.Sleep(2 * pause)
	assert.Equal(t, int32(3), r.calls.Load(), "three nudges in the pause are one call")
	cancel()
	<-done
	assert.Equal(t, 1, strings.Count(logs.String(), "making room for artifacts failed"), "a failure again is not logged again:\n%s", logs)
	assert.Equal(t, 1, strings.Count(logs.String(), "works again"), "%s", logs)
}

// timedReserver records when each call starts and ends; it makes room
// (taking took) in the calls adds says.
type timedReserver struct {
	took  time.Duration
	adds  func(call int) bool
	n     int
	calls chan [2]time.Time
}

func (r *timedReserver) ReserveArtifactSpace(context.Context, int64) (int64, error) {
	start := time.Now()
	r.n++
	var added int64
	if r.adds(r.n) {
		time.Sleep(r.took)
		added = 1
	}
	r.calls <- [2]time.Time{start, time.Now()}
	return added, nil
}

// runReserveLoop runs keepArtifactReserve on r until the test ends, and
// returns the context that ends with it.
func runReserveLoop(t *testing.T, r store.ArtifactReserver, nudge <-chan struct{}, pause time.Duration) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		keepArtifactReserve(ctx, r, 1<<20, nudge, pause, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ctx
}

// TestKeepArtifactReserveBusy: while reports use up the room (room was
// made within the last pause), a nudge is answered after a tenth of the
// pause, not a whole one, unless the last top-up took long: then after
// three times its length, so that making room takes at most a quarter of
// the time; once calls make none, the whole pause is kept, and it comes
// back once a pause has gone by since room was last made. Only bounds
// with margins of a second or more are asserted.
func TestKeepArtifactReserveBusy(t *testing.T) {
	t.Parallel()
	const pause = 4 * time.Second
	always := func(int) bool { return true }
	for _, tc := range []struct {
		name     string
		adds     func(call int) bool
		took     time.Duration
		min, max time.Duration // from the first call's end to the next's start
	}{
		{"quick top-up", always, 0, pause / 10, pause - time.Second},
		{"slow top-up", always, 1500 * time.Millisecond, 3 * 1500 * time.Millisecond, time.Hour},
		{"no room made", func(int) bool { return false }, 0, pause, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := &timedReserver{adds: tc.adds, took: tc.took, calls: make(chan [2]time.Time, 4)}
			nudge := make(chan struct{}, 1)
			_ = runReserveLoop(t, r, nudge, pause)
			first := <-r.calls
			nudge <- struct{}{}
			second := <-r.calls
			gap := second[0].Sub(first[1])
			assert.GreaterOrEqual(t, gap, tc.min)
			assert.Less(t, gap, tc.max)
		})
	}
	// Room made by the first call only, nudges all the time: short waits
	// until a pause has gone by since, then the whole pause again.
	t.Run("busy ends", func(t *testing.T) {
		t.Parallel()
		const pause = 2 * time.Second
		r := &timedReserver{adds: func(call int) bool { return call == 1 }, calls: make(chan [2]time.Time, 64)}
		nudge := make(chan struct{}, 1)
		ctx := runReserveLoop(t, r, nudge, pause)
		go func() { // a report with artifacts after every call
			for ctx.Err() == nil {
				select {
				case nudge <- struct{}{}:
				case <-ctx.Done():
				}
			}
		}()
		first := <-r.calls
		second := <-r.calls
		assert.Less(t, second[0].Sub(first[1]), pause-time.Second, "room just made: a short wait")
		var last [2]time.Time
		for c := second; ; c = last {
			last = <-r.calls
			if gap := last[0].Sub(c[1]); gap >= pause {
				assert.GreaterOrEqual(t, c[1].Sub(first[1]), pause-pause/10, "short waits for about a pause after room was made")
				return
			}
			require.Less(t, last[0].Sub(first[1]), 5*pause, "the whole pause never came back")
		}
	})
}

func TestParseMiB(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"0": 0, "64MiB": 64 << 20, "4096MiB": 4096 << 20, "0MiB": 0} {
		got, err := parseMiB(in, 4096)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "64", "64MB", "-1MiB", "4097MiB", "1.5MiB", "MiB"} {
		_, err := parseMiB(in, 4096)
		assert.Error(t, err, in)
		if err != nil {
			assert.True(t, strings.Contains(err.Error(), "64MiB"), in)
		}
	}
}
