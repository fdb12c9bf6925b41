package delivery_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/delivery"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/sqlite/sqlitetest"
)

type fixture struct {
	clock  *qubssim.FakeClock
	sim    *qubssim.Server
	client *qubs.Client
	store  store.Store
	dbPath string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureUsed(t, qubssim.UsedUploadConflict)
}

// newFixtureUsed runs the simulator with the given second-PUT behaviour.
func newFixtureUsed(t *testing.T, used qubssim.UsedUploadURL) *fixture {
	t.Helper()
	clock := qubssim.NewFakeClock(time.Now())
	sim, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Appointments: 200, Clock: clock, UsedUploadURL: used})
	require.NoError(t, err)
	t.Cleanup(func() { sim.Close() })
	client, err := qubs.New(qubs.Config{BaseURL: sim.URL, TokenURL: sim.TokenURL(), ClientID: qubssim.DefaultClientID,
		ClientSecret: qubssim.DefaultClientSecret, AuthStyle: oauth2.AuthStyleInParams,
		Retry: qubs.RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond}})
	require.NoError(t, err)
	dbPath := sqlitetest.Path(t)
	st, err := sqlite.Open(context.Background(), dbPath)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return &fixture{clock: clock, sim: sim, client: client, store: st, dbPath: dbPath}
}

func (f *fixture) worker(name string) *delivery.Worker {
	return &delivery.Worker{Store: f.store, QUBS: f.client, Name: name, MaxBackoff: time.Millisecond, Lease: 30 * time.Second, UploadPause: time.Millisecond}
}

func (f *fixture) accept(t *testing.T, id, appt, status, text string, artifacts ...[]byte) *store.Report {
	t.Helper()
	sub, _ := json.Marshal(qubs.ReportSubmission{ReportText: text, ReportStatus: status})
	r := &store.Report{Domain: "acme", ID: id, AppointmentID: appt, Status: status, Resource: []byte(`{"resourceType":"DiagnosticReport"}`), Submission: sub}
	for i, a := range artifacts {
		r.Artifacts = append(r.Artifacts, store.Artifact{FileName: fmt.Sprintf("a%d.pdf", i), ContentType: qubs.ContentTypePDF, Data: a})
	}
	ctx := context.Background()
	if _, err := f.store.Report(ctx, "acme", id); err == nil {
		require.NoError(t, f.store.UpdateReport(ctx, r, 0))
		return r
	}
	require.NoError(t, f.store.CreateReport(ctx, r))
	return r
}

// drain works jobs until none is due.
func drain(t *testing.T, w *delivery.Worker) {
	t.Helper()
	require.NoError(t, drainErr(w))
}

func drainErr(w *delivery.Worker) error {
	for i := 0; i < 1000; i++ {
		worked, err := w.DeliverOne(context.Background())
		if err != nil {
			return err
		}
		if !worked {
			return nil
		}
	}
	return fmt.Errorf("the queue did not drain")
}

func TestDeliversReportWithArtifacts(t *testing.T) {
	f := newFixture(t)
	appt := f.sim.PendingIDs("acme")[0]
	f.accept(t, "r1", appt, "final", "text", []byte("%PDF-1 one"), []byte("%PDF-1 two"))
	drain(t, f.worker("w"))

	reps := f.sim.Reports("acme", appt)
	require.Len(t, reps, 1)
	assert.Equal(t, "final", reps[0].Status)
	assert.Len(t, f.sim.Uploads("acme", appt), 2)
	r, err := f.store.Report(context.Background(), "acme", "r1")
	require.NoError(t, err)
	assert.Equal(t, store.DeliveryDelivered, r.Delivery.State)
	assert.Equal(t, reps[0].ReportGUID, r.Delivery.ReportGUID)
}

func TestNotPendingFailsPermanently(t *testing.T) {
	f := newFixture(t)
	appt := f.sim.PendingIDs("acme")[1]
	f.accept(t, "r1", appt, "final", "text")
	f.sim.SetStatus("acme", appt, qubs.StatusAuthorised)
	drain(t, f.worker("w"))
	r, err := f.store.Report(context.Background(), "acme", "r1")
	require.NoError(t, err)
	assert.Equal(t, store.DeliveryFailed, r.Delivery.State)
	assert.Contains(t, r.Delivery.LastError, "not found")
	assert.Empty(t, f.sim.Reports("acme", appt))
}

func TestTransientFailuresRetry(t *testing.T) {
	f := newFixture(t)
	appt := f.sim.PendingIDs("acme")[2]
	f.sim.AddFault(qubssim.Fault{Method: "POST", Route: "/report", Status: http.StatusServiceUnavailable, Count: 3})
	f.sim.AddFault(qubssim.Fault{Method: "POST", Route: "/report", Drop: true, AfterHandling: true, Count: 1})
	f.accept(t, "r1", appt, "final", "text")
	w := f.worker("w")
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := w.DeliverOne(context.Background())
		require.NoError(t, err)
		r, err := f.store.Report(context.Background(), "acme", "r1")
		require.NoError(t, err)
		if r.Delivery.State == store.DeliveryDelivered {
			break
		}
		require.Equal(t, store.DeliveryPending, r.Delivery.State)
		require.True(t, time.Now().Before(deadline), "not delivered")
	}
	assert.Len(t, f.sim.Reports("acme", appt), 1, "a lost answer is replayed, not resubmitted")
}

// TestCrashedWorkerIsTakenOver: a worker claims a job and dies holding
// it; once the lease runs out another worker delivers it, once.
func TestCrashedWorkerIsTakenOver(t *testing.T) {
	f := newFixture(t)
	appt := f.sim.PendingIDs("acme")[3]
	f.accept(t, "r1", appt, "final", "text", []byte("%PDF-1 crash"))
	now := time.Now()
	// The dead worker: claimed and uploaded, never settled.
	job, err := f.store.ClaimDelivery(context.Background(), "dead", time.Minute, now, nil)
	require.NoError(t, err)
	ct := qubs.ContentTypePDF
	key := qubs.DeriveIdempotencyKey("qfb-upload", []byte("acme"), []byte("r1"), []byte("1"), []byte("0"))
	urls, err := f.client.CreateUploadURLs(context.Background(), "acme", appt, qubs.UploadRequest{Items: []qubs.UploadItem{{FileName: "a0.pdf", ContentType: &ct}}}, key)
	require.NoError(t, err)
	require.NoError(t, f.client.Upload(context.Background(), urls.Items[0], ct, int64(len(job.Artifacts[0].Data)), bytesReader(job.Artifacts[0].Data)))

	w := f.worker("alive")
	w.Now = func() time.Time { return now.Add(2 * time.Minute) } // after the lease
	drain(t, w)
	assert.Len(t, f.sim.Reports("acme", appt), 1)
	ups := f.sim.Uploads("acme", appt)
	assert.Len(t, ups, 1, "the takeover reused the dead worker's upload")
}

func TestConcurrentWorkersDeliverEachVersionOnce(t *testing.T) {
	f := newFixture(t)
	ids := f.sim.PendingIDs("acme")[10:30]
	for i, appt := range ids {
		f.accept(t, fmt.Sprintf("r%d", i), appt, "final", "text", []byte("%PDF-1 x"))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for n := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- drainErr(f.worker(fmt.Sprintf("w%d", n)))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for _, appt := range ids {
		assert.Len(t, f.sim.Reports("acme", appt), 1, appt)
		assert.Len(t, f.sim.Uploads("acme", appt), 1, appt)
	}
}

// TestLaterVersionWins: a preliminary and a final queued together; QUBS
// must end with the final.
func TestLaterVersionWins(t *testing.T) {
	f := newFixture(t)
	appt := f.sim.PendingIDs("acme")[4]
	f.accept(t, "r1", appt, "preliminary", "prelim")
	f.accept(t, "r1", appt, "final", "final")
	drain(t, f.worker("w"))
	reps := f.sim.Reports("acme", appt)
	require.NotEmpty(t, reps)
	assert.Equal(t, "final", reps[len(reps)-1].Status)
	v1, err := f.store.ReportVersion(context.Background(), "acme", "r1", 1)
	require.NoError(t, err)
	assert.Contains(t, []string{store.DeliverySuperseded, store.DeliveryDelivered}, v1.Delivery.State)
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// TestLongOutageCreatesNoSecondSlots: artifacts uploaded, then the
// submission fails past QUBS's 15-minute upload-key window; the retry
// must not ask for new upload slots for what is already uploaded.
func TestLongOutageCreatesNoSecondSlots(t *testing.T) {
	f := newFixture(t)
	appt := f.sim.PendingIDs("acme")[5]
	f.accept(t, "r1", appt, "final", "text", []byte("%PDF-1 one"), []byte("%PDF-1 two"))
	w := f.worker("w")
	// The real client, with report submission failing as if QUBS were
	// down for that call alone.
	w.QUBS = submitFails{f.client}
	worked, err := w.DeliverOne(context.Background())
	require.NoError(t, err)
	require.True(t, worked)
	require.Len(t, f.sim.Uploads("acme", appt), 2)
	require.Empty(t, f.sim.Reports("acme", appt))

	w.QUBS = f.client
	f.clock.Advance(20 * time.Minute)
	w.Now = func() time.Time { return time.Now().Add(time.Hour) } // past the retry's due time
	drain(t, w)
	assert.Len(t, f.sim.Reports("acme", appt), 1)
	assert.Len(t, f.sim.Uploads("acme", appt), 2, "no second slot for an uploaded artifact")
}

type submitFails struct{ *qubs.Client }

func (submitFails) SubmitReport(context.Context, string, string, qubs.ReportSubmission, string) (*qubs.ReportReceipt, error) {
	return nil, &qubs.Error{Kind: qubs.KindTransient, Op: "qubs.SubmitReport", Status: http.StatusServiceUnavailable}
}
