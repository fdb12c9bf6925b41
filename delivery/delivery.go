// Package delivery moves accepted DiagnosticReport versions from the store
// to QUBS, exactly once, whatever QUBS does meanwhile.
//
// A Worker claims one due version at a time under a short lease that a
// heartbeat renews while the worker lives, uploads its artifacts (one
// upload URL each, then one PUT), submits the report, and records the
// reportGuid. Every QUBS call carries an Idempotency-Key derived from
// (domain, report id, version), so a retry after a lost answer, by this
// worker, another one or another replica, replays the original QUBS
// response instead of creating a second report or a second attachment.
//
// Uploads reconcile instead of repeating. QUBS does not say what a second
// PUT to a used upload URL answers (200 and overwrite, 409 or 403), and a
// replayed upload-URL answer hands back the same URL, so after any
// uncertain outcome (no answer, 5xx, 409, 403, a crash between the PUT and
// its record) the worker asks QUBS whether the slot already holds the
// artifact (its URL is listed only once content arrived; the downloaded
// bytes must have the artifact's SHA-256) and records it instead of
// uploading again. The slot's GUID is recorded before its PUT, so a worker
// taking a crashed one's job over knows which slot to ask about. Uploads
// are retried inline a few times with short jittered pauses before the
// job is given back with backoff. docs/qubs-api-notes.md says what the
// bridge assumes of each answer.
//
// No slot is created for a version that is no longer the newest of its
// appointment: the worker checks with the store (RenewLease) right before
// each new upload slot and before submitting, and gives the job back when
// a newer version waits. A slot already created is still filled (QUBS
// cannot delete one, and an empty one is what issue 9 complained of).
//
// Reports: a submission whose outcome is unknown is retried with the same
// key for as long as QUBS keeps it (24 hours). Past that, the worker reads
// what QUBS offers (whether the appointment is still PENDING REPORTING)
// before it submits again: QUBS has no way to read a submitted report back,
// and submissions overwrite, so resubmitting the same version is at worst
// one identical overwrite.
package delivery

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// QUBS is the part of the QUBS client delivery uses.
type QUBS interface {
	CreateUploadURLs(ctx context.Context, domain, appointmentID string, in qubs.UploadRequest, idempotencyKey string) (*qubs.UploadURLs, error)
	Upload(ctx context.Context, u qubs.UploadURL, contentType string, size int64, body io.Reader) error
	SubmitReport(ctx context.Context, domain, appointmentID string, in qubs.ReportSubmission, idempotencyKey string) (*qubs.ReportReceipt, error)
	GetAttachment(ctx context.Context, domain, appointmentID, attachmentGUID string, opts qubs.AttachmentOptions) (*qubs.Attachment, error)
	ListAttachments(ctx context.Context, domain, appointmentID string, opts qubs.AttachmentOptions) ([]qubs.Attachment, error)
	Download(ctx context.Context, presignedURL string) (*qubs.Download, error)
	GetPending(ctx context.Context, domain, appointmentID string) (*qubs.Appointment, error)
}

var _ QUBS = (*qubs.Client)(nil)

// Defaults of Worker.
const (
	// DefaultLease is short because a heartbeat renews it every quarter
	// lease while the worker lives: a crashed replica's jobs are taken
	// over within it (plus a poll), a slow but live worker keeps them.
	DefaultLease        = 20 * time.Second
	DefaultPollInterval = 2 * time.Second
	DefaultMaxBackoff   = 5 * time.Minute
	// DefaultAttemptTimeout bounds one attempt however long its lease is
	// renewed, so a hung call cannot hold an appointment forever.
	DefaultAttemptTimeout = 5 * time.Minute
	// DefaultUploadTries is how many PUTs (each after a reconciliation
	// with QUBS) one attempt makes for one artifact before giving the job
	// back with backoff.
	DefaultUploadTries = 4
	// DefaultGiveUpAfter: a version still not delivered a week after it
	// was accepted is failed, loudly, rather than retried for ever.
	DefaultGiveUpAfter = 7 * 24 * time.Hour
	// DefaultWarnAttempts and DefaultWarnAfter: a delivery not done after
	// this many attempts or this long is logged at WARN.
	DefaultWarnAttempts = 5
	DefaultWarnAfter    = 10 * time.Minute
	// ReportKeyWindow is how long QUBS replays a report submission's
	// answer for its Idempotency-Key (24 hours), less an hour for clock
	// skew and the last attempt. Past it a retry is a new submission.
	ReportKeyWindow = 23 * time.Hour
	// DefaultWorkers is the number of delivery workers per replica. QUBS
	// documents no rate limit figure; each delivery is a handful of calls,
	// so four workers stay far below a partner API's usual tens of
	// requests per second while not waiting on one slow call.
	DefaultWorkers = 4
)

// Worker delivers report versions. Several workers (in one process or in
// several replicas sharing a PostgreSQL store) may run at once.
type Worker struct {
	Store  store.Store
	QUBS   QUBS
	Logger *slog.Logger
	// Name identifies the worker in leases; it must be unique per worker.
	Name string
	// Lease is the lease taken and renewed by the heartbeat; a crashed
	// worker's job is taken over after it.
	Lease          time.Duration
	PollInterval   time.Duration
	MaxBackoff     time.Duration
	AttemptTimeout time.Duration
	UploadTries    int
	// UploadPause is the base of the jittered pause between two inline
	// upload tries; 0 means 200 ms.
	UploadPause time.Duration
	GiveUpAfter time.Duration
	// WarnAttempts and WarnAfter: see DefaultWarnAttempts.
	WarnAttempts int
	WarnAfter    time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Observer, when set, is told of each attempt and its outcome
	// (metrics and traces).
	Observer Observer
	// Delivered, when set, is called after a version was delivered, with
	// its appointment: QUBS has changed the study (the worklist index
	// re-reads it).
	Delivered func(ctx context.Context, domain, appointmentID string)
	// Held, when set, has the bytes of artifacts this process stored a
	// moment ago; a claim takes them from it rather than from the store.
	// NewPool gives its workers one to share.
	Held *Held

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
	if w.AttemptTimeout == 0 {
		w.AttemptTimeout = DefaultAttemptTimeout
	}
	if w.UploadTries <= 0 {
		w.UploadTries = DefaultUploadTries
	}
	if w.UploadPause <= 0 {
		w.UploadPause = 200 * time.Millisecond
	}
	if w.GiveUpAfter == 0 {
		w.GiveUpAfter = DefaultGiveUpAfter
	}
	if w.WarnAttempts == 0 {
		w.WarnAttempts = DefaultWarnAttempts
	}
	if w.WarnAfter == 0 {
		w.WarnAfter = DefaultWarnAfter
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
			// AttemptTimeout), so shutting down never leaves a job half
			// done and its lease held; no new job starts once ctx is done.
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

// Pool is several workers of one replica, sharing one Held.
type Pool struct {
	Workers []*Worker
	Held    *Held
}

// NewPool returns n workers (DefaultWorkers when n <= 0) copied from
// template, named template.Name plus "-1", "-2", ..., and the Held they
// share: template's, or a new one.
func NewPool(n int, template Worker) *Pool {
	if n <= 0 {
		n = DefaultWorkers
	}
	p := &Pool{Held: template.Held}
	if p.Held == nil {
		p.Held = &Held{}
	}
	for i := range n {
		w := template
		w.kick, w.Held = nil, p.Held
		w.Name = fmt.Sprintf("%s-%d", template.Name, i+1)
		w.Init()
		p.Workers = append(p.Workers, &w)
	}
	return p
}

// Accepted is what the server calls once it has stored a new version
// (server.Config.Accepted): the workers' Held keeps the bytes of r's
// artifacts (Held.Put), and they are woken.
func (p *Pool) Accepted(r *store.Report) {
	p.Held.Put(r)
	p.Kick()
}

// Kick wakes every worker; it never blocks.
func (p *Pool) Kick() {
	for _, w := range p.Workers {
		w.Kick()
	}
}

// Run runs every worker until ctx is done and they have finished their
// jobs under way.
func (p *Pool) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, w := range p.Workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.Run(ctx) }()
	}
	wg.Wait()
}

// DeliverOne claims one due version and works it. It reports whether there
// was one; the error is a store failure, never a QUBS one (those end in the
// version's delivery state).
func (w *Worker) DeliverOne(ctx context.Context) (bool, error) {
	w.defaults()
	var held store.Held
	if w.Held != nil {
		held = w.Held.Take
	}
	r, err := w.Store.ClaimDelivery(ctx, w.Name, w.Lease, w.Now(), held)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claiming a delivery: %w", err)
	}
	// One correlation id per attempt follows every QUBS call of it and
	// the log lines about it; it names no report, so it holds no PHI.
	corr := "qfb-dlv-" + strconv.FormatUint(rand.Uint64(), 16)
	actx, cancel := context.WithTimeoutCause(qubs.WithCorrelationID(ctx, corr), w.AttemptTimeout, errAttemptTimeout)
	defer cancel()
	end := func(string) {}
	if w.Observer != nil {
		actx, end = w.Observer.Attempt(actx, AttemptInfo{Domain: r.Domain, Attempt: r.Delivery.Attempts, CorrelationID: corr})
	}
	hb := w.heartbeat(actx, r)
	derr := w.deliver(hb.ctx, r, hb)
	if derr != nil && hb.ctx.Err() != nil {
		// The heartbeat lost the lease, or the attempt ran out of time:
		// say so rather than report the QUBS call it interrupted.
		derr = errors.Join(context.Cause(hb.ctx), derr)
	}
	hb.stop()
	outcome, err := w.settle(ctx, r, corr, derr)
	end(outcome)
	return true, err
}

var (
	errAttemptTimeout = errors.New("attempt timed out")
	errLeaseLost      = errors.New("lease lost")
	errNewer          = errors.New("a newer version of the appointment was accepted")
)

// heartbeat renews the job's lease every quarter lease while the attempt
// runs. Its context ends when the lease is lost (another worker may hold
// the job now) or when the lease was not renewed by 7/8 of it: a store
// that stops answering must not leave the attempt running past its lease,
// into another worker's, so each renewal is bounded by that point too.
type heartbeat struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	newer  atomic.Bool
	// until is when the lease last renewed ends (Unix nanoseconds): by the
	// heartbeat's own renewals or by newest's, which count as much.
	until atomic.Int64
	done  chan struct{}
	w     *Worker
	r     *store.Report
}

func (w *Worker) heartbeat(ctx context.Context, r *store.Report) *heartbeat {
	hctx, cancel := context.WithCancelCause(ctx)
	hb := &heartbeat{ctx: hctx, cancel: cancel, done: make(chan struct{}), w: w, r: r}
	until := w.Now().Add(w.Lease)
	if r.Delivery.LeaseUntil != nil {
		until = *r.Delivery.LeaseUntil
	}
	hb.until.Store(until.UnixNano())
	// giveUp is how long until the lease must have been renewed by.
	giveUp := func() time.Duration {
		return time.Unix(0, hb.until.Load()).Add(-w.Lease / 8).Sub(w.Now())
	}
	go func() {
		defer close(hb.done)
		t := time.NewTicker(w.Lease / 4)
		defer t.Stop()
		late := time.NewTimer(giveUp())
		defer late.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-late.C:
				if d := giveUp(); d > 0 {
					late.Reset(d) // newest renewed it meanwhile
					continue
				}
				cancel(errLeaseLost)
				return
			case <-t.C:
			}
			now := w.Now()
			rctx, rcancel := context.WithTimeout(hctx, giveUp())
			err := hb.renew(rctx, now)
			rcancel()
			switch {
			case err == nil:
				late.Reset(giveUp())
			case errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound):
				cancel(errLeaseLost)
				return
			case giveUp() <= 0:
				// The store did not answer in time: the lease is about to
				// run out, and another worker may take the job.
				cancel(errLeaseLost)
				return
			}
		}
	}()
	return hb
}

// renew extends the lease and notes whether a newer version waits.
func (hb *heartbeat) renew(ctx context.Context, now time.Time) error {
	newer, err := hb.w.Store.RenewLease(ctx, hb.w.Name, hb.r.Domain, hb.r.ID, hb.r.Version, hb.w.Lease, now)
	if err != nil {
		return err
	}
	// A later renewal may have finished first; the lease ends at the latest.
	for end := now.Add(hb.w.Lease).UnixNano(); ; {
		old := hb.until.Load()
		if end <= old || hb.until.CompareAndSwap(old, end) {
			break
		}
	}
	if newer {
		hb.newer.Store(true)
	}
	return nil
}

// newest renews the lease now and fails with errNewer when a newer version
// of the appointment waits: called right before creating an upload slot or
// submitting, so the bridge makes no slot for a version it will not send.
func (hb *heartbeat) newest() error {
	if hb.newer.Load() {
		return errNewer
	}
	if err := hb.renew(hb.ctx, hb.w.Now()); err != nil {
		return err
	}
	if hb.newer.Load() {
		return errNewer
	}
	return nil
}

func (hb *heartbeat) stop() {
	hb.cancel(nil)
	<-hb.done
}

// Keys of the QUBS calls of one report version: stable across retries,
// workers and replicas.
func uploadKey(r *store.Report, index int) string {
	return qubs.DeriveIdempotencyKey("qfb-upload", []byte(r.Domain), []byte(r.ID), []byte(strconv.Itoa(r.Version)), []byte(strconv.Itoa(index)))
}

func reportKey(r *store.Report) string {
	return qubs.DeriveIdempotencyKey("qfb-report", []byte(r.Domain), []byte(r.ID), []byte(strconv.Itoa(r.Version)))
}

func (w *Worker) deliver(ctx context.Context, r *store.Report, hb *heartbeat) error {
	var sub qubs.ReportSubmission
	if err := json.Unmarshal(r.Submission, &sub); err != nil {
		return permanent{fmt.Errorf("stored submission does not decode: %w", err)}
	}
	for i := range r.Artifacts {
		if err := w.uploadArtifact(ctx, r, &r.Artifacts[i], hb); err != nil {
			return err
		}
	}
	// A newer version would overwrite this one at once: send only the
	// newest.
	if err := hb.newest(); err != nil {
		return err
	}
	if w.Now().Sub(r.CreatedAt) > ReportKeyWindow {
		// QUBS may have forgotten the key of an earlier submission whose
		// answer was lost, so this one would be applied anew. QUBS offers
		// no read of a submitted report; what it does tell is whether the
		// appointment still takes reports. If it does, an identical
		// resubmission overwrites the report with the same content.
		if _, err := w.QUBS.GetPending(ctx, r.Domain, r.AppointmentID); err != nil {
			return err
		}
	}
	receipt, err := w.QUBS.SubmitReport(ctx, r.Domain, r.AppointmentID, sub, reportKey(r))
	if err != nil {
		return err
	}
	return w.Store.CompleteDelivery(ctx, w.Name, r.Domain, r.ID, r.Version, receipt.ReportGUID, w.Now())
}

// uploadArtifact gets one artifact into QUBS exactly once. An artifact
// recorded as uploaded is skipped. One with a recorded slot, or of a job
// tried before, is first looked for in QUBS. Then, up to UploadTries
// times: an upload URL under the artifact's key (QUBS replays the same URL
// for 15 minutes), its GUID recorded before the PUT, the PUT, and after
// any failure a look at the slot, which may hold the content although the
// answer said otherwise or never came.
func (w *Worker) uploadArtifact(ctx context.Context, r *store.Report, a *store.Artifact, hb *heartbeat) error {
	if a.UploadedAt != nil {
		return nil
	}
	if a.QUBSGUID != "" || r.Delivery.Attempts > 1 {
		guid, err := w.findUploaded(ctx, r, a)
		if err != nil {
			return err
		}
		if guid != "" {
			return w.recordUploaded(ctx, r, a, guid)
		}
	}
	var lastErr error
	for try := range w.UploadTries {
		if try > 0 {
			if err := pause(ctx, w.UploadPause, try); err != nil {
				return errors.Join(lastErr, err)
			}
		}
		if a.QUBSGUID == "" {
			// A new slot only for the newest version. A slot already made
			// is filled even if a newer version arrived meanwhile: left
			// alone it would stay empty in QUBS, which cannot delete it.
			if err := hb.newest(); err != nil {
				return err
			}
		}
		ct := a.ContentType
		req := qubs.UploadRequest{Items: []qubs.UploadItem{{FileName: a.FileName, ContentType: &ct}}}
		urls, err := w.QUBS.CreateUploadURLs(ctx, r.Domain, r.AppointmentID, req, uploadKey(r, a.Index))
		if err != nil {
			return err // the client already retried it with the same key
		}
		if len(urls.Items) != 1 {
			return permanent{fmt.Errorf("QUBS answered %d upload URLs for one artifact", len(urls.Items))}
		}
		u := urls.Items[0]
		if u.GUID != a.QUBSGUID {
			if err := w.Store.RecordUploadSlot(ctx, w.Name, r.Domain, r.ID, r.Version, a.Index, u.GUID); err != nil {
				return err
			}
			a.QUBSGUID = u.GUID
		}
		err = w.QUBS.Upload(ctx, u, a.ContentType, int64(len(a.Data)), bytes.NewReader(a.Data))
		if err == nil {
			return w.recordUploaded(ctx, r, a, u.GUID)
		}
		switch qubs.KindOf(err) {
		case qubs.KindInvalid, qubs.KindTooLarge:
			// Refused before the content was taken; no retry mends it.
			return err
		}
		lastErr = uncertain{err}
		// No answer, 5xx, or a refusal that a used URL earns (409, 403):
		// the PUT, or an earlier one to the same URL, may have been
		// applied. Ask before putting again.
		held, cerr := w.slotHolds(ctx, r, a, u.GUID)
		if cerr != nil {
			return errors.Join(lastErr, cerr)
		}
		if held {
			return w.recordUploaded(ctx, r, a, u.GUID)
		}
	}
	return lastErr
}

func (w *Worker) recordUploaded(ctx context.Context, r *store.Report, a *store.Artifact, guid string) error {
	if err := w.Store.RecordUpload(ctx, w.Name, r.Domain, r.ID, r.Version, a.Index, guid, w.Now()); err != nil {
		return err
	}
	now := w.Now()
	a.QUBSGUID, a.UploadedAt = guid, &now
	return nil
}

// findUploaded looks in QUBS for the artifact uploaded by an earlier
// attempt: in its recorded slot, or, when none was recorded (a version
// queued before slots were recorded), in any attachment of the appointment
// with the artifact's file name. It returns the slot's GUID, or "".
func (w *Worker) findUploaded(ctx context.Context, r *store.Report, a *store.Artifact) (string, error) {
	if a.QUBSGUID != "" {
		held, err := w.slotHolds(ctx, r, a, a.QUBSGUID)
		if err != nil || !held {
			return "", err
		}
		return a.QUBSGUID, nil
	}
	list, err := w.QUBS.ListAttachments(ctx, r.Domain, r.AppointmentID, qubs.AttachmentOptions{})
	if err != nil {
		return "", err
	}
	name := baseName(a.FileName)
	for _, at := range list {
		if at.URL == nil || at.FileName != name {
			continue
		}
		held, err := w.contentMatches(ctx, *at.URL, a)
		if err != nil {
			return "", err
		}
		if held {
			return at.GUID, nil
		}
	}
	return "", nil
}

// slotHolds asks QUBS whether attachment guid holds the artifact: QUBS
// lists a URL only once a PUT succeeded, and the content must be the
// artifact's (size and SHA-256), so an overwrite by someone else or a
// partial body is not taken for ours.
func (w *Worker) slotHolds(ctx context.Context, r *store.Report, a *store.Artifact, guid string) (bool, error) {
	at, err := w.QUBS.GetAttachment(ctx, r.Domain, r.AppointmentID, guid, qubs.AttachmentOptions{URLTTLSeconds: 60})
	if err != nil {
		return false, err
	}
	if at.URL == nil {
		return false, nil
	}
	return w.contentMatches(ctx, *at.URL, a)
}

func (w *Worker) contentMatches(ctx context.Context, url string, a *store.Artifact) (bool, error) {
	d, err := w.QUBS.Download(ctx, url)
	if err != nil {
		return false, err
	}
	defer d.Body.Close()
	if d.ContentLength >= 0 && d.ContentLength != int64(len(a.Data)) {
		return false, nil
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(d.Body, qubs.MaxUploadBytes+1))
	if err != nil {
		return false, &qubs.Error{Kind: qubs.KindTransient, Op: "qubs.Download", Err: errors.New("reading the attachment failed")}
	}
	sum := hex.EncodeToString(h.Sum(nil))
	want := a.SHA256
	if want == "" {
		s := sha256.Sum256(a.Data)
		want = hex.EncodeToString(s[:])
	}
	return n == int64(len(a.Data)) && sum == want, nil
}

// baseName is the file name as QUBS keeps it: path segments stripped.
func baseName(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	return strings.TrimSpace(name)
}

// pause waits a jittered, growing short time before inline try n.
func pause(ctx context.Context, base time.Duration, n int) error {
	d := base << min(n-1, 4)
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// permanent marks a failure that no retry can mend.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// uncertain marks an upload whose outcome QUBS left unknown (including a
// refusal that a used URL earns): retried, never permanent, even when its
// kind (409) would be for another call.
type uncertain struct{ err error }

func (u uncertain) Error() string { return u.err.Error() }
func (u uncertain) Unwrap() error { return u.err }

// settle writes the outcome of an attempt and names it (an Outcome*).
func (w *Worker) settle(ctx context.Context, r *store.Report, corr string, err error) (string, error) {
	log := w.Logger.With("domain", r.Domain, "report", r.ID, "version", r.Version, "attempt", r.Delivery.Attempts, "correlation_id", corr)
	if err == nil {
		log.Info("delivery: delivered")
		if w.Delivered != nil {
			w.Delivered(ctx, r.Domain, r.AppointmentID)
		}
		return OutcomeDelivered, nil
	}
	if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) || errors.Is(err, errLeaseLost) {
		// The version is no longer pending (superseded by a newer one while
		// this worker overran its lease) or vanished, or another worker
		// holds it: whoever holds it now settles it.
		log.Warn("delivery: lease lost", "error", err.Error())
		return OutcomeLeaseLost, nil
	}
	kind, msg := describe(err)
	age := w.Now().Sub(r.CreatedAt)
	if errors.Is(err, errNewer) {
		// Not a failure: the next claim takes the newer version and
		// supersedes this one.
		log.Info("delivery: newer version waits; giving the job back")
		return OutcomeSuperseded, ignoreConflict(w.Store.RetryDelivery(ctx, w.Name, r.Domain, r.ID, r.Version, msg, w.Now()))
	}
	if isPermanent(err) || age > w.GiveUpAfter {
		log.Warn("delivery: failed", "appointment", r.AppointmentID, "qubs_error_kind", kind, "reason", msg)
		return OutcomeFailed, ignoreConflict(w.Store.FailDelivery(ctx, w.Name, r.Domain, r.ID, r.Version, msg))
	}
	next := w.Now().Add(w.backoff(r.Delivery.Attempts))
	if r.Delivery.Attempts >= w.WarnAttempts || age >= w.WarnAfter {
		// Stuck: say so where operators look, with what lets them find it
		// in QUBS (appointment id, correlation id) and no PHI.
		log.Warn("delivery: not delivered yet", "appointment", r.AppointmentID, "qubs_error_kind", kind,
			"age", age.Round(time.Second).String(), "next", next, "reason", msg)
	} else {
		log.Info("delivery: will retry", "qubs_error_kind", kind, "reason", msg, "next", next)
	}
	return OutcomeRetry, ignoreConflict(w.Store.RetryDelivery(ctx, w.Name, r.Domain, r.ID, r.Version, msg, next))
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
	var u uncertain
	if errors.As(err, &u) {
		return false
	}
	switch qubs.KindOf(err) {
	case qubs.KindNotFound, qubs.KindInvalid, qubs.KindConflict, qubs.KindTooLarge:
		return true
	}
	return false
}

// describe says what went wrong without any payload: qubs.Error messages
// carry kinds, statuses, problem titles and request ids only. The last
// error is stored as "<kind>: <message>", kind being a QUBS error kind
// (transient, not_found, ...) or timeout, superseded, internal.
func describe(err error) (kind, msg string) {
	var qe *qubs.Error
	switch {
	case errors.Is(err, errNewer):
		kind, msg = "superseded", errNewer.Error()
	case errors.Is(err, errAttemptTimeout) || errors.Is(err, context.DeadlineExceeded):
		kind, msg = "timeout", "attempt timed out"
	case errors.As(err, &qe):
		kind, msg = qe.Kind.String(), qe.Error()
	default:
		kind, msg = "internal", err.Error()
	}
	return kind, kind + ": " + msg
}

// backoff is exponential with full jitter, capped.
func (w *Worker) backoff(attempts int) time.Duration {
	d := 5 * time.Second << min(attempts, 16)
	if d <= 0 || d > w.MaxBackoff {
		d = w.MaxBackoff
	}
	return d/2 + rand.N(d/2+1)
}
