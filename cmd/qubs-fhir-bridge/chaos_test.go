package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite/sqlitetest"
)

// The chaos test of issue 9: studies (a preliminary with a PDF, a final
// with another PDF, a comment) sent through real bridge processes while
// 20 % of QUBS writes fail (503, 429, dropped before handling, and applied
// with the answer lost), one bridge killed with SIGKILL and restarted, for
// each of the three things a second PUT to a used upload URL may answer.
// Short (the default; skipped with -short): 100 studies, one kill, SQLite
// and PostgreSQL. Long (BRIDGE_LONG_TESTS=1): 1,000 studies, two kills, two
// replicas on PostgreSQL.

// chaosPHI is in every report text and must never reach a log line.
const chaosPHI = "CHAOS-PHI-Jane-Citizen"

type chaosConfig struct {
	studies  int
	kills    int
	replicas int
	dsn      func(t *testing.T) string
	drain    time.Duration // bound on the time to drain once clients are done
}

func TestChaosDelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("runs bridge processes and kills them")
	}
	// Each run waits for the killed process's delivery leases to expire
	// (chaosLease), not computing: run them together.
	t.Parallel()
	sqlite := func(t *testing.T) string { return "sqlite:" + sqlitetest.Path(t) }
	pg := func(t *testing.T) string { return pgtest.DSN(t) }
	configs := map[string]chaosConfig{
		"sqlite":   {studies: 100, kills: 1, replicas: 1, dsn: sqlite, drain: 2 * time.Minute},
		"postgres": {studies: 100, kills: 1, replicas: 1, dsn: pg, drain: 2 * time.Minute},
	}
	if os.Getenv("BRIDGE_LONG_TESTS") != "" {
		configs = map[string]chaosConfig{
			"sqlite, long":                 {studies: 1000, kills: 2, replicas: 1, dsn: sqlite, drain: 5 * time.Minute},
			"postgres, two replicas, long": {studies: 1000, kills: 2, replicas: 2, dsn: pg, drain: 5 * time.Minute},
		}
	}
	for _, used := range qubssim.UsedUploadURLs {
		for name, cfg := range configs {
			t.Run(used.String()+"/"+name, func(t *testing.T) {
				t.Parallel()
				runChaos(t, name, used, cfg)
			})
		}
	}
}

// chaosLease is the bridges' BRIDGE_DELIVERY_LEASE, its least: how long
// the drain after a kill waits for the killed process's deliveries (20 s
// with the default).
const chaosLease = "10s"

// bridgeProc is one bridge process.
type bridgeProc struct {
	cmd  *exec.Cmd
	base string
	done chan struct{}
}

func startBridge(t *testing.T, sim *qubssim.Server, dsn, logPath string) *bridgeProc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	cmd, base := startServe(t, sim, dsn, logf, "BRIDGE_LOG_LEVEL=info", "BRIDGE_DELIVERY_LEASE="+chaosLease)
	p := &bridgeProc{cmd: cmd, base: base, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	return p
}

// kill is SIGKILL: no shutdown, no flush, leases held.
func (p *bridgeProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

type study struct {
	appt, srID       string
	prelimPDF, final []byte
	reportID         string
}

func chaosReport(st *study, status, id string, pdf []byte, name string) []byte {
	text := fmt.Sprintf("%s report of study %s for %s", status, st.appt, chaosPHI)
	m := map[string]any{
		"resourceType": "DiagnosticReport",
		"status":       status,
		"category":     []any{map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "LP29684-5", "display": "Radiology"}}}},
		"code":         map[string]any{"text": "CT chest report"},
		"issued":       "2025-01-10T14:04:05+11:00",
		"basedOn":      []any{map[string]any{"reference": "ServiceRequest/" + st.srID}},
		"presentedForm": []any{
			map[string]any{"contentType": "text/plain", "data": base64.StdEncoding.EncodeToString([]byte(text))},
			map[string]any{"contentType": "application/pdf", "title": name, "data": base64.StdEncoding.EncodeToString(pdf)},
		},
	}
	if id != "" {
		m["id"] = id
	}
	b, _ := json.Marshal(m)
	return b
}

// clientCall sends a request to whichever bridge is up, retrying (same
// body, same Idempotency-Key) through faults and the kill, until one of
// want answers.
func clientCall(ctx context.Context, bases func(i int) string, method, path string, body []byte, key string, want ...int) ([]byte, error) {
	client := &http.Client{Timeout: 30 * time.Second}
	for i := 0; ; i++ {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: gave up", method, path)
		}
		req, _ := http.NewRequestWithContext(ctx, method, bases(i)+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/fhir+json")
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		res, err := client.Do(req)
		if err == nil {
			b, rerr := io.ReadAll(res.Body)
			res.Body.Close()
			for _, w := range want {
				if res.StatusCode == w && rerr == nil {
					return b, nil
				}
			}
			if res.StatusCode/100 == 4 && res.StatusCode != http.StatusTooManyRequests && res.StatusCode != http.StatusConflict {
				return nil, fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, b)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func runChaos(t *testing.T, name string, used qubssim.UsedUploadURL, cfg chaosConfig) {
	sim, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Seed: 9, Appointments: cfg.studies*2 + 200, UsedUploadURL: used})
	require.NoError(t, err)
	t.Cleanup(func() { sim.Close() })
	ids := sim.PendingIDs("acme")
	var studies []*study
	for _, appt := range ids {
		sr, err := mapping.ServiceRequestID(appt)
		if err != nil {
			continue
		}
		studies = append(studies, &study{appt: appt, srID: sr,
			prelimPDF: []byte("%PDF-1.4 preliminary of " + appt),
			final:     []byte("%PDF-1.4 final of " + appt + strings.Repeat(" body", 100)),
		})
		if len(studies) == cfg.studies {
			break
		}
	}
	require.Len(t, studies, cfg.studies, "pending appointments")

	// 20 % of every write route: four kinds at 5.6 % each, tried in turn
	// (1 - 0.944^4 = 20.6 %). "/report" matches the report submission and
	// the upload-URL route (…/report/attachments) alike.
	for _, route := range []struct{ method, route string }{
		{"POST", "/report"}, {"POST", "/comments"}, {"PUT", "/presigned/upload/"},
	} {
		for _, f := range []qubssim.Fault{
			{Status: http.StatusServiceUnavailable},
			{Status: http.StatusTooManyRequests, RetryAfter: "1"},
			{Drop: true},
			{Drop: true, AfterHandling: true},
		} {
			f.Method, f.Route, f.Rate = route.method, route.route, 0.056
			sim.AddFault(f)
		}
	}

	dsn := cfg.dsn(t)
	logPath := filepath.Join(t.TempDir(), "bridge.log")
	procs := make([]*bridgeProc, cfg.replicas)
	for i := range procs {
		procs[i] = startBridge(t, sim, dsn, logPath)
	}
	var (
		mu    sync.RWMutex
		basev = make([]string, cfg.replicas)
	)
	for i, p := range procs {
		basev[i] = p.base + "/fhir/acme"
	}
	bases := func(i int) string {
		mu.RLock()
		defer mu.RUnlock()
		return basev[i%len(basev)]
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var (
		next, finished atomic.Int64
		wg             sync.WaitGroup
		errs           = make(chan error, 16)
	)
	start := time.Now()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(studies) {
					return
				}
				st := studies[i]
				pick := func(n int) string { return bases(i + n) }
				b, err := clientCall(ctx, pick, "POST", "/DiagnosticReport", chaosReport(st, "preliminary", "", st.prelimPDF, "prelim-"+st.appt+".pdf"),
					"chaos-report-"+st.appt, http.StatusCreated, http.StatusOK)
				if err != nil {
					errs <- err
					return
				}
				var created struct {
					ID string `json:"id"`
				}
				if err := json.Unmarshal(b, &created); err != nil || created.ID == "" {
					errs <- fmt.Errorf("create answered %s", b)
					return
				}
				st.reportID = created.ID
				if _, err := clientCall(ctx, pick, "PUT", "/DiagnosticReport/"+created.ID, chaosReport(st, "final", created.ID, st.final, "final-"+st.appt+".pdf"),
					"", http.StatusOK, http.StatusCreated); err != nil {
					errs <- err
					return
				}
				comment, _ := json.Marshal(map[string]any{
					"resourceType": "Communication", "status": "completed",
					"basedOn": []any{map[string]any{"reference": "ServiceRequest/" + st.srID}},
					"payload": []any{map[string]any{"contentString": "Reported. " + chaosPHI}},
				})
				if _, err := clientCall(ctx, pick, "POST", "/Communication", comment, "chaos-comment-"+st.appt, http.StatusCreated, http.StatusOK); err != nil {
					errs <- err
					return
				}
				finished.Add(1)
			}
		}()
	}

	// The kills: at evenly spaced points of the run, a replica (in turn)
	// is killed with SIGKILL and a new process started on the same store.
	for k := range cfg.kills {
		at := int64(cfg.studies * (k + 1) / (cfg.kills + 1))
		for finished.Load() < at && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		victim := k % cfg.replicas
		procs[victim].kill()
		np := startBridge(t, sim, dsn, logPath)
		procs[victim] = np
		mu.Lock()
		basev[victim] = np.base + "/fhir/acme"
		mu.Unlock()
		t.Logf("killed replica %d after %d studies", victim, at)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	clientsDone := time.Since(start)

	// Drain: every replica's /readyz says nothing is pending.
	drainStart := time.Now()
	var pendingAtEnd int
	for {
		pendingAtEnd = readyPending(t, procs[0].base)
		if pendingAtEnd == 0 || time.Since(drainStart) > cfg.drain {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	drained := time.Since(drainStart)

	// Per study, what QUBS holds.
	var (
		finals, dupFinals, missing, dupArtifacts, comments, dupComments, emptyAvoidable, emptyOther, prelimUploaded int
	)
	for _, st := range studies {
		reps := sim.Reports("acme", st.appt)
		n := 0
		for _, r := range reps {
			if r.Status == "final" {
				n++
			}
		}
		switch {
		case n == 0:
			missing++
		case n > 1:
			dupFinals++
		}
		if n > 0 {
			finals++
			assert.Equal(t, "final", reps[len(reps)-1].Status, "%s: the final is what QUBS keeps", st.appt)
		}
		fin, pre := 0, 0
		for _, u := range sim.Uploads("acme", st.appt) {
			switch {
			case u.Uploaded && u.SHA256 == sha(st.final):
				fin++
			case u.Uploaded && u.SHA256 == sha(st.prelimPDF):
				pre++
			case !u.Uploaded && strings.HasPrefix(u.FileName, "final-"):
				emptyAvoidable++
			case !u.Uploaded:
				emptyOther++
			}
		}
		if fin != 1 {
			dupArtifacts++
			t.Errorf("%s: final PDF uploaded %d times", st.appt, fin)
		}
		if pre > 1 {
			dupArtifacts++
			t.Errorf("%s: preliminary PDF uploaded %d times", st.appt, pre)
		}
		prelimUploaded += pre
		c := len(sim.CreatedComments("acme", st.appt))
		comments += min(c, 1)
		if c > 1 {
			dupComments++
		}
	}
	var writes, faulted, lost int
	for _, r := range sim.Requests() {
		if r.Method != http.MethodPost && r.Method != http.MethodPut || strings.Contains(r.Path, "/oauth2/") {
			continue
		}
		writes++
		if r.Fault {
			faulted++
			if r.HandledStatus != 0 {
				lost++
			}
		}
	}
	logs, err := os.ReadFile(logPath)
	require.NoError(t, err)
	warns := bytes.Count(logs, []byte(`"level":"WARN","msg":"delivery: not delivered yet"`))
	t.Logf("CHAOS %s %s replicas=%d studies=%d kills=%d: QUBS writes %d, faulted %d (%.1f %%), applied with the answer lost %d; delivered finals %d, duplicate finals %d, missing %d, duplicate artifacts %d, "+
		"preliminary PDFs uploaded %d, empty slots (final) %d, empty slots (superseded preliminary) %d, comments %d, duplicate comments %d, "+
		"stuck %d, clients took %s, time to drain %s, stuck-delivery WARN lines %d",
		used, name, cfg.replicas, cfg.studies, cfg.kills, writes, faulted, 100*float64(faulted)/float64(max(writes, 1)), lost, finals, dupFinals, missing, dupArtifacts, prelimUploaded, emptyAvoidable, emptyOther,
		comments, dupComments, pendingAtEnd, clientsDone.Round(time.Millisecond), drained.Round(time.Millisecond), warns)

	assert.Greater(t, lost, 0, "some writes were applied with their answer lost")
	assert.Zero(t, pendingAtEnd, "queue drained within %s", cfg.drain)
	assert.Zero(t, missing, "nothing lost")
	assert.Zero(t, dupFinals, "final text once")
	assert.Zero(t, dupArtifacts, "each artifact once")
	assert.Zero(t, emptyAvoidable, "no empty slot for a delivered version")
	// A superseded preliminary leaves an empty slot only when every PUT of
	// its attempt failed (0.2^4) before the final superseded it.
	assert.LessOrEqual(t, emptyOther, max(1, cfg.studies/100), "empty slots of superseded versions")
	assert.Equal(t, cfg.studies, comments, "a comment per study")
	assert.Zero(t, dupComments, "comment once")
	assert.NotContains(t, string(logs), chaosPHI, "no PHI in the bridge's logs")
}

// readyPending is the acme pending count /readyz reports (-1 when the
// bridge does not answer).
func readyPending(t *testing.T, base string) int {
	t.Helper()
	res, err := http.Get(base + "/readyz")
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	var body struct {
		Checks struct {
			Pending    *int `json:"deliveries_pending"`
			Deliveries map[string]struct {
				Pending int `json:"pending"`
			} `json:"deliveries"`
		} `json:"checks"`
	}
	if json.NewDecoder(res.Body).Decode(&body) != nil || body.Checks.Pending == nil {
		return -1
	}
	return body.Checks.Deliveries["acme"].Pending
}
