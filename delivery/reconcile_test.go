package delivery_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// deliverUntilDone works the queue, moving the worker's clock past each
// backoff, until report id is no longer pending.
func deliverUntilDone(t *testing.T, f *fixture, w interface {
	DeliverOne(context.Context) (bool, error)
}, id string) *store.Report {
	t.Helper()
	for range 50 {
		_, err := w.DeliverOne(context.Background())
		require.NoError(t, err)
		r, err := f.store.Report(context.Background(), "acme", id)
		require.NoError(t, err)
		if r.Delivery.State != store.DeliveryPending {
			return r
		}
	}
	t.Fatalf("%s still pending after 50 attempts", id)
	return nil
}

// assertOnce checks that QUBS holds each artifact in exactly one slot, with
// its content, and no empty slot.
func assertOnce(t *testing.T, f *fixture, appt string, artifacts ...[]byte) {
	t.Helper()
	ups := f.sim.Uploads("acme", appt)
	require.Len(t, ups, len(artifacts), "one slot per artifact")
	for i, a := range artifacts {
		assert.True(t, ups[i].Uploaded, "slot %d holds content", i)
		assert.Equal(t, sha(a), ups[i].SHA256)
	}
}

// TestUploadLostAnswer: the PUT is applied but its answer is lost (dropped,
// or replaced by a 503), once or on every PUT; whatever the store answers a
// second PUT, the artifact ends in one slot, the report is submitted once.
func TestUploadLostAnswer(t *testing.T) {
	for _, used := range qubssim.UsedUploadURLs {
		for _, tc := range []struct {
			name  string
			fault qubssim.Fault
		}{
			{"dropped", qubssim.Fault{Method: "PUT", Route: "/presigned/upload/", Drop: true, AfterHandling: true, Count: 1}},
			{"503", qubssim.Fault{Method: "PUT", Route: "/presigned/upload/", Status: http.StatusServiceUnavailable, AfterHandling: true, Count: 1}},
			{"every answer lost", qubssim.Fault{Method: "PUT", Route: "/presigned/upload/", Drop: true, AfterHandling: true}},
			{"lost, and the first look fails", qubssim.Fault{Method: "PUT", Route: "/presigned/upload/", Drop: true, AfterHandling: true, Count: 2}},
		} {
			t.Run(used.String()+"/"+tc.name, func(t *testing.T) {
				f := newFixtureUsed(t, used)
				appt := f.sim.PendingIDs("acme")[0]
				f.sim.AddFault(tc.fault)
				if tc.name == "lost, and the first look fails" {
					f.sim.AddFault(qubssim.Fault{Method: "GET", Route: "/attachments/", Status: http.StatusServiceUnavailable, Count: 3})
				}
				one, two := []byte("%PDF-1 one"), []byte("%PDF-1 two, longer")
				f.accept(t, "r1", appt, "final", "text", one, two)
				r := deliverUntilDone(t, f, f.worker("w"), "r1")
				require.Equal(t, store.DeliveryDelivered, r.Delivery.State, r.Delivery.LastError)
				assertOnce(t, f, appt, one, two)
				for _, u := range f.sim.Uploads("acme", appt) {
					assert.Equal(t, 1, u.Puts, "no second PUT once the first was applied")
				}
				assert.Len(t, f.sim.Reports("acme", appt), 1)
			})
		}
	}
}

// TestUploadCrashBetweenPutAndRecord: a worker dies after its PUT
// succeeded but before recording it; the job is taken over after QUBS
// forgot the upload key (and the URL expired), so asking for a URL again
// would make a second slot. The takeover finds the content instead.
func TestUploadCrashBetweenPutAndRecord(t *testing.T) {
	for _, used := range qubssim.UsedUploadURLs {
		for _, slotRecorded := range []bool{true, false} {
			name := used.String() + "/slot recorded"
			if !slotRecorded {
				name = used.String() + "/slot not recorded (queued before slots were)"
			}
			t.Run(name, func(t *testing.T) {
				f := newFixtureUsed(t, used)
				appt := f.sim.PendingIDs("acme")[3]
				pdf := []byte("%PDF-1 crash")
				f.accept(t, "r1", appt, "final", "text", pdf)
				now := time.Now()
				ctx := context.Background()
				job, err := f.store.ClaimDelivery(ctx, "dead", time.Minute, now, nil)
				require.NoError(t, err)
				ct := qubs.ContentTypePDF
				key := qubs.DeriveIdempotencyKey("qfb-upload", []byte("acme"), []byte("r1"), []byte("1"), []byte("0"))
				urls, err := f.client.CreateUploadURLs(ctx, "acme", appt, qubs.UploadRequest{Items: []qubs.UploadItem{{FileName: "a0.pdf", ContentType: &ct}}}, key)
				require.NoError(t, err)
				if slotRecorded {
					require.NoError(t, f.store.RecordUploadSlot(ctx, "dead", "acme", "r1", 1, 0, urls.Items[0].GUID))
				}
				require.NoError(t, f.client.Upload(ctx, urls.Items[0], ct, int64(len(pdf)), bytesReader(job.Artifacts[0].Data)))

				f.clock.Advance(20 * time.Minute)
				w := f.worker("alive")
				w.Now = func() time.Time { return now.Add(20 * time.Minute) }
				r := deliverUntilDone(t, f, w, "r1")
				require.Equal(t, store.DeliveryDelivered, r.Delivery.State, r.Delivery.LastError)
				assertOnce(t, f, appt, pdf)
				assert.Len(t, f.sim.Reports("acme", appt), 1)
			})
		}
	}
}

// TestUploadRefusedNotApplied: PUTs refused before being applied (503,
// dropped before handling) are retried inline on the same slot.
func TestUploadRefusedNotApplied(t *testing.T) {
	for _, used := range qubssim.UsedUploadURLs {
		t.Run(used.String(), func(t *testing.T) {
			f := newFixtureUsed(t, used)
			appt := f.sim.PendingIDs("acme")[4]
			f.sim.AddFault(qubssim.Fault{Method: "PUT", Route: "/presigned/upload/", Status: http.StatusServiceUnavailable, Count: 2})
			f.sim.AddFault(qubssim.Fault{Method: "PUT", Route: "/presigned/upload/", Drop: true, Count: 1})
			pdf := []byte("%PDF-1 retried")
			f.accept(t, "r1", appt, "final", "text", pdf)
			worked, err := f.worker("w").DeliverOne(context.Background())
			require.NoError(t, err)
			require.True(t, worked)
			r, err := f.store.Report(context.Background(), "acme", "r1")
			require.NoError(t, err)
			assert.Equal(t, store.DeliveryDelivered, r.Delivery.State, "inline retries, one attempt: %s", r.Delivery.LastError)
			assertOnce(t, f, appt, pdf)
		})
	}
}

// TestSupersededMidUpload: a newer version arrives while the first
// artifact's upload fails; the slot already made is filled, no slot is
// made for the old version's other artifacts, and the newer version is
// what QUBS gets.
func TestSupersededMidUpload(t *testing.T) {
	f := newFixture(t)
	appt := f.sim.PendingIDs("acme")[6]
	p1, p2 := []byte("%PDF-1 prelim one"), []byte("%PDF-1 prelim two")
	f.accept(t, "r1", appt, "preliminary", "prelim", p1, p2)
	w := f.worker("w")
	w.QUBS = &newerDuringUpload{Client: f.client, accept: func() {
		f.accept(t, "r1", appt, "final", "final", []byte("%PDF-1 final"))
	}}
	worked, err := w.DeliverOne(context.Background())
	require.NoError(t, err)
	require.True(t, worked)
	w.QUBS = f.client
	r := deliverUntilDone(t, f, w, "r1")
	require.Equal(t, store.DeliveryDelivered, r.Delivery.State, r.Delivery.LastError)
	require.Equal(t, 2, r.Version)

	v1, err := f.store.ReportVersion(context.Background(), "acme", "r1", 1)
	require.NoError(t, err)
	assert.Equal(t, store.DeliverySuperseded, v1.Delivery.State)
	ups := f.sim.Uploads("acme", appt)
	require.Len(t, ups, 2, "the old version's first slot, filled, and the final's; none for the old second artifact")
	for _, u := range ups {
		assert.True(t, u.Uploaded, "no empty slot")
	}
	reps := f.sim.Reports("acme", appt)
	require.Len(t, reps, 1)
	assert.Equal(t, "final", reps[0].Status)
}

// newerDuringUpload fails the first PUT as QUBS unreachable (not applied),
// after a newer version was accepted.
type newerDuringUpload struct {
	*qubs.Client
	accept func()
	done   bool
}

func (n *newerDuringUpload) Upload(ctx context.Context, u qubs.UploadURL, ct string, size int64, body io.Reader) error {
	if !n.done {
		n.done = true
		n.accept()
		return &qubs.Error{Kind: qubs.KindTransient, Op: "qubs.Upload", Err: errors.New("connection reset")}
	}
	return n.Client.Upload(ctx, u, ct, size, body)
}

// TestReportPastKeyWindow: a submission applied but whose answer was lost,
// retried after QUBS forgot its key: the worker checks the appointment
// still takes reports and resubmits the same content (one identical
// overwrite); if the appointment left PENDING REPORTING it fails without
// a call that QUBS would refuse anyway.
func TestReportPastKeyWindow(t *testing.T) {
	for _, stillPending := range []bool{true, false} {
		t.Run(map[bool]string{true: "still pending", false: "no longer pending"}[stillPending], func(t *testing.T) {
			f := newFixture(t)
			appt := f.sim.PendingIDs("acme")[7]
			f.accept(t, "r1", appt, "final", "final text")
			f.sim.AddFault(qubssim.Fault{Method: "POST", Route: "/report", Drop: true, AfterHandling: true})
			w := f.worker("w")
			_, err := w.DeliverOne(context.Background())
			require.NoError(t, err)
			f.sim.ClearFaults()
			require.NotEmpty(t, f.sim.Reports("acme", appt), "applied, answer lost")
			n := len(f.sim.Reports("acme", appt))

			f.clock.Advance(25 * time.Hour)
			if !stillPending {
				f.sim.SetStatus("acme", appt, qubs.StatusAuthorised)
			}
			w.Now = func() time.Time { return time.Now().Add(25 * time.Hour) }
			r := deliverUntilDone(t, f, w, "r1")
			reps := f.sim.Reports("acme", appt)
			if stillPending {
				require.Equal(t, store.DeliveryDelivered, r.Delivery.State, r.Delivery.LastError)
				require.Len(t, reps, n+1)
				for _, rep := range reps {
					assert.Equal(t, "final text", rep.Submission.ReportText, "every submission the same content")
				}
				return
			}
			assert.Equal(t, store.DeliveryFailed, r.Delivery.State)
			assert.Contains(t, r.Delivery.LastError, "not found")
			assert.Len(t, reps, n, "nothing sent to an appointment that left the worklist")
		})
	}
}
