package observe

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// Store wraps st so that every call is timed
// (bridge_store_operation_duration_seconds), its internal errors counted
// (bridge_store_operation_errors_total), and, inside a traced request or
// delivery attempt, made a child span "store <operation>". Calls outside
// any trace (the delivery workers' polling, retention) get no span of
// their own: they would be a root trace every poll. st is returned as is
// when both m and tp are nil.
//
// Methods the wrapper does not know (added to store.Store later) pass
// through unobserved, so it never stands in the way of the interface
// growing.
func Store(st store.Store, m *Metrics, tp trace.TracerProvider) store.Store {
	if m == nil && tp == nil {
		return st
	}
	s := &observedStore{Store: st, m: m, tracer: Tracer(tp), ops: map[string]*storeOp{}}
	for _, op := range storeOps {
		o := &storeOp{spanName: "store " + op, attr: trace.WithAttributes(attrStoreOp.String(op))}
		if m != nil {
			o.duration = m.storeDuration.WithLabelValues(op)
			o.errors = m.storeErrors.WithLabelValues(op)
		}
		s.ops[op] = o
	}
	return s
}

// storeOps are the operation labels, one per store.Store method.
var storeOps = []string{
	"ping", "create_report", "update_report", "report", "report_version", "report_artifact", "artifact_binary",
	"search_reports", "count_reports", "reserve_artifact_space", "claim_delivery", "record_upload", "complete_delivery", "retry_delivery",
	"fail_delivery", "record_upload_slot", "renew_lease", "pending_deliveries", "delivery_stats",
	"create_binary", "binary", "claim_idempotency", "lookup_idempotency", "purge_before",
	"count_audit", "record_audit", "record_audits", "audit_event", "search_audit", "purge_audit_before", "claim_jti",
	"append_events", "events_after",
	"take_worklist_lease", "release_worklist_lease", "apply_worklist", "finish_worklist_sync", "leave_worklist",
	"worklist_sync_state", "search_worklist",
	"take_comment_lease", "comment_studies", "record_comments",
	"create_subscription", "subscription", "search_subscriptions", "delete_subscription", "notifications",
	"dispatch_events", "claim_notifications", "settle_notifications", "subscription_stats",
}

type storeOp struct {
	duration prometheus.Observer
	errors   prometheus.Counter
	spanName string
	attr     trace.SpanStartEventOption
}

type observedStore struct {
	store.Store
	m      *Metrics
	tracer trace.Tracer
	ops    map[string]*storeOp
}

// call is one store call under way; a value, so that observing a call
// allocates nothing of its own.
type call struct {
	op    *storeOp
	start time.Time
	span  trace.Span
}

func (s *observedStore) begin(ctx context.Context, name string) (context.Context, call) {
	c := call{op: s.ops[name], start: time.Now()}
	if s.tracer != nil && trace.SpanContextFromContext(ctx).IsValid() {
		ctx, c.span = s.tracer.Start(ctx, c.op.spanName, c.op.attr)
	}
	return ctx, c
}

func (c call) end(err error) {
	internal := err != nil && isInternal(err)
	if c.op.duration != nil {
		c.op.duration.Observe(time.Since(c.start).Seconds())
		if internal {
			c.op.errors.Inc()
		}
	}
	if c.span != nil {
		if internal {
			// The kind only: store errors name ids, and a span is no
			// place for them.
			c.span.SetStatus(codes.Error, "internal")
		}
		c.span.End()
	}
}

// isInternal tells a failure of the database from an answer (not found,
// conflict, precondition, invalid), which callers expect and handle.
func isInternal(err error) bool {
	var e *store.Error
	return !errors.As(err, &e) || e.Kind == store.KindInternal
}

func (s *observedStore) Ping(ctx context.Context) error {
	ctx, c := s.begin(ctx, "ping")
	err := s.Store.Ping(ctx)
	c.end(err)
	return err
}

func (s *observedStore) CreateReport(ctx context.Context, r *store.Report) error {
	ctx, c := s.begin(ctx, "create_report")
	err := s.Store.CreateReport(ctx, r)
	c.end(err)
	return err
}

func (s *observedStore) UpdateReport(ctx context.Context, r *store.Report, ifMatch int) error {
	ctx, c := s.begin(ctx, "update_report")
	err := s.Store.UpdateReport(ctx, r, ifMatch)
	c.end(err)
	return err
}

func (s *observedStore) Report(ctx context.Context, domain, id string) (*store.Report, error) {
	ctx, c := s.begin(ctx, "report")
	r, err := s.Store.Report(ctx, domain, id)
	c.end(err)
	return r, err
}

func (s *observedStore) ReportVersion(ctx context.Context, domain, id string, version int) (*store.Report, error) {
	ctx, c := s.begin(ctx, "report_version")
	r, err := s.Store.ReportVersion(ctx, domain, id, version)
	c.end(err)
	return r, err
}

func (s *observedStore) ReportArtifact(ctx context.Context, domain, id string, version, index int) (*store.Artifact, error) {
	ctx, c := s.begin(ctx, "report_artifact")
	a, err := s.Store.ReportArtifact(ctx, domain, id, version, index)
	c.end(err)
	return a, err
}

func (s *observedStore) ArtifactBinary(ctx context.Context, domain, binaryID string) (*store.ReportBinary, error) {
	ctx, c := s.begin(ctx, "artifact_binary")
	b, err := s.Store.ArtifactBinary(ctx, domain, binaryID)
	c.end(err)
	return b, err
}

func (s *observedStore) SearchReports(ctx context.Context, domain string, f store.ReportFilter) ([]*store.Report, string, error) {
	ctx, c := s.begin(ctx, "search_reports")
	rs, next, err := s.Store.SearchReports(ctx, domain, f)
	c.end(err)
	return rs, next, err
}

func (s *observedStore) CountReports(ctx context.Context, domain string, f store.ReportFilter) (int, error) {
	ctx, c := s.begin(ctx, "count_reports")
	n, err := s.Store.CountReports(ctx, domain, f)
	c.end(err)
	return n, err
}

func (s *observedStore) ClaimDelivery(ctx context.Context, worker string, lease time.Duration, now time.Time, held store.Held) (*store.Report, error) {
	ctx, c := s.begin(ctx, "claim_delivery")
	r, err := s.Store.ClaimDelivery(ctx, worker, lease, now, held)
	c.end(err)
	return r, err
}

func (s *observedStore) RecordUpload(ctx context.Context, worker, domain, id string, version, index int, qubsGUID string, at time.Time) error {
	ctx, c := s.begin(ctx, "record_upload")
	err := s.Store.RecordUpload(ctx, worker, domain, id, version, index, qubsGUID, at)
	c.end(err)
	return err
}

func (s *observedStore) CompleteDelivery(ctx context.Context, worker, domain, id string, version int, reportGUID string, at time.Time) error {
	ctx, c := s.begin(ctx, "complete_delivery")
	err := s.Store.CompleteDelivery(ctx, worker, domain, id, version, reportGUID, at)
	c.end(err)
	return err
}

func (s *observedStore) RetryDelivery(ctx context.Context, worker, domain, id string, version int, lastError string, next time.Time) error {
	ctx, c := s.begin(ctx, "retry_delivery")
	err := s.Store.RetryDelivery(ctx, worker, domain, id, version, lastError, next)
	c.end(err)
	return err
}

func (s *observedStore) FailDelivery(ctx context.Context, worker, domain, id string, version int, lastError string) error {
	ctx, c := s.begin(ctx, "fail_delivery")
	err := s.Store.FailDelivery(ctx, worker, domain, id, version, lastError)
	c.end(err)
	return err
}

func (s *observedStore) RecordUploadSlot(ctx context.Context, worker, domain, id string, version, index int, qubsGUID string) error {
	ctx, c := s.begin(ctx, "record_upload_slot")
	err := s.Store.RecordUploadSlot(ctx, worker, domain, id, version, index, qubsGUID)
	c.end(err)
	return err
}

func (s *observedStore) RenewLease(ctx context.Context, worker, domain, id string, version int, lease time.Duration, now time.Time) (bool, error) {
	ctx, c := s.begin(ctx, "renew_lease")
	newer, err := s.Store.RenewLease(ctx, worker, domain, id, version, lease, now)
	c.end(err)
	return newer, err
}

func (s *observedStore) PendingDeliveries(ctx context.Context) (int, error) {
	ctx, c := s.begin(ctx, "pending_deliveries")
	n, err := s.Store.PendingDeliveries(ctx)
	c.end(err)
	return n, err
}

func (s *observedStore) DeliveryStats(ctx context.Context) ([]store.DeliveryStats, error) {
	ctx, c := s.begin(ctx, "delivery_stats")
	st, err := s.Store.DeliveryStats(ctx)
	c.end(err)
	return st, err
}

func (s *observedStore) CreateBinary(ctx context.Context, b *store.Binary) error {
	ctx, c := s.begin(ctx, "create_binary")
	err := s.Store.CreateBinary(ctx, b)
	c.end(err)
	return err
}

func (s *observedStore) Binary(ctx context.Context, domain, id string) (*store.Binary, error) {
	ctx, c := s.begin(ctx, "binary")
	b, err := s.Store.Binary(ctx, domain, id)
	c.end(err)
	return b, err
}

func (s *observedStore) ClaimIdempotency(ctx context.Context, rec *store.IdempotencyRecord) (*store.IdempotencyRecord, error) {
	ctx, c := s.begin(ctx, "claim_idempotency")
	existing, err := s.Store.ClaimIdempotency(ctx, rec)
	c.end(err)
	return existing, err
}

func (s *observedStore) LookupIdempotency(ctx context.Context, domain, scope, key string) (*store.IdempotencyRecord, error) {
	ctx, c := s.begin(ctx, "lookup_idempotency")
	rec, err := s.Store.LookupIdempotency(ctx, domain, scope, key)
	c.end(err)
	return rec, err
}

// ReserveArtifactSpace passes to the wrapped store, if it can (0 if not).
func (s *observedStore) ReserveArtifactSpace(ctx context.Context, want int64) (int64, error) {
	r, ok := s.Store.(store.ArtifactReserver)
	if !ok {
		return 0, nil
	}
	ctx, c := s.begin(ctx, "reserve_artifact_space")
	n, err := r.ReserveArtifactSpace(ctx, want)
	c.end(err)
	return n, err
}

func (s *observedStore) PurgeBefore(ctx context.Context, cutoff time.Time) (int, error) {
	ctx, c := s.begin(ctx, "purge_before")
	n, err := s.Store.PurgeBefore(ctx, cutoff)
	c.end(err)
	return n, err
}

func (s *observedStore) CountAudit(ctx context.Context, domain string, f store.AuditFilter) (int, error) {
	ctx, c := s.begin(ctx, "count_audit")
	n, err := s.Store.CountAudit(ctx, domain, f)
	c.end(err)
	return n, err
}

func (s *observedStore) RecordAudit(ctx context.Context, a *store.AuditRecord) error {
	ctx, c := s.begin(ctx, "record_audit")
	err := s.Store.RecordAudit(ctx, a)
	c.end(err)
	return err
}

func (s *observedStore) RecordAudits(ctx context.Context, batch []*store.AuditRecord) error {
	ctx, c := s.begin(ctx, "record_audits")
	err := s.Store.RecordAudits(ctx, batch)
	c.end(err)
	return err
}

func (s *observedStore) AuditEvent(ctx context.Context, domain, id string) (*store.AuditRecord, error) {
	ctx, c := s.begin(ctx, "audit_event")
	r, err := s.Store.AuditEvent(ctx, domain, id)
	c.end(err)
	return r, err
}

func (s *observedStore) SearchAudit(ctx context.Context, domain string, f store.AuditFilter) ([]*store.AuditRecord, string, error) {
	ctx, c := s.begin(ctx, "search_audit")
	rs, next, err := s.Store.SearchAudit(ctx, domain, f)
	c.end(err)
	return rs, next, err
}

func (s *observedStore) PurgeAuditBefore(ctx context.Context, cutoff time.Time) (int, error) {
	ctx, c := s.begin(ctx, "purge_audit_before")
	n, err := s.Store.PurgeAuditBefore(ctx, cutoff)
	c.end(err)
	return n, err
}

func (s *observedStore) ClaimJTI(ctx context.Context, issuer, jti string, expires time.Time) (bool, error) {
	ctx, c := s.begin(ctx, "claim_jti")
	fresh, err := s.Store.ClaimJTI(ctx, issuer, jti, expires)
	c.end(err)
	return fresh, err
}

func (s *observedStore) AppendEvents(ctx context.Context, evs ...*store.Event) error {
	ctx, c := s.begin(ctx, "append_events")
	err := s.Store.AppendEvents(ctx, evs...)
	c.end(err)
	return err
}

func (s *observedStore) EventsAfter(ctx context.Context, after int64, limit int) ([]store.Event, error) {
	ctx, c := s.begin(ctx, "events_after")
	evs, err := s.Store.EventsAfter(ctx, after, limit)
	c.end(err)
	return evs, err
}

func (s *observedStore) TakeWorklistLease(ctx context.Context, domain, owner string, lease time.Duration, now time.Time) (bool, error) {
	ctx, c := s.begin(ctx, "take_worklist_lease")
	ok, err := s.Store.TakeWorklistLease(ctx, domain, owner, lease, now)
	c.end(err)
	return ok, err
}

func (s *observedStore) ReleaseWorklistLease(ctx context.Context, domain, owner string) error {
	ctx, c := s.begin(ctx, "release_worklist_lease")
	err := s.Store.ReleaseWorklistLease(ctx, domain, owner)
	c.end(err)
	return err
}

func (s *observedStore) ApplyWorklist(ctx context.Context, domain, owner string, lease time.Duration, rows []store.WorklistRow, now time.Time) ([]store.WorklistChange, error) {
	ctx, c := s.begin(ctx, "apply_worklist")
	ch, err := s.Store.ApplyWorklist(ctx, domain, owner, lease, rows, now)
	c.end(err)
	return ch, err
}

func (s *observedStore) FinishWorklistSync(ctx context.Context, domain, owner string, started, now time.Time) ([]string, error) {
	ctx, c := s.begin(ctx, "finish_worklist_sync")
	left, err := s.Store.FinishWorklistSync(ctx, domain, owner, started, now)
	c.end(err)
	return left, err
}

func (s *observedStore) LeaveWorklist(ctx context.Context, domain, appointmentID string, now time.Time) (bool, error) {
	ctx, c := s.begin(ctx, "leave_worklist")
	ok, err := s.Store.LeaveWorklist(ctx, domain, appointmentID, now)
	c.end(err)
	return ok, err
}

func (s *observedStore) WorklistSyncState(ctx context.Context, domain string) (*store.WorklistSync, error) {
	ctx, c := s.begin(ctx, "worklist_sync_state")
	st, err := s.Store.WorklistSyncState(ctx, domain)
	c.end(err)
	return st, err
}

func (s *observedStore) SearchWorklist(ctx context.Context, q store.WorklistQuery) (*store.WorklistPage, error) {
	ctx, c := s.begin(ctx, "search_worklist")
	p, err := s.Store.SearchWorklist(ctx, q)
	c.end(err)
	return p, err
}

func (s *observedStore) CreateSubscription(ctx context.Context, sub *store.Subscription) error {
	ctx, c := s.begin(ctx, "create_subscription")
	err := s.Store.CreateSubscription(ctx, sub)
	c.end(err)
	return err
}

func (s *observedStore) Subscription(ctx context.Context, domain, id string) (*store.Subscription, error) {
	ctx, c := s.begin(ctx, "subscription")
	sub, err := s.Store.Subscription(ctx, domain, id)
	c.end(err)
	return sub, err
}

func (s *observedStore) SearchSubscriptions(ctx context.Context, domain string, statuses []string) ([]*store.Subscription, error) {
	ctx, c := s.begin(ctx, "search_subscriptions")
	subs, err := s.Store.SearchSubscriptions(ctx, domain, statuses)
	c.end(err)
	return subs, err
}

func (s *observedStore) DeleteSubscription(ctx context.Context, domain, id string) error {
	ctx, c := s.begin(ctx, "delete_subscription")
	err := s.Store.DeleteSubscription(ctx, domain, id)
	c.end(err)
	return err
}

func (s *observedStore) Notifications(ctx context.Context, domain, id string, from, to int64, limit int) ([]store.Notification, error) {
	ctx, c := s.begin(ctx, "notifications")
	ns, err := s.Store.Notifications(ctx, domain, id, from, to, limit)
	c.end(err)
	return ns, err
}

func (s *observedStore) DispatchEvents(ctx context.Context, limit int, match store.Matcher) (int, int, error) {
	ctx, c := s.begin(ctx, "dispatch_events")
	evs, notes, err := s.Store.DispatchEvents(ctx, limit, match)
	c.end(err)
	return evs, notes, err
}

func (s *observedStore) ClaimNotifications(ctx context.Context, worker string, lease time.Duration, now time.Time) (*store.Subscription, []store.Notification, error) {
	ctx, c := s.begin(ctx, "claim_notifications")
	sub, ns, err := s.Store.ClaimNotifications(ctx, worker, lease, now)
	c.end(err)
	return sub, ns, err
}

func (s *observedStore) SettleNotifications(ctx context.Context, worker, domain, id string, through int64, failure string, now, retryAt time.Time, errorAfter time.Duration) error {
	ctx, c := s.begin(ctx, "settle_notifications")
	err := s.Store.SettleNotifications(ctx, worker, domain, id, through, failure, now, retryAt, errorAfter)
	c.end(err)
	return err
}

func (s *observedStore) SubscriptionStats(ctx context.Context) (*store.SubscriptionStats, error) {
	ctx, c := s.begin(ctx, "subscription_stats")
	st, err := s.Store.SubscriptionStats(ctx)
	c.end(err)
	return st, err
}

func (s *observedStore) TakeCommentLease(ctx context.Context, domain, owner string, lease time.Duration, now time.Time) (time.Time, bool, error) {
	ctx, c := s.begin(ctx, "take_comment_lease")
	began, ok, err := s.Store.TakeCommentLease(ctx, domain, owner, lease, now)
	c.end(err)
	return began, ok, err
}

func (s *observedStore) CommentStudies(ctx context.Context, domain string, began time.Time, only []string, limit int) ([]store.CommentStudy, error) {
	ctx, c := s.begin(ctx, "comment_studies")
	out, err := s.Store.CommentStudies(ctx, domain, began, only, limit)
	c.end(err)
	return out, err
}

func (s *observedStore) RecordComments(ctx context.Context, domain, owner string, lease time.Duration, appointmentID string, cs []store.PolledComment, now time.Time) (int, error) {
	ctx, c := s.begin(ctx, "record_comments")
	n, err := s.Store.RecordComments(ctx, domain, owner, lease, appointmentID, cs, now)
	c.end(err)
	return n, err
}
