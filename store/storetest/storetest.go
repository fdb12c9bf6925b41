// Package storetest is the one conformance suite of store.Store: each
// engine runs it from its own tests (store/sqlite, store/postgres), against
// a real database, so that the two behave alike down to the error kinds.
//
// Run covers the contract with one Store per test; RunReplicas covers what
// needs several Stores on one database: migrations applied twice and
// concurrently, replicas racing for delivery jobs, idempotency keys and
// jti claims, and replicas writing one audit trail.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// Opener prepares a fresh, empty database for t and returns a function that
// opens a Store on it. The function may be called several times, also
// concurrently, each call opening a new Store (a replica) on the same
// database; the caller closes what it opens. The database is removed by
// t.Cleanup.
type Opener func(t *testing.T) func(ctx context.Context) (store.Store, error)

// Run runs the conformance suite. open must return a Store on a fresh,
// empty database and close it with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"CreateAndRead", testCreateAndRead},
		{"CreateConflict", testCreateConflict},
		{"CreateInvalid", testCreateInvalid},
		{"ReportWriteAudit", testReportWriteAudit},
		{"UpdateVersions", testUpdateVersions},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"Search", testSearch},
		{"SearchPaging", testSearchPaging},
		{"ReportOrderAndCount", testReportOrderAndCount},
		{"DeliveryLifecycle", testDeliveryLifecycle},
		{"ClaimHeld", testClaimHeld},
		{"ClaimOrder", testClaimOrder},
		{"LeaseExpiryTakeover", testLeaseExpiryTakeover},
		{"VersionOrdering", testVersionOrdering},
		{"Retry", testRetry},
		{"Fail", testFail},
		{"RecordUpload", testRecordUpload},
		{"RecordUploadSlot", testRecordUploadSlot},
		{"RenewLease", testRenewLease},
		{"DeliveryStats", testDeliveryStats},
		{"DeliveryOps", testDeliveryOps},
		{"FinishErrors", testFinishErrors},
		{"ConcurrentClaims", testConcurrentClaims},
		{"AppointmentSupersedesAcrossReports", testAppointmentSupersedesAcrossReports},
		{"AppointmentLease", testAppointmentLease},
		{"AppointmentsIndependent", testAppointmentsIndependent},
		{"AppointmentNewestAccepted", testAppointmentNewestAccepted},
		{"ReportKeepsAppointment", testReportKeepsAppointment},
		{"ConcurrentAppointmentDeliveries", testConcurrentAppointmentDeliveries},
		{"LeaseFencing", testLeaseFencing},
		{"LeaseFencingUntaken", testLeaseFencingUntaken},
		{"Idempotency", testIdempotency},
		{"IdempotencyLookup", testIdempotencyLookup},
		{"IdempotencyRace", testIdempotencyRace},
		{"Binaries", testBinaries},
		{"ArtifactBinaries", testArtifactBinaries},
		{"Purge", testPurge},
		{"Ping", testPing},
		{"AuditRecordAndRead", testAuditRecordAndRead},
		{"AuditInvalid", testAuditInvalid},
		{"AuditSearch", testAuditSearch},
		{"AuditSearchPaging", testAuditSearchPaging},
		{"AuditOrderAndCount", testAuditOrderAndCount},
		{"AuditConcurrentRecords", testAuditConcurrentRecords},
		{"AuditRetention", testAuditRetention},
		{"AuditBatch", testAuditBatch},
		{"ClaimJTI", testClaimJTI},
		{"ClaimJTIExpiry", testClaimJTIExpiry},
		{"ClaimJTIRace", testClaimJTIRace},
		{"ErrorsCarryNoPHI", testErrorsCarryNoPHI},
		{"Events", testEvents},
		{"EventsInvalid", testEventsInvalid},
		{"WorklistSync", testWorklistSync},
		{"WorklistLease", testWorklistLease},
		{"WorklistSearch", testWorklistSearch},
		{"WorklistTaskAndStarted", testWorklistTaskAndStarted},
		{"CommentWatch", testCommentWatch},
		{"SubscriptionLifecycle", testSubscriptionLifecycle},
		{"SubscriptionFailure", testSubscriptionFailure},
		{"SubscriptionDeliveryEvents", testSubscriptionDeliveryEvents},
		{"SubscriptionOutboxPrune", testSubscriptionOutboxPrune},
		{"SubscriptionStats", testSubscriptionStats},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

// RunReplicas runs the tests that need several Stores on one database.
func RunReplicas(t *testing.T, opener Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(ctx context.Context) (store.Store, error))
	}{
		{"OpenTwice", testOpenTwice},
		{"ConcurrentOpen", testConcurrentOpen},
		{"ReplicasClaim", testReplicasClaim},
		{"ReplicasAppointmentDeliveries", testReplicasAppointmentDeliveries},
		{"ReplicasIdempotency", testReplicasIdempotency},
		{"ReplicasClaimJTI", testReplicasClaimJTI},
		{"ReplicasAudit", testReplicasAudit},
		{"ReplicasEvents", testReplicasEvents},
		{"ReplicasWorklistLease", testReplicasWorklistLease},
		{"ReplicasWorklistResources", testReplicasWorklistResources},
		{"ReplicasComments", testReplicasComments},
		{"ReplicasDispatch", testReplicasDispatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, opener(t))
		})
	}
}

// phi marks the synthetic patient data in test resources, so a test can
// prove that no error message carries it.
const phi = "PHI-Jane-Citizen-1970-01-01"

// base is the tests' clock: fixed, with microseconds, so that time
// normalisation is exercised.
var base = time.Date(2025, 1, 10, 3, 4, 5, 123456000, time.UTC)

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newReport builds a report created at created, with two artifacts.
func newReport(domain, id, appt string, created time.Time) *store.Report {
	return &store.Report{
		Domain:        domain,
		ID:            id,
		AppointmentID: appt,
		PatientRef:    "Patient/P-" + appt,
		Status:        "preliminary",
		Resource:      []byte(`{"resourceType":"DiagnosticReport","id":"` + id + `","text":"` + phi + `"}`),
		Submission:    []byte(`{"reportText":"` + phi + `","reportStatus":"preliminary"}`),
		Artifacts: []store.Artifact{
			{FileName: "report.pdf", ContentType: "application/pdf", Data: []byte("%PDF-1.7 " + phi)},
			{FileName: "sr.dcm", ContentType: "application/dicom", Data: []byte("DICM " + id)},
		},
		CreatedAt: created,
	}
}

func create(t *testing.T, s store.Store, r *store.Report) *store.Report {
	t.Helper()
	require.NoError(t, s.CreateReport(ctxT(t), r))
	return r
}

func update(t *testing.T, s store.Store, r *store.Report) *store.Report {
	t.Helper()
	require.NoError(t, s.UpdateReport(ctxT(t), r, 0))
	return r
}

func claim(t *testing.T, s store.Store, worker string, now time.Time) *store.Report {
	t.Helper()
	r, err := s.ClaimDelivery(ctxT(t), worker, time.Minute, now, nil)
	require.NoError(t, err, "claim by %s at %s", worker, now)
	return r
}

// testClaimHeld: ClaimDelivery takes the bytes held gives instead of
// reading them from the store, and reads those it does not give, or
// gives with another length than the row's. held is asked with the
// artifact as stored: its index, size and SHA-256, no Data.
func testClaimHeld(t *testing.T, s store.Store) {
	r := create(t, s, newReport("acme", "r1", "A1", time.Now()))
	// Not the stored bytes, so that the claim shows where it took them.
	stand := bytes.Repeat([]byte("h"), len(r.Artifacts[0].Data))
	var asked []store.Artifact
	held := func(domain, id string, version int, a *store.Artifact) []byte {
		assert.Equal(t, []any{"acme", "r1", 1}, []any{domain, id, version})
		asked = append(asked, *a)
		if a.Index == 0 {
			return stand
		}
		return []byte("too long for the row")
	}
	job, err := s.ClaimDelivery(ctxT(t), "w", time.Minute, time.Now().Add(time.Second), held)
	require.NoError(t, err)
	require.Len(t, job.Artifacts, 2)
	assert.Equal(t, stand, job.Artifacts[0].Data, "taken from held")
	assert.Equal(t, r.Artifacts[1].Data, job.Artifacts[1].Data, "read from the store")
	require.Len(t, asked, 2)
	for i, a := range asked {
		assert.Equal(t, i, a.Index)
		assert.Equal(t, r.Artifacts[i].Size, a.Size)
		assert.Equal(t, r.Artifacts[i].SHA256, a.SHA256)
		assert.Nil(t, a.Data)
	}
}

func noClaim(t *testing.T, s store.Store, now time.Time) {
	t.Helper()
	r, err := s.ClaimDelivery(ctxT(t), "nobody", time.Minute, now, nil)
	if r != nil {
		t.Fatalf("claimed %s v%d, want nothing due", r.ID, r.Version)
	}
	require.ErrorIs(t, err, store.ErrNotFound)
}

func version(t *testing.T, s store.Store, domain, id string, v int) *store.Report {
	t.Helper()
	r, err := s.ReportVersion(ctxT(t), domain, id, v)
	require.NoError(t, err)
	return r
}

func pending(t *testing.T, s store.Store) int {
	t.Helper()
	n, err := s.PendingDeliveries(ctxT(t))
	require.NoError(t, err)
	return n
}

func testCreateAndRead(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	in := newReport("acme", "r1", "A1", base)
	require.NoError(t, s.CreateReport(ctx, in))
	assert.Equal(t, 1, in.Version)
	assert.Equal(t, base.Truncate(time.Microsecond), in.CreatedAt)

	got, err := s.Report(ctx, "acme", "r1")
	require.NoError(t, err)
	assert.Equal(t, "acme", got.Domain)
	assert.Equal(t, "r1", got.ID)
	assert.Equal(t, 1, got.Version)
	assert.Equal(t, "A1", got.AppointmentID)
	assert.Equal(t, "Patient/P-A1", got.PatientRef)
	assert.Equal(t, "preliminary", got.Status)
	assert.Equal(t, in.Resource, got.Resource)
	assert.Equal(t, in.Submission, got.Submission)
	assert.True(t, base.Equal(got.CreatedAt), "CreatedAt %s", got.CreatedAt)
	assert.Equal(t, time.UTC, got.CreatedAt.Location())
	assert.False(t, got.Purged)
	assert.Equal(t, store.Delivery{State: store.DeliveryPending, NextAttemptAt: in.CreatedAt}, got.Delivery)

	require.Len(t, got.Artifacts, 2)
	for i, a := range got.Artifacts {
		want := in.Artifacts[i]
		assert.Equal(t, i, a.Index)
		assert.Equal(t, want.FileName, a.FileName)
		assert.Equal(t, want.ContentType, a.ContentType)
		assert.Equal(t, int64(len(want.Data)), a.Size)
		assert.Len(t, a.SHA256, 64)
		assert.Equal(t, want.SHA256, a.SHA256, "the store fills in the hash it stores")
		assert.Nil(t, a.Data, "reads do not load artifact bytes")
		assert.Empty(t, a.QUBSGUID)
		assert.Nil(t, a.UploadedAt)
	}

	a, err := s.ReportArtifact(ctx, "acme", "r1", 1, 0)
	require.NoError(t, err)
	assert.Equal(t, in.Artifacts[0].Data, a.Data)
	assert.Equal(t, "report.pdf", a.FileName)

	v1, err := s.ReportVersion(ctx, "acme", "r1", 1)
	require.NoError(t, err)
	assert.Equal(t, got, v1)

	notFound := []struct {
		name string
		fn   func() error
	}{
		{"unknown id", func() error { _, err := s.Report(ctx, "acme", "nope"); return err }},
		{"other domain", func() error { _, err := s.Report(ctx, "other", "r1"); return err }},
		{"unknown version", func() error { _, err := s.ReportVersion(ctx, "acme", "r1", 2); return err }},
		{"unknown artifact", func() error { _, err := s.ReportArtifact(ctx, "acme", "r1", 1, 2); return err }},
	}
	for _, tt := range notFound {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.fn()
			assert.ErrorIs(t, err, store.ErrNotFound)
			assert.Equal(t, store.KindNotFound, store.KindOf(err))
		})
	}

	// A zero CreatedAt is the current time.
	before := time.Now().Add(-time.Second)
	now := create(t, s, newReport("acme", "r2", "A2", time.Time{}))
	assert.WithinRange(t, now.CreatedAt, before, time.Now().Add(time.Second))
}

func testCreateConflict(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	create(t, s, newReport("acme", "r1", "A1", base))
	err := s.CreateReport(ctx, newReport("acme", "r1", "A9", base.Add(time.Hour)))
	require.ErrorIs(t, err, store.ErrConflict)
	got, err := s.Report(ctx, "acme", "r1")
	require.NoError(t, err)
	assert.Equal(t, "A1", got.AppointmentID, "the loser changed nothing")
	assert.Equal(t, 1, pending(t, s), "the loser queued nothing")

	// Ids are per domain.
	create(t, s, newReport("northside", "r1", "A1", base))
}

// testReportWriteAudit: a write's audit record (Report.Audit) is stored
// with the write, as RecordAudits would store it, and not at all when the
// write fails.
func testReportWriteAudit(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	writeAudit := func(id string) *store.AuditRecord {
		a := auditRecord("acme", id, base)
		a.Action, a.Interaction = store.AuditActionCreate, "create"
		a.EntityRefs, a.PatientRefs = []string{"DiagnosticReport/r1"}, []string{"Patient/P-A1"}
		return a
	}
	r := newReport("acme", "r1", "A1", base)
	r.Audit = writeAudit("ae-create")
	create(t, s, r)
	got, err := s.AuditEvent(ctx, "acme", "ae-create")
	require.NoError(t, err)
	assert.Equal(t, store.AuditActionCreate, got.Action)
	assert.Equal(t, []string{"DiagnosticReport/r1"}, got.EntityRefs)
	page, _, err := s.SearchAudit(ctx, "acme", store.AuditFilter{PatientRef: "Patient/P-A1"})
	require.NoError(t, err)
	assert.Equal(t, []string{"ae-create"}, auditIDs(page), "the patient row is written too")

	loser := newReport("acme", "r1", "A1", base)
	loser.Audit = writeAudit("ae-conflict")
	require.ErrorIs(t, s.CreateReport(ctx, loser), store.ErrConflict)
	_, err = s.AuditEvent(ctx, "acme", "ae-conflict")
	assert.ErrorIs(t, err, store.ErrNotFound, "a failed write stores no record")

	next := newReport("acme", "r1", "A1", base.Add(time.Minute))
	next.Audit = writeAudit("ae-update")
	next.Audit.Action, next.Audit.Interaction = store.AuditActionUpdate, "update"
	update(t, s, next)
	_, err = s.AuditEvent(ctx, "acme", "ae-update")
	assert.NoError(t, err)

	stale := newReport("acme", "r1", "A1", base.Add(2*time.Minute))
	stale.Audit = writeAudit("ae-stale")
	require.ErrorIs(t, s.UpdateReport(ctx, stale, 1), store.ErrPrecondition)
	_, err = s.AuditEvent(ctx, "acme", "ae-stale")
	assert.ErrorIs(t, err, store.ErrNotFound, "a refused update stores no record")

	bad := newReport("acme", "r2", "A2", base)
	bad.Audit = writeAudit("ae-bad")
	bad.Audit.Action = "X"
	require.ErrorIs(t, s.CreateReport(ctx, bad), store.ErrInvalid, "an invalid record refuses the write")
	_, err = s.Report(ctx, "acme", "r2")
	assert.ErrorIs(t, err, store.ErrNotFound)
}

func testCreateInvalid(t *testing.T, s store.Store) {
	tests := []struct {
		name   string
		modify func(r *store.Report)
	}{
		{"no domain", func(r *store.Report) { r.Domain = "" }},
		{"no id", func(r *store.Report) { r.ID = "" }},
		{"no appointment", func(r *store.Report) { r.AppointmentID = "" }},
		{"no resource", func(r *store.Report) { r.Resource = nil }},
		{"no submission", func(r *store.Report) { r.Submission = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReport("acme", "r1", "A1", base)
			tt.modify(r)
			assert.ErrorIs(t, s.CreateReport(ctxT(t), r), store.ErrInvalid)
			assert.ErrorIs(t, s.UpdateReport(ctxT(t), r, 0), store.ErrInvalid)
		})
	}
	assert.ErrorIs(t, s.CreateReport(ctxT(t), nil), store.ErrInvalid)
}

func testUpdateVersions(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	create(t, s, newReport("acme", "r1", "A1", base))

	r2 := newReport("acme", "r1", "A1", base.Add(time.Minute))
	r2.Status = "final"
	r2.Resource = []byte(`{"v":2}`)
	r2.Artifacts = r2.Artifacts[:1]
	require.NoError(t, s.UpdateReport(ctx, r2, 0))
	assert.Equal(t, 2, r2.Version)

	r3 := newReport("acme", "r1", "A1", base.Add(2*time.Minute))
	r3.Status = "amended"
	r3.Artifacts = nil
	require.NoError(t, s.UpdateReport(ctx, r3, 2), "If-Match the current version")
	assert.Equal(t, 3, r3.Version)

	stale := newReport("acme", "r1", "A1", base.Add(3*time.Minute))
	err := s.UpdateReport(ctx, stale, 2)
	require.ErrorIs(t, err, store.ErrPrecondition)
	assert.Equal(t, store.KindPrecondition, store.KindOf(err))

	err = s.UpdateReport(ctx, newReport("acme", "missing", "A1", base), 0)
	require.ErrorIs(t, err, store.ErrNotFound)
	err = s.UpdateReport(ctx, newReport("acme", "missing", "A1", base), 1)
	require.ErrorIs(t, err, store.ErrNotFound, "a missing report is not found, whatever If-Match says")

	latest, err := s.Report(ctx, "acme", "r1")
	require.NoError(t, err)
	assert.Equal(t, 3, latest.Version)
	assert.Equal(t, "amended", latest.Status)
	assert.Empty(t, latest.Artifacts)
	assert.True(t, base.Add(2*time.Minute).Equal(latest.CreatedAt))

	tests := []struct {
		version   int
		status    string
		resource  string
		artifacts int
	}{
		{1, "preliminary", string(newReport("acme", "r1", "A1", base).Resource), 2},
		{2, "final", `{"v":2}`, 1},
		{3, "amended", string(r3.Resource), 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("v%d", tt.version), func(t *testing.T) {
			v := version(t, s, "acme", "r1", tt.version)
			assert.Equal(t, tt.version, v.Version)
			assert.Equal(t, tt.status, v.Status)
			assert.Equal(t, tt.resource, string(v.Resource))
			assert.Len(t, v.Artifacts, tt.artifacts)
			assert.Equal(t, store.DeliveryPending, v.Delivery.State)
		})
	}
	assert.Equal(t, 3, pending(t, s), "every version is queued")
}

func testConcurrentUpdates(t *testing.T, s store.Store) {
	create(t, s, newReport("acme", "r1", "A1", base))
	const n = 8

	// Without If-Match every update wins, each with its own version.
	var (
		mu       sync.Mutex
		versions = map[int]bool{}
		wg       sync.WaitGroup
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := newReport("acme", "r1", "A1", base.Add(time.Duration(i+1)*time.Second))
			if err := s.UpdateReport(context.Background(), r, 0); err != nil {
				t.Errorf("update %d: %v", i, err)
				return
			}
			mu.Lock()
			versions[r.Version] = true
			mu.Unlock()
		}()
	}
	wg.Wait()
	assert.Len(t, versions, n)
	for v := 2; v <= n+1; v++ {
		assert.True(t, versions[v], "version %d", v)
	}

	// With the same If-Match exactly one wins.
	var wins, preconds int
	current := n + 1
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := newReport("acme", "r1", "A1", base.Add(time.Hour+time.Duration(i)*time.Second))
			err := s.UpdateReport(context.Background(), r, current)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, store.ErrPrecondition):
				preconds++
			default:
				t.Errorf("update %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 1, wins)
	assert.Equal(t, n-1, preconds)
}

// searchFixture creates reports in domain acme (and one in another domain)
// and returns their ids in creation order.
func searchFixture(t *testing.T, s store.Store) {
	t.Helper()
	fixture := []struct {
		id, appt, patient, status string
	}{
		{"r1", "A1", "Patient/1", "preliminary"},
		{"r2", "A2", "Patient/1", "final"},
		{"r3", "A3", "Patient/2", "final"},
		{"r4", "A3", "Patient/2", "preliminary"},
		{"r5", "A5", "", "amended"},
	}
	for i, f := range fixture {
		r := newReport("acme", f.id, f.appt, base.Add(time.Duration(i)*time.Minute))
		r.PatientRef, r.Status = f.patient, f.status
		create(t, s, r)
	}
	other := newReport("northside", "r1", "A1", base)
	other.PatientRef = "Patient/1"
	create(t, s, other)
}

func ids(rs []*store.Report) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

func testSearch(t *testing.T, s store.Store) {
	searchFixture(t, s)
	// r4 becomes final in version 2: filters apply to the latest version.
	r4 := newReport("acme", "r4", "A3", base.Add(time.Hour))
	r4.PatientRef, r4.Status = "Patient/2", "final"
	update(t, s, r4)

	tests := []struct {
		name string
		f    store.ReportFilter
		want []string
	}{
		{"all", store.ReportFilter{}, []string{"r1", "r2", "r3", "r4", "r5"}},
		{"appointment", store.ReportFilter{AppointmentIDs: []string{"A3"}}, []string{"r3", "r4"}},
		{"appointments", store.ReportFilter{AppointmentIDs: []string{"A1", "A5"}}, []string{"r1", "r5"}},
		{"patient", store.ReportFilter{PatientRefs: []string{"Patient/1"}}, []string{"r1", "r2"}},
		{"status of latest version", store.ReportFilter{Statuses: []string{"final"}}, []string{"r2", "r3", "r4"}},
		{"statuses", store.ReportFilter{Statuses: []string{"preliminary", "amended"}}, []string{"r1", "r5"}},
		{"and", store.ReportFilter{PatientRefs: []string{"Patient/2"}, Statuses: []string{"final"}}, []string{"r3", "r4"}},
		{"none", store.ReportFilter{AppointmentIDs: []string{"A404"}}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, next, err := s.SearchReports(ctxT(t), "acme", tt.f)
			require.NoError(t, err)
			assert.Equal(t, tt.want, ids(got))
			assert.Empty(t, next)
			for _, r := range got {
				if r.ID == "r4" {
					assert.Equal(t, 2, r.Version, "latest version only")
				}
				assert.Len(t, r.Artifacts, 2)
				for _, a := range r.Artifacts {
					assert.Nil(t, a.Data)
					assert.NotEmpty(t, a.SHA256)
				}
			}
		})
	}

	_, _, err := s.SearchReports(ctxT(t), "acme", store.ReportFilter{After: "garbage"})
	assert.ErrorIs(t, err, store.ErrInvalid)
	got, _, err := s.SearchReports(ctxT(t), "empty-domain", store.ReportFilter{})
	require.NoError(t, err)
	assert.Empty(t, got)
}

func testSearchPaging(t *testing.T, s store.Store) {
	searchFixture(t, s)
	// Two reports created at the same instant: the id breaks the tie.
	create(t, s, newReport("acme", "r0b", "A6", base.Add(10*time.Minute)))
	create(t, s, newReport("acme", "r0a", "A7", base.Add(10*time.Minute)))
	want := []string{"r1", "r2", "r3", "r4", "r5", "r0a", "r0b"}

	for _, limit := range []int{1, 2, 3, 7, 100} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			var (
				all   []string
				after string
				pages int
			)
			for {
				page, next, err := s.SearchReports(ctxT(t), "acme", store.ReportFilter{Limit: limit, After: after})
				require.NoError(t, err)
				require.LessOrEqual(t, len(page), limit)
				all = append(all, ids(page)...)
				pages++
				require.Less(t, pages, 20, "paging does not end")
				if next == "" {
					break
				}
				// An update between pages neither repeats nor loses a report.
				if pages == 1 {
					update(t, s, newReport("acme", "r1", "A1", base.Add(time.Hour)))
				}
				after = next
			}
			assert.Equal(t, want, all)
			assert.Equal(t, (len(want)+limit-1)/limit, pages, "no empty last page")
		})
	}

	// Filtered paging continues the filter.
	page, next, err := s.SearchReports(ctxT(t), "acme", store.ReportFilter{Statuses: []string{"final"}, Limit: 1})
	require.NoError(t, err)
	assert.Equal(t, []string{"r2"}, ids(page))
	page, next, err = s.SearchReports(ctxT(t), "acme", store.ReportFilter{Statuses: []string{"final"}, Limit: 1, After: next})
	require.NoError(t, err)
	assert.Equal(t, []string{"r3"}, ids(page))
	assert.Empty(t, next)
}

func testDeliveryLifecycle(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	noClaim(t, s, base)
	in := create(t, s, newReport("acme", "r1", "A1", base))
	assert.Equal(t, 1, pending(t, s))
	noClaim(t, s, base.Add(-time.Second)) // not due yet

	now := base.Add(time.Second)
	job := claim(t, s, "w1", now)
	assert.Equal(t, "acme", job.Domain)
	assert.Equal(t, "r1", job.ID)
	assert.Equal(t, 1, job.Version)
	assert.Equal(t, in.Submission, job.Submission)
	assert.Equal(t, store.DeliveryPending, job.Delivery.State)
	assert.Equal(t, 1, job.Delivery.Attempts)
	assert.Equal(t, "w1", job.Delivery.LeasedBy)
	require.NotNil(t, job.Delivery.LeaseUntil)
	assert.True(t, now.Add(time.Minute).Truncate(time.Microsecond).Equal(*job.Delivery.LeaseUntil))
	require.Len(t, job.Artifacts, 2)
	assert.Equal(t, in.Artifacts[0].Data, job.Artifacts[0].Data, "a claim loads the bytes to upload")
	assert.Equal(t, in.Artifacts[1].Data, job.Artifacts[1].Data)

	// Leased: nobody else gets it, and reads show the lease.
	noClaim(t, s, now.Add(59*time.Second))
	got, err := s.Report(ctx, "acme", "r1")
	require.NoError(t, err)
	assert.Equal(t, "w1", got.Delivery.LeasedBy)
	assert.Equal(t, 1, pending(t, s), "a leased job is still pending")

	at := now.Add(5 * time.Second)
	require.NoError(t, s.CompleteDelivery(ctx, "w1", "acme", "r1", 1, "guid-1", at))
	got, err = s.Report(ctx, "acme", "r1")
	require.NoError(t, err)
	assert.Equal(t, store.DeliveryDelivered, got.Delivery.State)
	assert.Equal(t, "guid-1", got.Delivery.ReportGUID)
	require.NotNil(t, got.Delivery.DeliveredAt)
	assert.True(t, at.Equal(*got.Delivery.DeliveredAt))
	assert.Empty(t, got.Delivery.LeasedBy, "completion releases the lease")
	assert.Nil(t, got.Delivery.LeaseUntil)
	assert.Equal(t, 0, pending(t, s))
	noClaim(t, s, now.Add(time.Hour))

	// Completing again (a worker retrying its own call) is harmless.
	require.NoError(t, s.CompleteDelivery(ctx, "w1", "acme", "r1", 1, "guid-1", at))
}

func testClaimOrder(t *testing.T, s store.Store) {
	// Due longest first, whatever the creation order; future jobs wait.
	late := newReport("acme", "late", "A1", base)
	late.Delivery.NextAttemptAt = base.Add(time.Hour)
	create(t, s, late)
	create(t, s, newReport("acme", "second", "A2", base.Add(2*time.Second)))
	create(t, s, newReport("acme", "first", "A3", base.Add(time.Second)))
	create(t, s, newReport("northside", "third", "A4", base.Add(3*time.Second)))

	now := base.Add(time.Minute)
	var got []string
	for range 3 {
		job := claim(t, s, "w", now)
		got = append(got, job.ID)
		require.NoError(t, s.CompleteDelivery(ctxT(t), "w", job.Domain, job.ID, job.Version, "g", now))
	}
	assert.Equal(t, []string{"first", "second", "third"}, got)
	noClaim(t, s, now)
	assert.Equal(t, "late", claim(t, s, "w", base.Add(time.Hour)).ID)
}

func testLeaseExpiryTakeover(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	create(t, s, newReport("acme", "r1", "A1", base))
	a := claim(t, s, "worker-a", base)
	assert.Equal(t, 1, a.Delivery.Attempts)

	noClaim(t, s, base.Add(time.Minute-time.Microsecond))
	// The lease ends at base+1m: worker A crashed, B takes over.
	b := claim(t, s, "worker-b", base.Add(time.Minute))
	assert.Equal(t, 1, b.Version)
	assert.Equal(t, 2, b.Delivery.Attempts, "attempts count the crashed one")
	assert.Equal(t, "worker-b", b.Delivery.LeasedBy)
	assert.Equal(t, a.Artifacts[0].Data, b.Artifacts[0].Data)
	noClaim(t, s, base.Add(90*time.Second))

	require.NoError(t, s.CompleteDelivery(ctx, "worker-b", "acme", "r1", 1, "guid", base.Add(100*time.Second)))
	assert.Equal(t, 0, pending(t, s))
}

func testVersionOrdering(t *testing.T, s store.Store) {
	t.Run("pending versions are superseded by the newest", func(t *testing.T) {
		ctx := ctxT(t)
		create(t, s, newReport("acme", "a", "A1", base))
		update(t, s, newReport("acme", "a", "A1", base.Add(time.Second)))
		update(t, s, newReport("acme", "a", "A1", base.Add(2*time.Second)))
		assert.Equal(t, 3, pending(t, s))

		job := claim(t, s, "w", base.Add(time.Minute))
		assert.Equal(t, 3, job.Version, "the newest version goes; QUBS keeps only the latest")
		for _, v := range []int{1, 2} {
			old := version(t, s, "acme", "a", v)
			assert.Equal(t, store.DeliverySuperseded, old.Delivery.State, "v%d", v)
			assert.Equal(t, "superseded by report a version 3", old.Delivery.LastError)
			assert.Equal(t, 0, old.Delivery.Attempts, "never sent")
		}
		assert.Equal(t, 1, pending(t, s))
		noClaim(t, s, base.Add(time.Minute))
		require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", "a", 3, "g3", base.Add(time.Minute)))
		noClaim(t, s, base.Add(time.Hour))
	})

	t.Run("a leased version is not overtaken", func(t *testing.T) {
		ctx := ctxT(t)
		create(t, s, newReport("acme", "b", "B1", base))
		v1 := claim(t, s, "w1", base)
		require.Equal(t, 1, v1.Version)

		final := newReport("acme", "b", "B1", base.Add(time.Second))
		final.Status = "final"
		update(t, s, final)
		noClaim(t, s, base.Add(30*time.Second))
		assert.Equal(t, store.DeliveryPending, version(t, s, "acme", "b", 1).Delivery.State,
			"a leased version is never superseded")

		require.NoError(t, s.CompleteDelivery(ctx, "w1", "acme", "b", 1, "g1", base.Add(40*time.Second)))
		v2 := claim(t, s, "w2", base.Add(41*time.Second))
		assert.Equal(t, 2, v2.Version, "the final goes after the preliminary")
		assert.Equal(t, "final", v2.Status)
		require.NoError(t, s.CompleteDelivery(ctx, "w2", "acme", "b", 2, "g2", base.Add(42*time.Second)))
		assert.Equal(t, store.DeliveryDelivered, version(t, s, "acme", "b", 1).Delivery.State)
	})

	t.Run("a retried version is superseded by a newer one", func(t *testing.T) {
		ctx := ctxT(t)
		create(t, s, newReport("acme", "c", "C1", base))
		claim(t, s, "w1", base)
		require.NoError(t, s.RetryDelivery(ctx, "w1", "acme", "c", 1, "qubs: transient (HTTP 503)", base.Add(time.Hour)))
		update(t, s, newReport("acme", "c", "C1", base.Add(time.Second)))

		job := claim(t, s, "w2", base.Add(2*time.Second))
		assert.Equal(t, 2, job.Version, "due now, not after v1's backoff")
		assert.Equal(t, store.DeliverySuperseded, version(t, s, "acme", "c", 1).Delivery.State)
		require.NoError(t, s.CompleteDelivery(ctx, "w2", "acme", "c", 2, "g2", base.Add(3*time.Second)))
	})

	t.Run("an expired lease loses to a newer version", func(t *testing.T) {
		ctx := ctxT(t)
		create(t, s, newReport("acme", "d", "D1", base))
		claim(t, s, "slow", base)
		update(t, s, newReport("acme", "d", "D1", base.Add(time.Second)))

		job := claim(t, s, "fast", base.Add(time.Minute))
		assert.Equal(t, 2, job.Version)
		// The slow worker overran its lease; its late calls are refused.
		err := s.CompleteDelivery(ctx, "slow", "acme", "d", 1, "g1", base.Add(2*time.Minute))
		assert.ErrorIs(t, err, store.ErrConflict)
		assert.ErrorIs(t, s.RetryDelivery(ctx, "slow", "acme", "d", 1, "x", base), store.ErrConflict)
		assert.ErrorIs(t, s.RecordUpload(ctx, "slow", "acme", "d", 1, 0, "g", base), store.ErrConflict)
		// And the fast worker's lease is intact.
		got := version(t, s, "acme", "d", 2)
		assert.Equal(t, "fast", got.Delivery.LeasedBy)
		noClaim(t, s, base.Add(90*time.Second))
	})

	t.Run("a version newer than the delivered one waits its turn", func(t *testing.T) {
		ctx := ctxT(t)
		create(t, s, newReport("acme", "e", "E1", base))
		claim(t, s, "w", base)
		update(t, s, newReport("acme", "e", "E1", base.Add(time.Second)))
		require.NoError(t, s.FailDelivery(ctx, "w", "acme", "e", 1, "qubs: invalid (HTTP 422)"))
		job := claim(t, s, "w", base.Add(2*time.Second))
		assert.Equal(t, 2, job.Version, "failing v1 releases v2")
	})
}

func testRetry(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	create(t, s, newReport("acme", "r1", "A1", base))
	claim(t, s, "w1", base)
	next := base.Add(30 * time.Second)
	require.NoError(t, s.RetryDelivery(ctx, "w1", "acme", "r1", 1, "qubs: transient (HTTP 503)", next))

	got := version(t, s, "acme", "r1", 1)
	assert.Equal(t, store.DeliveryPending, got.Delivery.State)
	assert.Equal(t, "qubs: transient (HTTP 503)", got.Delivery.LastError)
	assert.True(t, next.Equal(got.Delivery.NextAttemptAt))
	assert.Empty(t, got.Delivery.LeasedBy, "a retry releases the lease")
	assert.Equal(t, 1, pending(t, s))

	noClaim(t, s, next.Add(-time.Microsecond))
	job := claim(t, s, "w2", next)
	assert.Equal(t, 2, job.Delivery.Attempts)
	assert.Equal(t, "qubs: transient (HTTP 503)", job.Delivery.LastError)
}

func testFail(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	create(t, s, newReport("acme", "r1", "A1", base))
	claim(t, s, "w1", base)
	require.NoError(t, s.FailDelivery(ctx, "w1", "acme", "r1", 1, "qubs: not found (HTTP 404)"))
	got := version(t, s, "acme", "r1", 1)
	assert.Equal(t, store.DeliveryFailed, got.Delivery.State)
	assert.Equal(t, "qubs: not found (HTTP 404)", got.Delivery.LastError)
	assert.Empty(t, got.Delivery.LeasedBy)
	assert.Equal(t, 0, pending(t, s))
	noClaim(t, s, base.Add(time.Hour))
	require.NoError(t, s.FailDelivery(ctx, "w1", "acme", "r1", 1, "again"), "failing twice is harmless")
	assert.ErrorIs(t, s.CompleteDelivery(ctx, "w1", "acme", "r1", 1, "g", base), store.ErrConflict)

	// A failed version never blocks the next one.
	update(t, s, newReport("acme", "r1", "A1", base.Add(time.Minute)))
	assert.Equal(t, 2, claim(t, s, "w", base.Add(time.Minute)).Version)
}

func testRecordUpload(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	create(t, s, newReport("acme", "r1", "A1", base))
	claim(t, s, "w1", base)
	at := base.Add(3 * time.Second)
	require.NoError(t, s.RecordUpload(ctx, "w1", "acme", "r1", 1, 0, "att-guid-0", at))
	require.NoError(t, s.RetryDelivery(ctx, "w1", "acme", "r1", 1, "qubs: transient", base.Add(10*time.Second)))

	// The retry (maybe in another replica) sees which uploads are done.
	job := claim(t, s, "w2", base.Add(10*time.Second))
	require.Len(t, job.Artifacts, 2)
	assert.Equal(t, "att-guid-0", job.Artifacts[0].QUBSGUID)
	require.NotNil(t, job.Artifacts[0].UploadedAt)
	assert.True(t, at.Equal(*job.Artifacts[0].UploadedAt))
	assert.Empty(t, job.Artifacts[1].QUBSGUID)
	assert.Nil(t, job.Artifacts[1].UploadedAt)

	// Recording again overwrites (a fresh upload URL after expiry).
	require.NoError(t, s.RecordUpload(ctx, "w2", "acme", "r1", 1, 0, "att-guid-0b", at))
	a, err := s.ReportArtifact(ctx, "acme", "r1", 1, 0)
	require.NoError(t, err)
	assert.Equal(t, "att-guid-0b", a.QUBSGUID)

	assert.ErrorIs(t, s.RecordUpload(ctx, "w2", "acme", "r1", 1, 2, "g", at), store.ErrNotFound)
	assert.ErrorIs(t, s.RecordUpload(ctx, "w2", "acme", "r1", 2, 0, "g", at), store.ErrNotFound)
	assert.ErrorIs(t, s.RecordUpload(ctx, "w2", "acme", "nope", 1, 0, "g", at), store.ErrNotFound)

	// A new version starts with nothing uploaded, even from a copied slice.
	r2 := newReport("acme", "r1", "A1", base.Add(time.Minute))
	r2.Artifacts = job.Artifacts
	update(t, s, r2)
	assert.Empty(t, version(t, s, "acme", "r1", 2).Artifacts[0].QUBSGUID)
}

func testFinishErrors(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	create(t, s, newReport("acme", "r1", "A1", base))
	claim(t, s, "w", base)
	require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", "r1", 1, "g", base))

	tests := []struct {
		name string
		err  error
		want error
	}{
		{"complete unknown report", s.CompleteDelivery(ctx, "w", "acme", "nope", 1, "g", base), store.ErrNotFound},
		{"complete unknown version", s.CompleteDelivery(ctx, "w", "acme", "r1", 7, "g", base), store.ErrNotFound},
		{"retry unknown", s.RetryDelivery(ctx, "w", "acme", "nope", 1, "e", base), store.ErrNotFound},
		{"fail unknown", s.FailDelivery(ctx, "w", "acme", "nope", 1, "e"), store.ErrNotFound},
		{"retry delivered", s.RetryDelivery(ctx, "w", "acme", "r1", 1, "e", base), store.ErrConflict},
		{"fail delivered", s.FailDelivery(ctx, "w", "acme", "r1", 1, "e"), store.ErrConflict},
		{"upload delivered", s.RecordUpload(ctx, "w", "acme", "r1", 1, 0, "g", base), store.ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.ErrorIs(t, tt.err, tt.want)
		})
	}
	_, err := s.ClaimDelivery(ctx, "", time.Minute, base, nil)
	assert.ErrorIs(t, err, store.ErrInvalid)
	_, err = s.ClaimDelivery(ctx, "w", 0, base, nil)
	assert.ErrorIs(t, err, store.ErrInvalid)
}

// claimAll has workers goroutines claim from stores (round robin) at now
// until nothing is due, and returns how often each job was claimed.
func claimAll(t *testing.T, stores []store.Store, workers int, now time.Time) map[string]int {
	t.Helper()
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		wg     sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[w%len(stores)]
			name := fmt.Sprintf("worker-%d", w)
			for {
				job, err := s.ClaimDelivery(context.Background(), name, time.Minute, now, nil)
				if errors.Is(err, store.ErrNotFound) {
					return
				}
				if err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
				if job.Delivery.LeasedBy != name {
					t.Errorf("%s got a job leased by %q", name, job.Delivery.LeasedBy)
				}
				mu.Lock()
				counts[fmt.Sprintf("%s/%s/v%d", job.Domain, job.ID, job.Version)]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return counts
}

// queueJobs creates n reports, every third with a second version.
func queueJobs(t *testing.T, s store.Store, n int) map[string]int {
	t.Helper()
	want := map[string]int{}
	for i := range n {
		id := fmt.Sprintf("r%02d", i)
		r := create(t, s, newReport("acme", id, "A"+id, base.Add(time.Duration(i)*time.Millisecond)))
		if i%3 == 0 {
			r = update(t, s, newReport("acme", id, "A"+id, base.Add(time.Second)))
		}
		want[fmt.Sprintf("acme/%s/v%d", id, r.Version)] = 1
	}
	return want
}

func testConcurrentClaims(t *testing.T, s store.Store) {
	want := queueJobs(t, s, 24)
	now := base.Add(time.Minute)
	assert.Equal(t, want, claimAll(t, []store.Store{s}, 6, now), "each job claimed exactly once while leased")
	// All leases expire: each job is taken over exactly once.
	assert.Equal(t, want, claimAll(t, []store.Store{s}, 6, now.Add(time.Minute)))
}

func testIdempotency(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	rec := &store.IdempotencyRecord{
		Domain: "acme", Scope: "DiagnosticReport:create", Key: "k1",
		RequestHash: "h1", ResourceType: "DiagnosticReport", ResourceID: "r1", Version: 1, CreatedAt: base,
	}
	existing, err := s.ClaimIdempotency(ctx, rec)
	require.NoError(t, err)
	assert.Nil(t, existing, "the first claim inserts")

	again := *rec
	again.RequestHash, again.ResourceID = "h2", "r2"
	existing, err = s.ClaimIdempotency(ctx, &again)
	require.NoError(t, err)
	require.NotNil(t, existing)
	assert.Equal(t, *rec, *existing, "the second gets the first's record to replay or refuse")

	tests := []struct {
		name   string
		modify func(r *store.IdempotencyRecord)
	}{
		{"other key", func(r *store.IdempotencyRecord) { r.Key = "k2" }},
		{"other scope", func(r *store.IdempotencyRecord) { r.Scope = "Communication:create" }},
		{"other domain", func(r *store.IdempotencyRecord) { r.Domain = "northside" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := *rec
			tt.modify(&r)
			existing, err := s.ClaimIdempotency(ctxT(t), &r)
			require.NoError(t, err)
			assert.Nil(t, existing)
		})
	}

	_, err = s.ClaimIdempotency(ctx, &store.IdempotencyRecord{Domain: "acme", Scope: "x"})
	assert.ErrorIs(t, err, store.ErrInvalid)

	zero := &store.IdempotencyRecord{Domain: "acme", Scope: "x", Key: "now"}
	_, err = s.ClaimIdempotency(ctx, zero)
	require.NoError(t, err)
	assert.False(t, zero.CreatedAt.IsZero())
}

// raceIdempotency has n goroutines claim one key on stores (round robin),
// each naming another resource, and checks there is one winner that all
// others see.
func raceIdempotency(t *testing.T, stores []store.Store, n int) {
	t.Helper()
	var (
		mu      sync.Mutex
		winners []string
		seen    = map[string]int{}
		wg      sync.WaitGroup
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := &store.IdempotencyRecord{Domain: "acme", Scope: "DiagnosticReport:create", Key: "race",
				RequestHash: "h", ResourceType: "DiagnosticReport", ResourceID: fmt.Sprintf("r%d", i)}
			existing, err := stores[i%len(stores)].ClaimIdempotency(context.Background(), rec)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Errorf("claim %d: %v", i, err)
			case existing == nil:
				winners = append(winners, rec.ResourceID)
			default:
				seen[existing.ResourceID]++
			}
		}()
	}
	wg.Wait()
	require.Len(t, winners, 1, "exactly one claim inserts")
	assert.Equal(t, map[string]int{winners[0]: n - 1}, seen, "every other claim gets the winner's record")
}

func testIdempotencyRace(t *testing.T, s store.Store) {
	raceIdempotency(t, []store.Store{s}, 12)
}

func testBinaries(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	b := &store.Binary{Domain: "acme", ID: "b1", ContentType: "application/pdf", Data: []byte("%PDF " + phi), CreatedAt: base}
	require.NoError(t, s.CreateBinary(ctx, b))
	assert.Equal(t, int64(len(b.Data)), b.Size)
	assert.Len(t, b.SHA256, 64)

	got, err := s.Binary(ctx, "acme", "b1")
	require.NoError(t, err)
	assert.Equal(t, b, got)

	assert.ErrorIs(t, s.CreateBinary(ctx, &store.Binary{Domain: "acme", ID: "b1", Data: []byte("x")}), store.ErrConflict)
	assert.ErrorIs(t, s.CreateBinary(ctx, &store.Binary{Domain: "acme"}), store.ErrInvalid)
	_, err = s.Binary(ctx, "acme", "b2")
	assert.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.Binary(ctx, "northside", "b1")
	assert.ErrorIs(t, err, store.ErrNotFound)
}

// testArtifactBinaries: artifacts stored with a BinaryID are found by it,
// bytes and report included, in the newest version that has them; purged
// bytes are gone but the binary still answers.
func testArtifactBinaries(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	old := base.Add(-48 * time.Hour)
	r := newReport("acme", "rb", "AB1", old)
	r.Artifacts[0].BinaryID = "dra-1"
	create(t, s, r)
	got, err := s.ArtifactBinary(ctx, "acme", "dra-1")
	require.NoError(t, err)
	assert.Equal(t, "rb", got.ReportID)
	assert.Equal(t, 1, got.Version)
	assert.Equal(t, "Patient/P-AB1", got.PatientRef)
	assert.False(t, got.Purged)
	assert.True(t, old.Equal(got.CreatedAt))
	assert.Equal(t, r.Artifacts[0].Data, got.Artifact.Data)
	assert.Equal(t, "application/pdf", got.Artifact.ContentType)
	assert.Equal(t, r.Artifacts[0].SHA256, got.Artifact.SHA256)
	assert.Equal(t, int64(len(r.Artifacts[0].Data)), got.Artifact.Size)
	assert.Equal(t, "dra-1", got.Artifact.BinaryID)
	assert.Equal(t, "dra-1", version(t, s, "acme", "rb", 1).Artifacts[0].BinaryID, "reads carry the binary id")
	assert.Empty(t, version(t, s, "acme", "rb", 1).Artifacts[1].BinaryID)

	// A second version keeping the bytes: the binary is the newest's.
	r2 := newReport("acme", "rb", "AB1", base)
	r2.Artifacts[0].BinaryID = "dra-1"
	update(t, s, r2)
	got, err = s.ArtifactBinary(ctx, "acme", "dra-1")
	require.NoError(t, err)
	assert.Equal(t, 2, got.Version)

	for _, tt := range []struct{ domain, id string }{{"acme", "dra-2"}, {"other", "dra-1"}, {"acme", ""}} {
		_, err := s.ArtifactBinary(ctx, tt.domain, tt.id)
		assert.ErrorIs(t, err, store.ErrNotFound, "%s/%s", tt.domain, tt.id)
	}

	// Retention: only a version no longer pending is purged.
	claim(t, s, "w", base)
	require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", "rb", 2, "guid", base))
	_, err = s.PurgeBefore(ctx, base.Add(time.Hour))
	require.NoError(t, err)
	got, err = s.ArtifactBinary(ctx, "acme", "dra-1")
	require.NoError(t, err)
	assert.True(t, got.Purged)
	assert.Nil(t, got.Artifact.Data)
}

func testPurge(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	old := base.Add(-48 * time.Hour)
	cutoff := base.Add(-24 * time.Hour)

	// Old and delivered: purged. Old and failed: purged. Old and still
	// pending: kept until delivered. New: kept.
	create(t, s, newReport("acme", "delivered", "A1", old))
	claim(t, s, "w", old)
	require.NoError(t, s.RecordUpload(ctx, "w", "acme", "delivered", 1, 0, "att-0", old))
	require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", "delivered", 1, "guid-d", old))
	create(t, s, newReport("acme", "failed", "A2", old.Add(time.Second)))
	claim(t, s, "w", old.Add(time.Second))
	require.NoError(t, s.FailDelivery(ctx, "w", "acme", "failed", 1, "qubs: invalid"))
	create(t, s, newReport("acme", "stuck", "A3", old.Add(2*time.Second)))
	create(t, s, newReport("acme", "fresh", "A4", base))

	require.NoError(t, s.CreateBinary(ctx, &store.Binary{Domain: "acme", ID: "b-old", Data: []byte(phi), CreatedAt: old}))
	require.NoError(t, s.CreateBinary(ctx, &store.Binary{Domain: "acme", ID: "b-new", Data: []byte(phi), CreatedAt: base}))

	n, err := s.PurgeBefore(ctx, cutoff)
	require.NoError(t, err)
	assert.Equal(t, 3, n, "2 report versions, 1 binary")

	for _, id := range []string{"delivered", "failed"} {
		t.Run(id, func(t *testing.T) {
			r, err := s.Report(ctxT(t), "acme", id)
			require.NoError(t, err, "a purged report still answers")
			assert.True(t, r.Purged)
			assert.Nil(t, r.Resource)
			assert.Nil(t, r.Submission)
			assert.Equal(t, 1, r.Version)
			assert.NotEmpty(t, r.AppointmentID)
			assert.NotEqual(t, store.DeliveryPending, r.Delivery.State, "the delivery state is kept")
			require.Len(t, r.Artifacts, 2)
			for _, a := range r.Artifacts {
				assert.Len(t, a.SHA256, 64, "hashes are kept")
				assert.NotZero(t, a.Size)
				full, err := s.ReportArtifact(ctxT(t), "acme", id, 1, a.Index)
				require.NoError(t, err)
				assert.Nil(t, full.Data, "artifact bytes are gone")
			}
		})
	}
	d, err := s.Report(ctx, "acme", "delivered")
	require.NoError(t, err)
	assert.Equal(t, "guid-d", d.Delivery.ReportGUID)
	assert.Equal(t, "att-0", d.Artifacts[0].QUBSGUID)

	for _, id := range []string{"stuck", "fresh"} {
		r, err := s.Report(ctx, "acme", id)
		require.NoError(t, err)
		assert.False(t, r.Purged, id)
		assert.Contains(t, string(r.Submission), phi, id)
	}

	b, err := s.Binary(ctx, "acme", "b-old")
	require.NoError(t, err)
	assert.True(t, b.Purged)
	assert.Nil(t, b.Data)
	assert.Equal(t, int64(len(phi)), b.Size)
	b, err = s.Binary(ctx, "acme", "b-new")
	require.NoError(t, err)
	assert.False(t, b.Purged)
	assert.Equal(t, []byte(phi), b.Data)

	// Nothing purged is delivered again; the pending one still is.
	job := claim(t, s, "w", base.Add(time.Hour))
	assert.Equal(t, "stuck", job.ID)
	assert.Contains(t, string(job.Submission), phi)
	assert.NotNil(t, job.Artifacts[0].Data)
	job = claim(t, s, "w", base.Add(time.Hour))
	assert.Equal(t, "fresh", job.ID)
	noClaim(t, s, base.Add(time.Hour))

	n, err = s.PurgeBefore(ctx, cutoff)
	require.NoError(t, err)
	assert.Equal(t, 0, n, "purging is idempotent")

	// Once the stuck one is delivered, the next purge takes it.
	require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", "stuck", 1, "g", base.Add(time.Hour)))
	n, err = s.PurgeBefore(ctx, cutoff)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	a, err := s.ReportArtifact(ctx, "acme", "stuck", 1, 0)
	require.NoError(t, err)
	assert.Nil(t, a.Data)
}

func testPing(t *testing.T, s store.Store) {
	require.NoError(t, s.Ping(ctxT(t)))
}

func testErrorsCarryNoPHI(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	create(t, s, newReport("acme", "r1", "A1", base))
	errs := []error{
		s.CreateReport(ctx, newReport("acme", "r1", "A1", base)),
		s.UpdateReport(ctx, newReport("acme", "r1", "A1", base), 9),
		s.UpdateReport(ctx, newReport("acme", "r2", "A1", base), 0),
		s.CreateBinary(ctx, &store.Binary{Domain: "acme", ID: "", Data: []byte(phi)}),
	}
	for i, err := range errs {
		require.Error(t, err, "call %d", i)
		msg := err.Error()
		assert.NotContains(t, msg, phi, "call %d", i)
		assert.True(t, strings.Contains(msg, "."), "call %d names its operation: %s", i, msg)
	}
	var e *store.Error
	require.ErrorAs(t, errs[0], &e)
	assert.Contains(t, e.Op, `"r1"`, "ids are named, they are not PHI")
}

func testOpenTwice(t *testing.T, open func(ctx context.Context) (store.Store, error)) {
	ctx := ctxT(t)
	s1, err := open(ctx)
	require.NoError(t, err)
	create(t, s1, newReport("acme", "r1", "A1", base))
	require.NoError(t, s1.Close())

	s2, err := open(ctx)
	require.NoError(t, err, "migrations are applied once and skipped after")
	defer s2.Close()
	r, err := s2.Report(ctx, "acme", "r1")
	require.NoError(t, err, "data survives a reopen")
	assert.Equal(t, 1, r.Version)
	assert.Equal(t, 1, pending(t, s2), "so does the queue")
}

func testConcurrentOpen(t *testing.T, open func(ctx context.Context) (store.Store, error)) {
	const n = 4
	stores := make([]store.Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = open(context.Background())
		}()
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i], "open %d", i)
		defer stores[i].Close()
	}
	// Every replica works on the one schema.
	for i, s := range stores {
		create(t, s, newReport("acme", fmt.Sprintf("r%d", i), "A1", base))
	}
	assert.Equal(t, n, pending(t, stores[0]))
}

func testReplicasClaim(t *testing.T, open func(ctx context.Context) (store.Store, error)) {
	var stores []store.Store
	for range 3 {
		s, err := open(ctxT(t))
		require.NoError(t, err)
		defer s.Close()
		stores = append(stores, s)
	}
	want := queueJobs(t, stores[0], 24)
	now := base.Add(time.Minute)
	assert.Equal(t, want, claimAll(t, stores, 6, now), "each job claimed once across replicas")
	assert.Equal(t, want, claimAll(t, stores, 6, now.Add(time.Minute)), "each expired lease taken over once")
}

func testReplicasIdempotency(t *testing.T, open func(ctx context.Context) (store.Store, error)) {
	var stores []store.Store
	for range 3 {
		s, err := open(ctxT(t))
		require.NoError(t, err)
		defer s.Close()
		stores = append(stores, s)
	}
	raceIdempotency(t, stores, 12)
}
