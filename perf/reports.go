package perf

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// reportPDF is a valid one-page PDF padded to size bytes (at least its
// unpadded size) with incompressible bytes, as a real PDF is mostly
// compressed streams: a store that compresses (PostgreSQL's TOAST) must
// not be flattered by 2 MiB of spaces.
func reportPDF(size int) []byte {
	const content = "BT /F1 12 Tf 72 720 Td (bench) Tj ET"
	var b bytes.Buffer
	b.WriteString("%PDF-1.4\n")
	b.WriteString("1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n")
	b.WriteString("2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n")
	b.WriteString("3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]/Contents 4 0 R>>endobj\n")
	b.WriteString("4 0 obj<</Length " + strconv.Itoa(len(content)) + ">>stream\n" + content + "\nendstream endobj\n")
	b.WriteString("trailer<</Root 1 0 R>>\n%%EOF\n")
	if size > b.Len() {
		pad := make([]byte, size-b.Len())
		_, _ = rand.NewChaCha8([32]byte{}).Read(pad) // never fails
		b.Write(pad)
	}
	return b.Bytes()
}

// reportJSON is a final DiagnosticReport as a reporting system sends it:
// the report text and the PDF as presentedForms, the radiologist
// contained.
func reportJSON(serviceRequestID string, pdf []byte) []byte {
	forms := []map[string]any{
		{"contentType": "text/plain", "data": base64.StdEncoding.EncodeToString([]byte("Final report. No acute abnormality."))},
		{"contentType": "application/pdf", "title": "report.pdf", "data": base64.StdEncoding.EncodeToString(pdf)},
	}
	b, err := json.Marshal(map[string]any{
		"resourceType": "DiagnosticReport",
		"status":       "final",
		"category":     []any{map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "LP29684-5", "display": "Radiology"}}}},
		"code":         map[string]any{"text": "Imaging report"},
		"basedOn":      []any{map[string]any{"reference": "ServiceRequest/" + serviceRequestID}},
		"issued":       "2025-01-10T14:04:05+11:00",
		"contained": []any{map[string]any{
			"resourceType": "Practitioner", "id": "rad",
			"identifier": []any{map[string]any{"system": "http://ns.electronichealth.net.au/id/medicare-provider-number", "value": "1234567A"}},
			"name":       []any{map[string]any{"text": "Dr Bench Mark"}},
		}},
		"resultsInterpreter": []any{map[string]any{"reference": "#rad"}},
		"presentedForm":      forms,
	})
	if err != nil {
		panic(err) // maps of strings always encode
	}
	return b
}

// reports measures a DiagnosticReport with a 2 MiB PDF: the floor (the
// same QUBS work straight from the harness), sequential POSTs, POSTs
// sent at once, and what the bridge allocates for a report, each phase
// on a fresh bridge so that its peak RSS is its own.
func (r *runner) reports(ctx context.Context) error {
	// The load bridge has done its part; its memory and CPU would only
	// blur the report figures.
	r.bridge.stop()
	rp := &r.res.Reports
	size := r.cfg.PDFBytes
	if size == 0 {
		size = qubs.MaxUploadBytes
	}
	pdf := reportPDF(size)
	// Each POST reports on a study of its own, as reporting systems do:
	// versions of one study's report are delivered newest first, and an
	// older one still waiting would never reach QUBS.
	body := func(i int) ([]byte, error) {
		srID, err := mapping.ServiceRequestID(r.ids[i%len(r.ids)])
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		return reportJSON(srID, pdf), nil
	}
	first, err := body(0)
	if err != nil {
		return err
	}
	rp.PayloadBytes, rp.RequestBytes = len(pdf), len(first)
	// Each phase's fresh bridge gets one report before its measured ones,
	// as the floor's client gets a first round that is not counted: its
	// QUBS token, its connections to QUBS and the database, and the first
	// use of the code are start-up, not the cost of a report. Its study
	// is one the measured POSTs do not use, unless there are fewer
	// pending studies than POSTs.
	firstBody := func(k int) ([]byte, error) { return body(len(r.ids) - 1 - k) }

	r.logf("reports: the floor, %d times (upload URL, PUT, report straight to QUBS)", r.cfg.ReportPosts)
	if rp.Floor, err = r.floor(ctx, r.ids[0], pdf); err != nil {
		return err
	}
	r.logf("reports: the payload written to a file and flushed, %d times", r.cfg.ReportPosts)
	if rp.Flush, err = flushes(r.dir, pdf, r.cfg.ReportPosts); err != nil {
		return err
	}

	r.logf("reports: %d sequential POSTs with return=minimal, %d without, each once QUBS has the one before, then %d back to back, on a fresh bridge after %d not counted",
		r.cfg.ReportPosts, r.cfg.ReportPosts, r.cfg.ReportPosts, 1+r.cfg.ReportWarmup)
	delivered := true
	w, err := firstBody(0)
	if err != nil {
		return err
	}
	warm := r.cfg.ReportWarmup
	rp.PeakSequential, err = r.onFreshBridge(ctx, "reports-sequential", w, warm+3*r.cfg.ReportPosts, false, &delivered, func(hc *http.Client, base string, got int, _ string) error {
		// QUBS is asked how many reports it has only between the POSTs
		// that wait for their delivery: its answer walks every record
		// under the simulator's lock, which the deliveries need too.
		waiting := true
		for i := -warm; i < 3*r.cfg.ReportPosts; i++ {
			phase, k, next := i/r.cfg.ReportPosts, i, body // 0 minimal, 1 no Prefer, 2 back to back
			if i < 0 {
				// The warm-up, return=minimal, each once QUBS has the one
				// before; its studies are taken from the end, after those
				// of the phases' first POSTs (firstBody).
				phase, k, next = -1, 2-i, firstBody
			}
			b, err := next(k)
			if err != nil {
				return err
			}
			took, n, err := postReport(ctx, hc, base, b, "seq-"+strconv.Itoa(i), phase != 1)
			if err != nil {
				return err
			}
			switch phase {
			case -1:
				rp.Warmup = append(rp.Warmup, took)
			case 0:
				rp.Minimal, rp.EchoMinimal = append(rp.Minimal, took), n
			case 1:
				rp.Full, rp.EchoFull = append(rp.Full, took), n
			default:
				rp.BackToBack = append(rp.BackToBack, took)
				continue
			}
			if !waiting {
				continue
			}
			// The floor is measured with nothing else running; so is the
			// next POST: this one's delivery (its upload to QUBS, the
			// bridge's equivalent of the floor) ends first.
			want := got + 1
			if got, err = r.awaitReports(ctx, want, time.Minute, 5*time.Millisecond); err != nil {
				return err
			}
			if waiting = got >= want; !waiting {
				delivered = false
				r.logf("reports: QUBS did not receive report %d within a minute; the POSTs after it go back to back", i+1)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}

	r.logf("reports: %d POSTs at once, on a fresh bridge", r.cfg.ConcurrentPosts)
	bodies := make([][]byte, r.cfg.ConcurrentPosts)
	for i := range bodies {
		if bodies[i], err = body(i); err != nil {
			return err
		}
	}
	if w, err = firstBody(1); err != nil {
		return err
	}
	rp.PeakConcurrent, err = r.onFreshBridge(ctx, "reports-at-once", w, r.cfg.ConcurrentPosts, false, &delivered, func(hc *http.Client, base string, _ int, _ string) error {
		took, err := postAtOnce(ctx, hc, base, bodies, "conc")
		rp.Concurrent = took
		return err
	})
	if err != nil {
		return err
	}

	r.logf("reports: the bytes allocated for each of %d reports one at a time, and for %d rounds of %d at once, from the POST until QUBS has it, on a fresh bridge with its metrics on",
		r.cfg.ReportPosts, heapRounds, r.cfg.ConcurrentPosts)
	if w, err = firstBody(2); err != nil {
		return err
	}
	_, err = r.onFreshBridge(ctx, "reports-heap", w, r.cfg.ReportPosts+heapRounds*r.cfg.ConcurrentPosts, true, &delivered, func(hc *http.Client, base string, had int, metrics string) error {
		return r.reportHeap(ctx, hc, base, metrics, had, body)
	})
	rp.Delivered = delivered
	return err
}

// postAtOnce POSTs bodies together (return=minimal) and returns the
// latencies.
func postAtOnce(ctx context.Context, hc *http.Client, base string, bodies [][]byte, key string) ([]time.Duration, error) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		took  []time.Duration
		start = make(chan struct{})
	)
	for i, b := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			d, _, err := postReport(ctx, hc, base, b, key+"-"+strconv.Itoa(i), true)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && first == nil {
				first = err
			}
			if err == nil {
				took = append(took, d)
			}
		}()
	}
	close(start)
	wg.Wait()
	return took, first
}

// heapRounds is how many rounds of ConcurrentPosts reports at once
// reportHeap measures.
const heapRounds = 3

// reportHeap measures what the bridge allocates for a report in its whole
// life there, its POST and its delivery: the Go runtime's count of bytes
// allocated (go_memstats_alloc_bytes_total, from the bridge's metrics)
// before the POST and once QUBS has the report. With no collection in
// between, that is how far the report raised the heap at its peak; a
// collection can only lower the peak, so the figure bounds it from above.
// It is issue 10's "peak heap per 2 MiB report", measured on the bridge
// as run rather than in process (BenchmarkSubmitReport2MB, which leaves
// the delivery out). The count is process-wide: the bridge's own
// background work falls in too (hence the medians), and so does the
// reading itself, a scrape of the metrics, whose allocations after the
// count was taken are measured while the bridge is idle and subtracted.
// ReportPosts reports one at a time, then heapRounds rounds of
// ConcurrentPosts at once, each round's figure divided among its reports.
func (r *runner) reportHeap(ctx context.Context, hc *http.Client, base, metrics string, had int, body func(int) ([]byte, error)) error {
	rp := &r.res.Reports
	allocated := func() (int64, error) {
		// name[] trims the answer to the one metric; the gathering
		// behind it is the whole registry's still.
		b, err := get(ctx, http.DefaultClient, metrics+"/metrics?name[]=go_memstats_alloc_bytes_total")
		if err != nil {
			return 0, fmt.Errorf("bench: reading the bridge's allocations: %w", err)
		}
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "go_memstats_alloc_bytes_total "); ok {
				f, err := strconv.ParseFloat(v, 64)
				return int64(f), err
			}
		}
		return 0, errors.New("bench: the bridge's metrics lack go_memstats_alloc_bytes_total")
	}
	var scrapes []int64
	for range 7 {
		a, err := allocated()
		if err != nil {
			return err
		}
		b, err := allocated()
		if err != nil {
			return err
		}
		scrapes = append(scrapes, b-a)
	}
	scrape := medianOf(scrapes)
	// measure runs post, which sends n reports, and returns what the
	// bridge allocated for them in all.
	measure := func(n int, post func() error) (int64, error) {
		before, err := allocated()
		if err != nil {
			return 0, err
		}
		if err := post(); err != nil {
			return 0, fmt.Errorf("bench: report POST: %w", err)
		}
		want := had + n
		if had, err = r.awaitReports(ctx, want, time.Minute, 5*time.Millisecond); err != nil {
			return 0, err
		}
		if had < want {
			return 0, fmt.Errorf("bench: QUBS did not receive %d reports within a minute", n)
		}
		// QUBS has the report; the bridge still records its delivery
		// (and re-reads the study): let that finish inside the reading.
		time.Sleep(100 * time.Millisecond)
		after, err := allocated()
		return after - before - scrape, err
	}
	// Studies after those of the other phases, so that no report waits
	// behind another of its study.
	next := 3*r.cfg.ReportPosts + r.cfg.ConcurrentPosts
	for i := range r.cfg.ReportPosts {
		b, err := body(next + i)
		if err != nil {
			return err
		}
		v, err := measure(1, func() error {
			_, _, err := postReport(ctx, hc, base, b, "heap-"+strconv.Itoa(i), true)
			return err
		})
		if err != nil {
			return err
		}
		rp.HeapSequential = append(rp.HeapSequential, v)
	}
	next += r.cfg.ReportPosts
	for round := range heapRounds {
		bodies := make([][]byte, r.cfg.ConcurrentPosts)
		for i := range bodies {
			var err error
			if bodies[i], err = body(next + i); err != nil {
				return err
			}
		}
		next += len(bodies)
		v, err := measure(len(bodies), func() error {
			_, err := postAtOnce(ctx, hc, base, bodies, "heap-round"+strconv.Itoa(round))
			return err
		})
		if err != nil {
			return err
		}
		rp.HeapConcurrent = append(rp.HeapConcurrent, v/int64(len(bodies)))
	}
	return nil
}

// onFreshBridge starts a bridge, lets it settle, POSTs first and waits
// until QUBS has it, runs fn with the number of reports QUBS then has,
// waits until QUBS has received the posts reports fn sent (so that
// delivery is part of the peak), and returns how far the bridge's peak
// RSS rose above its RSS before fn.
func (r *runner) onFreshBridge(ctx context.Context, phase string, first []byte, posts int, metrics bool, delivered *bool, fn func(hc *http.Client, base string, had int, metrics string) error) (int64, error) {
	c, u, err := r.startBridge(ctx, metrics)
	if err != nil {
		return 0, err
	}
	defer c.stop()
	hc := loadClient(r.cfg.ConcurrentPosts)
	base := u + "/fhir/" + r.cfg.Domain
	if _, err := get(ctx, hc, base+"/metadata"); err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	had, err := r.simReports(ctx)
	if err != nil {
		return 0, err
	}
	took, _, err := postReport(ctx, hc, base, first, "first-"+phase, true)
	if err != nil {
		return 0, fmt.Errorf("bench: the report before %s: %w", phase, err)
	}
	r.res.Reports.First = append(r.res.Reports.First, took)
	// The phase counts QUBS's reports from here: one arriving late
	// would pass for one of the phase's.
	want := had + 1
	if had, err = r.awaitReports(ctx, want, time.Minute, 5*time.Millisecond); err != nil {
		return 0, err
	}
	if had < want {
		return 0, fmt.Errorf("bench: QUBS did not receive the report before %s within a minute", phase)
	}
	if err := resetPeak(c.pid()); err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	m0, err := memoryOf(c.pid())
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	if err := fn(hc, base, had, c.metrics); err != nil {
		return 0, fmt.Errorf("bench: report POST: %w", err)
	}
	// Delivery runs behind the answer; wait for it (bounded), so that the
	// peak covers the whole life of a report in the bridge.
	n, err := r.awaitReports(ctx, had+posts, 2*time.Minute, 50*time.Millisecond)
	if err != nil {
		return 0, err
	}
	if n < had+posts {
		*delivered = false
		r.logf("reports: QUBS received %d of %d reports within 2 minutes; reading the peak anyway", n-had, posts)
	}
	m1, err := memoryOf(c.pid())
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	if err := r.saveMemoryProfiles(ctx, c, phase); err != nil {
		return 0, err
	}
	return m1.hwm - m0.rss, nil
}

// awaitReports asks QUBS every so often, for at most within, until it
// has received n report submissions in the domain, and returns how many
// it has: fewer than n when the time ran out.
func (r *runner) awaitReports(ctx context.Context, n int, within, every time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	for {
		got, err := r.simReports(ctx)
		if err != nil || got >= n || time.Now().After(deadline) {
			return got, err
		}
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case <-time.After(every):
		}
	}
}

// simReports is the number of report submissions QUBS has received in
// the domain.
func (r *runner) simReports(ctx context.Context) (int, error) {
	b, err := get(ctx, http.DefaultClient, r.simURL+"/_sim/inspect")
	if err != nil {
		return 0, fmt.Errorf("bench: reading the simulator's reports: %w", err)
	}
	var v struct {
		Domains map[string]struct {
			Reports map[string][]json.RawMessage
		}
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return 0, fmt.Errorf("bench: reading the simulator's reports: %w", err)
	}
	n := 0
	for _, reports := range v.Domains[r.cfg.Domain].Reports {
		n += len(reports)
	}
	return n, nil
}

// postReport POSTs a report and returns its latency and the size of the
// answer's body.
func postReport(ctx context.Context, hc *http.Client, base string, body []byte, key string, minimal bool) (time.Duration, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/DiagnosticReport", bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	// A key per POST: each is a new report, not a retry to replay.
	req.Header.Set("Idempotency-Key", "bench-"+key+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if minimal {
		req.Header.Set("Prefer", "return=minimal")
	}
	start := time.Now()
	res, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer res.Body.Close()
	n, err := io.Copy(io.Discard, res.Body)
	took := time.Since(start)
	if err != nil {
		return 0, 0, fmt.Errorf("reading the answer: %w", err)
	}
	if res.StatusCode != http.StatusCreated {
		return 0, 0, fmt.Errorf("status %d, want 201", res.StatusCode)
	}
	return took, n, nil
}

// floor does, from the harness, what delivering the report to QUBS takes
// (delivery.Worker's calls): an upload URL, the PUT of the PDF, the report
// submission. Its latency is the least any bridge can take to get a
// report with its PDF into QUBS.
func (r *runner) floor(ctx context.Context, appt string, pdf []byte) ([]time.Duration, error) {
	c, err := qubs.New(qubs.Config{
		BaseURL: r.simURL, TokenURL: r.simURL + "/oauth2/token", AuthStyle: oauth2.AuthStyleInParams,
		ClientID: qubssim.DefaultClientID, ClientSecret: qubssim.DefaultClientSecret, UserAgent: "qubs-fhir-bridge-bench",
	})
	if err != nil {
		return nil, fmt.Errorf("bench: QUBS client: %w", err)
	}
	once := func(i int) error {
		key := "bench-floor-" + strconv.Itoa(i) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		ct := "application/pdf"
		urls, err := c.CreateUploadURLs(ctx, r.cfg.Domain, appt, qubs.UploadRequest{Items: []qubs.UploadItem{{FileName: "report.pdf", ContentType: &ct}}}, key+"-u")
		if err != nil {
			return err
		}
		if len(urls.Items) != 1 {
			return fmt.Errorf("QUBS answered %d upload URLs for one item", len(urls.Items))
		}
		if err := c.Upload(ctx, urls.Items[0], ct, int64(len(pdf)), bytes.NewReader(pdf)); err != nil {
			return err
		}
		_, err = c.SubmitReport(ctx, r.cfg.Domain, appt, qubs.ReportSubmission{ReportText: "Final report. No acute abnormality.", ReportStatus: qubs.ReportFinal}, key+"-r")
		return err
	}
	// The first round also fetches the token. No more are left out: the
	// floor's client has nothing else to warm, the simulator has served
	// the load phases, and the goal was stated against this floor
	// (docs/performance.md, "A warm-up before the measured POSTs").
	out, err := timedRounds(r.cfg.ReportPosts, func(i int) (func(), error) { return nil, once(i) })
	if err != nil {
		return nil, fmt.Errorf("bench: floor: %w", err)
	}
	return out, nil
}

// timedRounds runs once(-1), not counted (a token, connections, files and
// code used the first time), then once(0) to once(n-1), and returns how
// long each of those took. The cleanup a round returns, if any, runs
// after its clock has stopped.
func timedRounds(n int, once func(i int) (cleanup func(), err error)) ([]time.Duration, error) {
	round := func(i int) (time.Duration, error) {
		start := time.Now()
		cleanup, err := once(i)
		took := time.Since(start)
		if cleanup != nil {
			cleanup()
		}
		return took, err
	}
	if _, err := round(-1); err != nil {
		return nil, err
	}
	out := make([]time.Duration, 0, n)
	for i := range n {
		took, err := round(i)
		if err != nil {
			return nil, err
		}
		out = append(out, took)
	}
	return out, nil
}

// flushes writes data to a new file in dir and flushes it n times
// (timedRounds), and returns how long each took: what a durable copy of a
// report's payload costs at least on that disk (Reports.Flush), whatever
// keeps it. A new file each time, as SQLite's artifact files are;
// PostgreSQL appends to its WAL instead, into segments it has made
// beforehand. Each file is removed after its round's clock stops (an
// unlink is ~0.7 ms here, and files left in place made rounds slower and
// noisier). dir's disk need not be the database's (docs/performance.md
// says so where the figure is described).
func flushes(dir string, data []byte, n int) ([]time.Duration, error) {
	out, err := timedRounds(n, func(int) (func(), error) {
		f, err := os.CreateTemp(dir, "flush-*")
		if err != nil {
			return nil, err
		}
		_, err = f.Write(data)
		if err == nil {
			err = f.Sync()
		}
		return func() { os.Remove(f.Name()) }, errors.Join(err, f.Close())
	})
	if err != nil {
		return nil, fmt.Errorf("bench: flush: %w", err)
	}
	return out, nil
}
