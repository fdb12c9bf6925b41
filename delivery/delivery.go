// Package delivery moves accepted DiagnosticReport versions from the store
// to QUBS, exactly once, whatever QUBS does meanwhile.
//
// A Worker claims one due version at a time under a lease, uploads its
// artifacts (create upload URLs, then one PUT each), submits the report,
// and records the reportGuid. Every QUBS call carries an Idempotency-Key
// derived from (domain, report id, version), so a retry after a lost
// answer, by this worker, another one or another replica, replays the
// original QUBS response instead of creating a second report or a second
// attachment. Uploads that succeeded are recorded one by one and skipped
// on retry. Transient failures (QUBS down, slow, throttling) are retried
// with backoff; permanent ones (appointment no longer pending, payload
// refused) mark the version failed.
//
// The window this cannot close: QUBS keeps upload-URL keys 15 minutes and
// report keys 24 hours. A worker that crashes after a PUT succeeded but
// before it recorded the upload, and whose job is retried after the 15
// minutes, uploads that artifact again. Reports are given up (failed)
// before their key's 24 hours run out, so a submission is never sent
// twice.
package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// QUBS is the part of the QUBS client delivery uses.
type QUBS interface {
	CreateUploadURLs(ctx context.Context, domain, appointmentID string, in qubs.UploadRequest, idempotencyKey string) (*qubs.UploadURLs, error)
	Upload(ctx context.Context, u qubs.UploadURL, contentType string, size int64, body io.Reader) error
	SubmitReport(ctx context.Context, domain, appointmentID string, in qubs.ReportSubmission, idempotencyKey string) (*qubs.ReportReceipt, error)
}

var _ QUBS = (*qubs.Client)(nil)

// Defaults of Worker.
const (
	DefaultLease        = 2 * time.Minute
	DefaultPollInterval = 2 * time.Second
	DefaultMaxBackoff   = 5 * time.Minute
	// DefaultGiveUpAfter stays inside the 24 hours QUBS keeps report
	// idempotency keys, with room for one last attempt's lease.
	DefaultGiveUpAfter = 23 * time.Hour
)

// Worker delivers report versions. Several workers (in one process or in
// several replicas sharing a PostgreSQL store) may run at once.
type Worker struct {
	Store  store.Store
	QUBS   QUBS
	Logger *slog.Logger
	// Name identifies the worker in leases; it must be unique per worker.
	Name string
	// Lease bounds one delivery attempt; a crashed worker's job is taken
	// over after it.
	Lease        time.Duration
	PollInterval time.Duration
	MaxBackoff   time.Duration
	GiveUpAfter  time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	kick chan struct{}
}

func (w *Worker) defaults() {
	if w.Logger == nil {
		w.Logger = slog.New(slog.DiscardHandler)
	}
	if w.Name == "" {
		w.Name = "worker-" + strconv.FormatUint(rand.Uint64(), 36)
	}
	if w.Lease == 0 {
		w.Lease = DefaultLease
	}
	if w.PollInterval == 0 {
		w.PollInterval = DefaultPollInterval
	}
	if w.MaxBackoff == 0 {
		w.MaxBackoff = DefaultMaxBackoff
	}
	if w.GiveUpAfter == 0 {
		w.GiveUpAfter = DefaultGiveUpAfter
	}
	if w.Now == nil {
		w.Now = time.Now
	}
	if w.kick == nil {
		w.kick = make(chan struct{}, 1)
	}
}

// Kick wakes the worker at once, so that a report accepted a moment ago is
// delivered without waiting for the next poll. It never blocks.
func (w *Worker) Kick() {
	if w.kick == nil {
		return
	}
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Init prepares the worker; call it before Run is started in a goroutine
// when Kick may be called concurrently.
func (w *Worker) Init() { w.defaults() }

// Run delivers due versions until ctx is done.
func (w *Worker) Run(ctx context.Context) {
	w.defaults()
	t := time.NewTicker(w.PollInterval)
	defer t.Stop()
	for {
		for ctx.Err() == nil {
			// A delivery under way finishes even when ctx ends (bounded by
			// its lease), so shutting down never leaves a job half done
			// and its lease held; no new job starts once ctx is done.
			worked, err := w.DeliverOne(context.WithoutCancel(ctx))
			if err != nil && ctx.Err() == nil {
				w.Logger.Warn("delivery: store error", "error", err.Error())
			}
			if !worked {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.kick:
		}
	}
}

// DeliverOne claims one due version and works it. It reports whether there
// was one; the error is a store failure, never a QUBS one (those end in the
// version's delivery state).
func (w *Worker) DeliverOne(ctx context.Context) (bool, error) {
	w.defaults()
	r, err := w.Store.ClaimDelivery(ctx, w.Name, w.Lease, w.Now())
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claiming a delivery: %w", err)
	}
	// The attempt must end before the lease does, or another worker may
	// take the job over while this one still works it.
	actx, cancel := context.WithTimeout(ctx, w.Lease*9/10)
	defer cancel()
	derr := w.deliver(actx, r)
	return true, w.settle(ctx, r, derr)
}

// Keys of the QUBS calls of one report version: stable across retries,
// workers and replicas.
func uploadKey(r *store.Report, index int) string {
	return qubs.DeriveIdempotencyKey("qfb-upload", []byte(r.Domain), []byte(r.ID), []byte(strconv.Itoa(r.Version)), []byte(strconv.Itoa(index)))
}

func reportKey(r *store.Report) string {
	return qubs.DeriveIdempotencyKey("qfb-report", []byte(r.Domain), []byte(r.ID), []byte(strconv.Itoa(r.Version)))
}

func (w *Worker) deliver(ctx context.Context, r *store.Report) error {
	var sub qubs.ReportSubmission
	if err := json.Unmarshal(r.Submission, &sub); err != nil {
		return permanent{fmt.Errorf("stored submission does not decode: %w", err)}
	}
	if len(r.Artifacts) > 0 {
		if err := w.upload(ctx, r); err != nil {
			return err
		}
	}
	receipt, err := w.QUBS.SubmitReport(ctx, r.Domain, r.AppointmentID, sub, reportKey(r))
	if err != nil {
		return err
	}
	return w.Store.CompleteDelivery(ctx, w.Name, r.Domain, r.ID, r.Version, receipt.ReportGUID, w.Now())
}

// upload sends the artifacts not yet recorded as uploaded, one at a time:
// an upload URL for that artifact alone, under a key of (report, version,
// artifact), then its PUT, then the record. An artifact recorded once is
// never asked a URL again, so a delivery retried after QUBS's 15-minute
// key window creates no second slot for it; only one whose PUT succeeded
// but whose record was lost in a crash can be sent twice.
func (w *Worker) upload(ctx context.Context, r *store.Report) error {
	for _, a := range r.Artifacts {
		if a.UploadedAt != nil {
			continue
		}
		ct := a.ContentType
		req := qubs.UploadRequest{Items: []qubs.UploadItem{{FileName: a.FileName, ContentType: &ct}}}
		urls, err := w.QUBS.CreateUploadURLs(ctx, r.Domain, r.AppointmentID, req, uploadKey(r, a.Index))
		if err != nil {
			return err
		}
		if len(urls.Items) != 1 {
			return permanent{fmt.Errorf("QUBS answered %d upload URLs for one artifact", len(urls.Items))}
		}
		u := urls.Items[0]
		err = w.QUBS.Upload(ctx, u, a.ContentType, int64(len(a.Data)), bytes.NewReader(a.Data))
		// A second PUT to a replayed URL is refused as a conflict: the
		// first one, whose answer was lost, succeeded.
		if err != nil && qubs.KindOf(err) != qubs.KindConflict {
			return err
		}
		if err := w.Store.RecordUpload(ctx, w.Name, r.Domain, r.ID, r.Version, a.Index, u.GUID, w.Now()); err != nil {
			return err
		}
	}
	return nil
}

// permanent marks a failure that no retry can mend.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// settle writes the outcome of an attempt.
func (w *Worker) settle(ctx context.Context, r *store.Report, err error) error {
	log := w.Logger.With("domain", r.Domain, "report", r.ID, "version", r.Version, "attempt", r.Delivery.Attempts)
	if err == nil {
		log.Info("delivery: delivered")
		return nil
	}
	if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
		// The version is no longer pending (superseded by a newer one while
		// this worker overran its lease) or vanished: whoever holds it now
		// settles it.
		log.Warn("delivery: lease lost", "error", err.Error())
		return nil
	}
	msg := describe(err)
	if isPermanent(err) || w.Now().Sub(r.CreatedAt) > w.GiveUpAfter {
		log.Warn("delivery: failed", "reason", msg)
		return ignoreConflict(w.Store.FailDelivery(ctx, w.Name, r.Domain, r.ID, r.Version, msg))
	}
	next := w.Now().Add(w.backoff(r.Delivery.Attempts))
	log.Info("delivery: will retry", "reason", msg, "next", next)
	return ignoreConflict(w.Store.RetryDelivery(ctx, w.Name, r.Domain, r.ID, r.Version, msg, next))
}

// ignoreConflict drops the store's answer that the version is no longer
// pending: another worker settled it.
func ignoreConflict(err error) error {
	if errors.Is(err, store.ErrConflict) {
		return nil
	}
	return err
}

func isPermanent(err error) bool {
	var p permanent
	if errors.As(err, &p) {
		return true
	}
	switch qubs.KindOf(err) {
	case qubs.KindNotFound, qubs.KindInvalid, qubs.KindConflict, qubs.KindTooLarge:
		return true
	}
	return false
}

// describe says what went wrong without any payload: qubs.Error messages
// carry kinds, statuses, problem titles and request ids only.
func describe(err error) string {
	var qe *qubs.Error
	if errors.As(err, &qe) {
		return qe.Error()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "attempt timed out"
	}
	return err.Error()
}

// backoff is exponential with full jitter, capped.
func (w *Worker) backoff(attempts int) time.Duration {
	d := 5 * time.Second << min(attempts, 16)
	if d <= 0 || d > w.MaxBackoff {
		d = w.MaxBackoff
	}
	return d/2 + rand.N(d/2+1)
}
