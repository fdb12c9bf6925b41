// Package store defines what the bridge persists because QUBS cannot give it
// back: the DiagnosticReport versions it accepted and their delivery state,
// the durable queue that delivers them to QUBS exactly once, the binaries
// clients sent it, the idempotency keys of its clients, and the retention purge of all that PHI;
// and, for security rather than for QUBS, the audit trail of every read and
// change (FHIR AuditEvent) and the replay cache of SMART client assertions.
//
// This package holds only the domain types, the interfaces and the error
// kinds. The implementation is store/sqlstore, one database/sql code base
// for both engines with a small dialect for what differs: SQLite
// (embedded, the default, opened by store/sqlite) and PostgreSQL (for
// several replicas, opened by store/postgres). It passes the one
// conformance suite in store/storetest on both. docs/store.md describes the
// schema, the queue and the retention rules.
//
// Every time the store returns is in UTC and truncated to the microsecond,
// the precision both databases keep, so that what is read back equals what
// was written.
package store

import (
	"context"
	"strings"
	"time"
)

// Store is everything the bridge persists. Implementations are safe for
// concurrent use by many goroutines and, on PostgreSQL, by many replicas.
type Store interface {
	Reports
	Binaries
	Idempotency
	Deliveries
	DeliveryOps
	Purger
	Audit
	Replay
	Events
	Worklist
	CommentWatch
	Subscriptions
	// Ping reports whether the database answers (for /readyz).
	Ping(ctx context.Context) error
	// Close releases the database handles. It does not wait for callers
	// still inside a method.
	Close() error
}

// Report is one version of a DiagnosticReport the bridge accepted. Resource,
// Submission and artifact Data are PHI; everything else is the skeleton kept
// after retention purges them.
type Report struct {
	// Domain is the QUBS domain (the FHIR base), ID the bridge's own FHIR id
	// (the caller makes it; the store never invents ids).
	Domain, ID string
	// Version is 1, 2, ... (FHIR meta.versionId). The store sets it.
	Version int
	// AppointmentID is the QUBS appointment the report is for.
	AppointmentID string
	// PatientRef is "Patient/123", for search by patient ("" if unknown).
	PatientRef string
	// Status is the FHIR DiagnosticReport.status as received (preliminary,
	// final, amended...).
	Status string
	// Resource is the FHIR JSON as the bridge will serve it, minus the
	// delivery fields it adds when serving. PHI.
	Resource []byte
	// Submission is the QUBS ReportSubmission JSON to send. PHI.
	Submission []byte
	// Artifacts are the report artifacts (PDF, DICOM SR) to upload to QUBS
	// before the submission, in presentedForm order.
	Artifacts []Artifact
	// Delivery is the delivery state of this version.
	Delivery Delivery
	// CreatedAt is when this version was accepted (Last-Modified). The
	// store sets it to the current time when it is zero.
	CreatedAt time.Time
	// Purged is true once retention removed Resource, Submission and the
	// artifact bytes; the caller answers such a version with 410 Gone.
	Purged bool
	// Audit, when set on CreateReport or UpdateReport, is the audit record
	// of the write, stored in the same transaction as RecordAudits would
	// store it: the change and its record are durable together, in one
	// commit instead of two. A write that fails stores neither. Reads
	// leave it nil.
	Audit *AuditRecord
}

// Held gives ClaimDelivery the bytes of an artifact that the claiming
// process holds in memory, so that it need not read them back from the
// store: those of a version it stored moments ago (delivery.Held). a
// is the artifact as stored, without Data; Held returns its bytes, or
// nil when it does not hold them. What it returns must be exactly the
// bytes of artifact a.Index of that version: the store checks only their
// length against a.Size.
type Held func(domain, reportID string, version int, a *Artifact) []byte

// Artifact is one report artifact of a report version.
type Artifact struct {
	// Index is the artifact's position, 0, 1, ... The store numbers the
	// artifacts of a new version in slice order.
	Index       int
	FileName    string
	ContentType string
	// Size and SHA256 (lower-case hex) describe Data; the store computes
	// them from Data when they are zero.
	Size   int64
	SHA256 string
	// Data is the artifact's bytes (PHI). It is nil when purged, and when
	// not loaded: only ClaimDelivery, ReportArtifact and ArtifactBinary
	// load it.
	Data []byte
	// BinaryID is the id of the Binary under which the bridge serves the
	// bytes (the report's presentedForm.url names it); "" for artifacts
	// whose bytes are only in their report. Versions of a report that
	// keep the same bytes share it.
	BinaryID string
	// QUBSGUID and UploadedAt are set by RecordUpload once the artifact's
	// PUT to QUBS succeeded, so that a retried delivery skips it.
	QUBSGUID   string
	UploadedAt *time.Time
}

// Delivery states of a report version.
const (
	// DeliveryPending: queued, or being worked under a lease, or waiting
	// for its next attempt.
	DeliveryPending = "pending"
	// DeliveryDelivered: QUBS accepted the submission (ReportGUID is set).
	DeliveryDelivered = "delivered"
	// DeliveryFailed: permanently failed (QUBS refused it as invalid, the
	// appointment left PENDING REPORTING, or attempts ran out).
	DeliveryFailed = "failed"
	// DeliverySuperseded: never sent because a newer version for the same
	// appointment (of this report or of another) was accepted before this
	// one was delivered; QUBS keeps one report per appointment, so sending
	// this one would be wasted at best and, arriving late, would overwrite
	// the newer one at worst.
	DeliverySuperseded = "superseded"
)

// Delivery is the delivery state of one report version.
type Delivery struct {
	// State is one of DeliveryPending, DeliveryDelivered, DeliveryFailed,
	// DeliverySuperseded.
	State string
	// Attempts counts the claims of this version, the current one included.
	Attempts int
	// LastError is the last failure, as the worker wrote it. It must be
	// PHI-free: the worker writes error kinds and statuses, never bodies.
	LastError string
	// ReportGUID is the reportGuid QUBS answered, once delivered.
	ReportGUID  string
	DeliveredAt *time.Time
	// NextAttemptAt is when the version is due (again).
	NextAttemptAt time.Time
	// LeasedBy and LeaseUntil name the worker that last claimed the
	// version and when its lease (on the version's appointment) ends;
	// empty and nil once Complete, Retry or Fail released it, or once a
	// claim moved the appointment's lease to another job. LeaseUntil in
	// the past is an expired lease nobody has taken over yet. A worker must
	// stop working a job once LeaseUntil has passed: another worker may
	// have taken it over, and the store then refuses the first worker's
	// RecordUpload, Complete, Retry and Fail (see Deliveries).
	LeasedBy   string
	LeaseUntil *time.Time
}

// LastErrorKind is the kind of the last failure, as the delivery worker
// writes LastError ("<kind>: <message>", kind being a QUBS error kind such
// as "transient" or "not found", or "timeout", "superseded", "internal"),
// for the DiagnosticReport's delivery extension; "" when there was none or
// it has no kind.
func (d Delivery) LastErrorKind() string {
	kind, _, ok := strings.Cut(d.LastError, ": ")
	if !ok || strings.ContainsAny(kind, ".(\"") {
		return ""
	}
	return kind
}

// ReportFilter selects reports in SearchReports. Within one field the values
// are alternatives (OR); the fields combine with AND; an empty field does not
// filter. Filters apply to the latest version of each report.
type ReportFilter struct {
	AppointmentIDs []string
	PatientRefs    []string
	Statuses       []string
	// Limit is the page size; 0 means DefaultSearchLimit, and it is clamped
	// to MaxSearchLimit.
	Limit int
	// After is the opaque cursor SearchReports returned as next; "" starts
	// at the beginning.
	After string
	// Order is the order of the results; the zero value is by first
	// creation.
	Order ReportOrder
}

// ReportOrder orders SearchReports.
type ReportOrder int

// Orders of SearchReports.
const (
	// ReportsByCreation: by the time each report was first created, then
	// id (the default).
	ReportsByCreation ReportOrder = iota
	// ReportsByUpdate and ReportsByUpdateDesc: by the time the latest
	// version was accepted (FHIR _lastUpdated), then id.
	ReportsByUpdate
	ReportsByUpdateDesc
)

// Page sizes of SearchReports.
const (
	DefaultSearchLimit = 100
	MaxSearchLimit     = 1000
)

// Reports are the DiagnosticReport versions the bridge accepted.
type Reports interface {
	// CreateReport stores r as version 1 of a new report and enqueues its
	// delivery in the same transaction, so an accepted report is never lost
	// and never delivered without being stored. It sets r.Version to 1,
	// r.CreatedAt (when zero), the artifacts' Index, Size and SHA256, and
	// r.Delivery (pending, due at r.Delivery.NextAttemptAt or, when zero,
	// at r.CreatedAt).
	// Errors: ErrConflict if (r.Domain, r.ID) exists; ErrInvalid if Domain,
	// ID, AppointmentID, Resource or Submission is empty.
	CreateReport(ctx context.Context, r *Report) error
	// UpdateReport stores r as the next version of an existing report and
	// enqueues its delivery in the same transaction. With ifMatch > 0 the
	// current version must equal ifMatch (FHIR If-Match: W/"n"). It sets
	// r.Version and the fields CreateReport sets. Older versions still
	// pending, of this report or of another for the same appointment, are
	// superseded when the queue reaches them (see Deliveries).
	// Errors: ErrNotFound if the report does not exist; ErrPrecondition if
	// ifMatch > 0 and differs from the current version; ErrInvalid as for
	// CreateReport, and if r.AppointmentID differs from the report's (a
	// report never moves to another appointment: its versions share one
	// delivery queue, that of the appointment).
	UpdateReport(ctx context.Context, r *Report, ifMatch int) error
	// Report returns the latest version of a report, without artifact Data.
	// Errors: ErrNotFound.
	Report(ctx context.Context, domain, id string) (*Report, error)
	// ReportVersion returns one version of a report (FHIR vread), without
	// artifact Data. Errors: ErrNotFound if the report or the version does
	// not exist.
	ReportVersion(ctx context.Context, domain, id string, version int) (*Report, error)
	// ReportArtifact returns one artifact of a report version with its
	// Data (nil when purged). Errors: ErrNotFound.
	ReportArtifact(ctx context.Context, domain, id string, version, index int) (*Artifact, error)
	// ArtifactBinary returns the artifact whose BinaryID is binaryID, with
	// its Data (nil when purged), from the newest version of its report
	// that has it. Errors: ErrNotFound.
	ArtifactBinary(ctx context.Context, domain, binaryID string) (*ReportBinary, error)
	// SearchReports returns the latest versions of the domain's reports that
	// match f, without artifact Data, ordered by the time each report was
	// first created, then id (keyset paging, stable while reports are
	// added or updated). next is the cursor of the following page, "" on
	// the last page. Errors: ErrInvalid for a malformed f.After.
	SearchReports(ctx context.Context, domain string, f ReportFilter) (reports []*Report, next string, err error)
	// CountReports counts the domain's reports matching f (its Limit,
	// After and Order do not matter), for FHIR _total and _summary=count.
	CountReports(ctx context.Context, domain string, f ReportFilter) (int, error)
}

// ReportBinary is a report artifact served as a Binary, with what the
// server needs to answer for it.
type ReportBinary struct {
	Domain, ReportID string
	Version          int
	// PatientRef is the report version's ("" if unknown), for the audit.
	PatientRef string
	// CreatedAt is when the report version was accepted.
	CreatedAt time.Time
	// Purged is true once retention removed the bytes (Artifact.Data nil).
	Purged   bool
	Artifact Artifact
}

// Deliveries is the durable queue of report versions to deliver to QUBS.
// Several workers, in one or several replicas, poll it with ClaimDelivery.
//
// The queue is ordered per QUBS appointment, (domain, appointment id), not
// per report: QUBS keeps one report per appointment and each submission
// replaces the previous one, so two DiagnosticReports the bridge accepted
// for one appointment (ids r1 and r2) overwrite each other in QUBS exactly
// as two versions of one report do. A late preliminary of r1 must never
// overwrite a final of r2.
//
// A claimed job is leased, and the lease covers its appointment: until it
// expires no other worker can claim any version of any report of that
// appointment, so two workers never work one job, or two jobs of one
// appointment, at once. When the lease expires (the worker crashed or
// overran) another worker takes the appointment over, so a crash never
// loses a job. A worker must therefore finish each job, QUBS calls
// included, within its lease: run the job under
// context.WithDeadline(ctx, *Delivery.LeaseUntil) minus a margin.
// Appointments do not block each other.
//
// Within an appointment, versions are delivered in acceptance order and
// never overtake each other. When ClaimDelivery reaches an appointment with
// several pending versions (of one report or of several) it claims the
// newest accepted one and marks every older pending one DeliverySuperseded
// (never sent; Delivery.LastError names the report and version that
// superseded it). A version under an unexpired lease is never superseded:
// newer versions wait until it is completed, retried or failed, or its
// lease expires. A version already delivered or failed is never touched.
// Acceptance order is the order in which CreateReport and UpdateReport
// committed versions of the appointment (they serialise on it), not
// Report.CreatedAt, which the caller may set and replicas' clocks skew.
//
// Jobs are identified by (domain, report id, version). RecordUpload,
// CompleteDelivery, RetryDelivery and FailDelivery are fenced: they take
// the worker's name and answer ErrConflict unless that worker holds the
// lease on that very version (a worker that overran its lease and lost the
// job, to a takeover or to a newer version, can no longer change it; in
// particular its late RetryDelivery cannot release its successor's lease).
// A lease that expired and that nobody took over is still its worker's.
// Worker names must therefore be unique among the workers sharing a store.
//
// Clocks: ClaimDelivery compares due times and lease ends with the
// caller's now, and a lease ends at the claimer's now plus lease. Replicas'
// clocks must agree within a few seconds and leases be far longer than
// that skew (minutes, against NTP's milliseconds). A replica whose clock
// runs ahead takes an unexpired lease over early; the fencing above keeps
// the two workers from settling the job twice, and QUBS Idempotency-Keys
// make their overlapping QUBS calls replays.
type Deliveries interface {
	// ClaimDelivery leases the appointment of the next due job to worker
	// until now+lease and returns that report version with its artifacts'
	// Data; its Delivery.Attempts already counts this claim. An
	// appointment is due when the newest pending version of any of its
	// reports has NextAttemptAt <= now and no unexpired lease is on the
	// appointment; the one due longest is claimed first, and its newest
	// pending version is the job (older pending ones are superseded).
	// Artifacts whose bytes held returns are not read from the store (held
	// may be nil).
	// Errors: ErrNotFound when no job is due; ErrInvalid for lease <= 0 or
	// an empty worker.
	ClaimDelivery(ctx context.Context, worker string, lease time.Duration, now time.Time, held Held) (*Report, error)
	// RecordUpload records that artifact index of a version was uploaded to
	// QUBS as qubsGUID at at, so a retry after a crash or a failure does
	// not upload it again. Recording the same artifact again overwrites.
	// Errors: ErrInvalid for an empty worker; ErrNotFound if the version or
	// artifact does not exist; ErrConflict if the version is no longer
	// pending or worker does not hold its lease.
	RecordUpload(ctx context.Context, worker, domain, id string, version, index int, qubsGUID string, at time.Time) error
	// CompleteDelivery marks a version delivered with the reportGuid QUBS
	// answered and releases the appointment's lease; the newest pending
	// version of the appointment, if any, becomes due. Completing a
	// delivered version again is a no-op, whoever asks.
	// Errors: ErrInvalid for an empty worker; ErrNotFound; ErrConflict if
	// the version was failed or superseded, or worker does not hold its
	// lease.
	CompleteDelivery(ctx context.Context, worker, domain, id string, version int, reportGUID string, at time.Time) error
	// RetryDelivery records a transient failure (lastError must be
	// PHI-free), makes the version due again at next and releases the
	// appointment's lease. Errors: ErrInvalid for an empty worker;
	// ErrNotFound; ErrConflict if the version is not pending or worker
	// does not hold its lease.
	RetryDelivery(ctx context.Context, worker, domain, id string, version int, lastError string, next time.Time) error
	// FailDelivery marks a version permanently failed (lastError must be
	// PHI-free) and releases the appointment's lease; the newest pending
	// version of the appointment, if any, becomes due. Failing a failed
	// version again is a no-op, whoever asks.
	// Errors: ErrInvalid for an empty worker; ErrNotFound; ErrConflict if
	// the version was delivered or superseded, or worker does not hold its
	// lease.
	FailDelivery(ctx context.Context, worker, domain, id string, version int, lastError string) error
	// RecordUploadSlot records that artifact index of a version has the
	// QUBS attachment slot qubsGUID, before its PUT is sent: QUBSGUID is
	// set and UploadedAt stays nil, so a worker that takes the job over
	// after a crash between the PUT and RecordUpload knows which slot to
	// ask QUBS about instead of creating a second one. It does not touch
	// an artifact already recorded as uploaded.
	// Errors: as RecordUpload.
	RecordUploadSlot(ctx context.Context, worker, domain, id string, version, index int, qubsGUID string) error
	// RenewLease extends the lease worker holds on a version's appointment
	// to now+lease (a heartbeat: a slow but live worker keeps its job,
	// while a crashed one's lease runs out soon). newer reports whether a
	// version of the appointment was accepted after this one: it will
	// supersede this one at the next claim, so the worker should stop
	// before creating more upload slots and give the job back.
	// Errors: ErrInvalid for an empty worker or lease <= 0; ErrNotFound;
	// ErrConflict if the version is not pending or worker does not hold
	// its lease.
	RenewLease(ctx context.Context, worker, domain, id string, version int, lease time.Duration, now time.Time) (newer bool, err error)
	// PendingDeliveries counts the pending versions, leased or not, for
	// metrics and /readyz.
	PendingDeliveries(ctx context.Context) (int, error)
	// DeliveryStats returns, per domain that has any, the pending and
	// failed versions and the acceptance time of the oldest pending one,
	// ordered by domain (for /readyz).
	DeliveryStats(ctx context.Context) ([]DeliveryStats, error)
}

// DeliveryStats are one domain's delivery figures.
type DeliveryStats struct {
	Domain  string
	Pending int
	// OldestPending is the CreatedAt of the oldest pending version; nil
	// when none is pending.
	OldestPending *time.Time
	// Failed counts the versions whose delivery failed permanently.
	Failed int
}

// Binary is a Binary resource sent to the bridge (POST Binary), referenced by
// a DiagnosticReport's presentedForm.url. Data is PHI.
type Binary struct {
	Domain, ID, ContentType string
	Data                    []byte
	// Size and SHA256 (lower-case hex) describe Data; the store computes
	// them when they are zero.
	Size      int64
	SHA256    string
	CreatedAt time.Time
	// Purged is true once retention removed Data.
	Purged bool
}

// Binaries are the Binary resources sent to the bridge.
type Binaries interface {
	// CreateBinary stores b, setting CreatedAt (when zero), Size and SHA256.
	// Errors: ErrConflict if (Domain, ID) exists; ErrInvalid if Domain or
	// ID is empty.
	CreateBinary(ctx context.Context, b *Binary) error
	// Binary returns a binary with its Data. Errors: ErrNotFound.
	Binary(ctx context.Context, domain, id string) (*Binary, error)
}

// IdempotencyRecord maps a client's Idempotency-Key (or If-None-Exist, or a
// hash of the resource) within a scope to the resource it created. It holds
// no PHI: RequestHash is a digest of the request.
type IdempotencyRecord struct {
	Domain string
	// Scope is the operation, e.g. "DiagnosticReport:create".
	Scope string
	Key   string
	// RequestHash identifies the request payload, so a key reused with
	// another payload can be refused.
	RequestHash  string
	ResourceType string
	ResourceID   string
	Version      int
	CreatedAt    time.Time
}

// Idempotency records which resource each idempotent request created.
type Idempotency interface {
	// ClaimIdempotency inserts rec, setting rec.CreatedAt when zero, unless
	// a record with the same (Domain, Scope, Key) exists; then it returns
	// that record (and no error), so the caller replays it, or answers
	// 409/422 when its RequestHash differs. It returns (nil, nil) when rec
	// was inserted. Atomic across goroutines and replicas: of concurrent
	// claims exactly one inserts.
	//
	// The claim is made before the resource is created, so a crash in
	// between leaves a record naming a resource that does not exist: a
	// caller that gets an existing record whose resource is not found
	// creates it with the recorded ResourceID (the create's ErrConflict
	// settles a race between two such callers).
	// Errors: ErrInvalid if Domain, Scope or Key is empty.
	ClaimIdempotency(ctx context.Context, rec *IdempotencyRecord) (existing *IdempotencyRecord, err error)
	// LookupIdempotency returns the record of (domain, scope, key) without
	// claiming it, for a caller that must know whether a request was seen
	// before doing anything else.
	// Errors: ErrNotFound if there is none; ErrInvalid if domain, scope or
	// key is empty.
	LookupIdempotency(ctx context.Context, domain, scope, key string) (*IdempotencyRecord, error)
}

// ArtifactReserver is a Store that can make room for artifacts' bytes
// ahead of time, off the request's path (sqlstore on PostgreSQL; a no-op
// on SQLite): ReserveArtifactSpace adds room up to want bytes when less
// than half of that is free, and returns how much it added.
type ArtifactReserver interface {
	ReserveArtifactSpace(ctx context.Context, want int64) (int64, error)
}

// Purger implements retention.
type Purger interface {
	// PurgeBefore removes the PHI created before cutoff: report Resource,
	// Submission and artifact Data, and binary Data. It keeps the skeleton (ids, versions,
	// appointment ids, delivery state, sizes and hashes) with Purged set,
	// so ids still answer (410 Gone) and nothing is delivered again.
	// Report versions whose delivery is still pending are kept until the
	// delivery ends: purging them would lose a report QUBS has not got.
	// Events created before cutoff lose their Resource. Worklist index
	// rows whose study left the worklist before cutoff are deleted.
	// Subscription notifications their endpoint accepted before cutoff
	// are deleted, and so are events older than cutoff that were
	// dispatched and that no notification still held names (eventNumbers
	// and seqs go on from where they were).
	// It returns the number of rows purged (report versions, binaries,
	// events, index rows, notifications) and is idempotent. Audit records
	// (PurgeAuditBefore), idempotency records and jti claims hold no PHI
	// and are left alone.
	PurgeBefore(ctx context.Context, cutoff time.Time) (int, error)
}

// DeliveryOps is what an operator does about deliveries that went wrong:
// list them, send a failed version again, give one up (the `deliveries`
// command and the $redeliver operation; docs/deliveries.md). Nothing here
// returns PHI.
type DeliveryOps interface {
	// ListDeliveries returns the delivery state of the report versions f
	// selects, the most recently accepted first.
	// Errors: ErrInvalid for an unknown state in f.States.
	ListDeliveries(ctx context.Context, f DeliveryFilter) ([]DeliveryInfo, error)
	// RequeueDelivery makes a failed version pending again, due at now,
	// so that the delivery queue sends it once more; its attempts and last
	// error are kept as history.
	// Errors: ErrNotFound; ErrConflict if the version is not failed, was
	// abandoned, was purged by retention (nothing left to send), or a
	// newer version of its appointment (of any report) was accepted since
	// (it would only be superseded: QUBS keeps one report per appointment).
	RequeueDelivery(ctx context.Context, domain, id string, version int, now time.Time) error
	// AbandonDelivery gives a pending or failed version up: it becomes
	// failed with a last error of kind DeliveryAbandoned, is never sent
	// afterwards and cannot be requeued. Abandoning an abandoned version
	// again is a no-op.
	// Errors: ErrNotFound; ErrConflict if the version was delivered or
	// superseded, or a worker holds an unexpired lease on it at now (it
	// may be sending it: try again once the attempt settled).
	AbandonDelivery(ctx context.Context, domain, id string, version int, now time.Time) error
}

// DeliveryAbandoned is the kind of Delivery.LastError of a version an
// operator gave up ("abandoned: ...").
const DeliveryAbandoned = "abandoned"

// DeliveryFilter selects versions in ListDeliveries; empty fields do not
// filter.
type DeliveryFilter struct {
	Domain string
	// States are alternatives among DeliveryPending, DeliveryDelivered,
	// DeliveryFailed, DeliverySuperseded.
	States []string
	// Limit caps the result; 0 means DefaultSearchLimit, and it is clamped
	// to MaxSearchLimit.
	Limit int
}

// DeliveryInfo is one report version's delivery state, without PHI: ids,
// states, counts, PHI-free errors and times.
type DeliveryInfo struct {
	Domain, ReportID string
	Version          int
	AppointmentID    string
	CreatedAt        time.Time
	Delivery         Delivery
	Purged           bool
}

// SchemaLevel is where a database's migrations stand against the ones a
// binary embeds (the check command; docs/store.md).
type SchemaLevel struct {
	// Applied is the highest migration applied to the database, 0 for a
	// database without any.
	Applied int
	// Known is the highest migration the binary embeds.
	Known int
	// New is set when the database does not exist yet (a SQLite file
	// serve would create).
	New bool
}

// State is "up to date", "behind" (Open applies the rest) or "ahead" (a
// newer release migrated the database).
func (l SchemaLevel) State() string {
	switch {
	case l.Applied > l.Known:
		return "ahead"
	case l.Applied < l.Known:
		return "behind"
	}
	return "up to date"
}

// Event topics: what a subscriber can be told about (docs/subscriptions.md).
const (
	// EventTopicWorklist: a study arrived in, changed in or left the
	// pending-reporting worklist (kinds EventArrived, EventChanged,
	// EventLeft; focus the ServiceRequest).
	EventTopicWorklist = "worklist"
	// EventTopicReportDelivery: a DiagnosticReport version's delivery to
	// QUBS ended (kinds EventDelivered, EventFailed; focus the
	// DiagnosticReport).
	EventTopicReportDelivery = "report-delivery"
	// EventTopicComments: a comment or alert arrived on a study (kind
	// EventCreated; focus the Communication or Flag).
	EventTopicComments = "comments"
)

// Event kinds.
const (
	EventArrived   = "arrived"
	EventChanged   = "changed"
	EventLeft      = "left"
	EventDelivered = "delivered"
	EventFailed    = "failed"
	EventCreated   = "created"
)

// Event is one entry of the event log: something that became true, which
// subscribers may be told. It is appended in the transaction that makes it
// true (an index sync, a delivery's end), so a crash neither loses nor
// invents one.
type Event struct {
	// Seq orders the log; the store sets it. Seqs increase in commit
	// order and are never reused, so a reader that has handled every
	// event up to N misses nothing by asking for those after N.
	Seq int64
	// Domain is the QUBS domain (the FHIR base).
	Domain string
	// Topic is one of the EventTopic constants, Kind one of the Event
	// kinds.
	Topic, Kind string
	// FocusType and FocusID name the FHIR resource the event is about
	// ("ServiceRequest", its id).
	FocusType, FocusID string
	// AppointmentID is the QUBS appointment the event concerns ("" if
	// none).
	AppointmentID string
	// At is when the bridge saw it happen; the store sets it when zero.
	At time.Time
	// Resource is the focus resource as it was then (FHIR JSON; PHI),
	// nil when not kept or purged by retention.
	Resource []byte
}

// Events is the event log. Producers inside the store (index sync,
// delivery ends) append in their own transactions; AppendEvents is for
// producers outside it.
type Events interface {
	// AppendEvents appends evs in one transaction, setting each one's Seq
	// and, when zero, At.
	// Errors: ErrInvalid if an event lacks Domain, Topic, Kind, FocusType
	// or FocusID.
	AppendEvents(ctx context.Context, evs ...*Event) error
	// EventsAfter returns up to limit events with Seq > after, in Seq
	// order. Errors: ErrInvalid for limit <= 0.
	EventsAfter(ctx context.Context, after int64, limit int) ([]Event, error)
}

// WorklistRow is one appointment of a domain's worklist index
// (docs/worklist-index.md): the columns searches filter and sort on,
// derived from the ServiceRequest the appointment maps to so that search
// semantics are FHIR's, and the appointment and ServiceRequest themselves
// (PHI).
type WorklistRow struct {
	Domain, AppointmentID string
	// ID is the ServiceRequest id.
	ID string
	// Patient, Performer and Requester are references ("Patient/p1"), ""
	// when the ServiceRequest has none.
	Patient, Performer, Requester string
	// Status and Priority are the ServiceRequest's codes ("" for none);
	// PriorityRank orders by clinical urgency (WorklistPriorityRank).
	Status, Priority string
	PriorityRank     int
	// OccurrenceStart and OccurrenceEnd are the range occurrence[x]
	// stands for, end exclusive (a date is the whole site-local day); nil
	// when there is none.
	OccurrenceStart, OccurrenceEnd *time.Time
	// NeededBy is the report-needed-by instant, nil when there is none.
	NeededBy *time.Time
	// StartedStart and StartedEnd are the range ImagingStudy.started
	// stands for, end exclusive (a dateTime its second, a date the whole
	// site-local day); nil when there is none. Written by ApplyWorklist
	// for WorklistFieldStartedStart/End conditions; SearchWorklist does
	// not read them back.
	StartedStart, StartedEnd *time.Time
	// OccurrenceLocalStart/End and StartedLocalStart/End are the same
	// ranges as the study's site's wall clock ("2006-01-02T15:04:05",
	// WorklistLocalLayout; end exclusive; "" for none): what a search value
	// without a time is compared with, so that it is each site's own day
	// in one condition.
	OccurrenceLocalStart, OccurrenceLocalEnd string
	StartedLocalStart, StartedLocalEnd       string
	// Site is the scheduled site (locationCode text).
	Site string
	// Tokens are the coded values token parameters match.
	Tokens []WorklistToken
	// Appointment is the QUBS appointment as received (JSON), Resource the
	// ServiceRequest (FHIR JSON, meta.lastUpdated set to when the bridge
	// saw this content first).
	Appointment, Resource []byte
	// Digest identifies the content: a row whose digest is unchanged is
	// not changed.
	Digest string
	// Set by the store: when the content last changed, when the row was
	// first and last seen, and when it left (nil while on the worklist).
	LastUpdated, FirstSeen, SeenAt time.Time
	LeftAt                         *time.Time
}

// WorklistLocalLayout is the text of a wall-clock time in the worklist
// index: fixed width, so that it sorts as the times do (WorklistLocalText).
const WorklistLocalLayout = "2006-01-02T15:04:05"

// WorklistLocalText is t's wall clock (its own zone's) as the worklist
// index compares it: WorklistLocalLayout, and past the years it can
// print in four digits, the text just after or before every real time,
// so that the order holds (Go prints year 10000, the exclusive end of
// 9999-12-31, with five digits, which would sort before "2031").
func WorklistLocalText(t time.Time) string {
	switch y := t.Year(); {
	case y > 9999:
		return "9999-12-31T24:00:00"
	case y < 0:
		return "0000-01-01T00:00:00"
	}
	return t.Format(WorklistLocalLayout)
}

// WorklistRowFormat is the row_format of the rows the store writes now
// (docs/worklist-index.md): 1 since migration 0013 added the started
// columns, 2 since the site is kept as BRIDGE_SITE_TIMEZONES spells it
// (mapping.Zones.SiteName), 3 since 0017 added the wall-clock ranges
// (WorklistFieldOccurrenceLocalStart...). An unchanged row of an older
// format gets its derived columns rewritten by the next walk that sees
// it, without an event (its content did not change); until then its
// wall-clock ranges are NULL or stale.
const WorklistRowFormat = 3

// WorklistToken is one coded value of a row: Param names the search
// parameter ("identifier", "code", "modality").
type WorklistToken struct {
	Param, System, Code string
}

// WorklistPriorityRank is the clinical-urgency rank of a FHIR request
// priority, most urgent first; no priority ranks last.
func WorklistPriorityRank(code string) int {
	switch code {
	case "stat":
		return 1
	case "asap":
		return 2
	case "urgent":
		return 3
	case "routine":
		return 4
	}
	return 9
}

// WorklistChange is what ApplyWorklist did to one row.
type WorklistChange struct {
	AppointmentID string
	// Kind is EventArrived, EventChanged or "" (unchanged: only seen).
	Kind string
}

// WorklistSync is a domain's sync state.
type WorklistSync struct {
	Domain string
	// Owner holds the lease until LeaseUntil ("" when never taken).
	Owner      string
	LeaseUntil *time.Time
	// Started and Finished bound the last complete walk (nil before the
	// first): everything QUBS changed before Started is in the index.
	Started, Finished *time.Time
}

// Worklist fields a WorklistCond compares.
const (
	WorklistFieldID              = "id"
	WorklistFieldPatient         = "patient"
	WorklistFieldPerformer       = "performer"
	WorklistFieldRequester       = "requester"
	WorklistFieldStatus          = "status"
	WorklistFieldPriority        = "priority"
	WorklistFieldPriorityRank    = "priority_rank"
	WorklistFieldOccurrenceStart = "occurrence_start"
	WorklistFieldOccurrenceEnd   = "occurrence_end"
	WorklistFieldNeededBy        = "needed_by"
	WorklistFieldLastUpdated     = "last_updated"
	WorklistFieldSite            = "site"
	// ImagingStudy.started as a range (WorklistRow.StartedStart/End).
	WorklistFieldStartedStart = "started_start"
	WorklistFieldStartedEnd   = "started_end"
	// The ranges as the site's wall clock, text in WorklistLocalLayout
	// (WorklistRow.OccurrenceLocalStart...); NULL for none, as the times
	// (no comparison holds; Op "null" finds it).
	WorklistFieldOccurrenceLocalStart = "occurrence_local_start"
	WorklistFieldOccurrenceLocalEnd   = "occurrence_local_end"
	WorklistFieldStartedLocalStart    = "started_local_start"
	WorklistFieldStartedLocalEnd      = "started_local_end"
	// WorklistFieldRowFormat is the format the row was written in
	// (WorklistRowFormat), an int.
	WorklistFieldRowFormat = "row_format"
	// WorklistFieldTaskStatus is the study's Task status, derived in the
	// query from the report versions the store delivered for the
	// appointment (as mapping.TaskStateOf does): "requested" with none,
	// "in-progress" when the latest delivered is preliminary or partial,
	// "completed" otherwise. Compared with = or <>.
	WorklistFieldTaskStatus = "task_status"
	// WorklistFieldTaskLastUpdated is the later of the row's LastUpdated
	// and the latest delivery of a report for the appointment: when the
	// study's Task last changed.
	WorklistFieldTaskLastUpdated = "task_last_updated"
)

// WorklistCond is one condition on a row: Field Op Value for a column
// (Op one of = <> < <= > >=, Value a string or time.Time; Op "null" or
// "notnull" for a missing or present value, "" for strings), or, with
// Token set, "the row has a token of parameter Field matching it".
type WorklistCond struct {
	Field string
	Op    string
	Value any
	// Token matches Tokens of parameter Field: System must equal when
	// HasSystem, Code when not empty.
	Token *WorklistTokenMatch
}

// WorklistTokenMatch is a token search value (FHIR system|code rules).
type WorklistTokenMatch struct {
	System, Code string
	HasSystem    bool
}

// WorklistClause holds when any of its alternatives holds, and an
// alternative when all its conditions do (FHIR: a comma is OR, a repeated
// parameter AND, and a date prefix may need two conditions).
type WorklistClause [][]WorklistCond

// WorklistSortKey is one key of a search's order.
type WorklistSortKey struct {
	// Field is WorklistFieldPriorityRank, WorklistFieldOccurrenceStart,
	// WorklistFieldNeededBy, WorklistFieldLastUpdated or WorklistFieldID.
	Field string
	Desc  bool
}

// WorklistQuery is a search of the index: rows on the worklist (not left)
// of Domain matching every clause of Where, in Sort order (then by id),
// Count at a time.
type WorklistQuery struct {
	Domain string
	Where  []WorklistClause
	Sort   []WorklistSortKey
	// Count is the page size, 1..MaxSearchLimit.
	Count int
	// After is the next cursor of the previous page ("" for the first).
	After string
	// Total asks for the number of matches.
	Total bool
	// ResourceOnly asks for what serving the ServiceRequests takes, no
	// more: the rows carry AppointmentID, ID, Patient, Resource, Digest,
	// LastUpdated and the values of the sort keys; the rest (Appointment
	// among them) is left zero. It makes a page several times cheaper.
	ResourceOnly bool
}

// WorklistPage is one page of a WorklistQuery.
type WorklistPage struct {
	Rows []WorklistRow
	// Next is the cursor of the next page, "" on the last.
	Next string
	// Total is the number of matches when asked, else -1.
	Total int
}

// Worklist is the worklist index: per QUBS domain, one row per appointment
// pending reporting, kept by a sync loop that walks QUBS under a lease
// (one replica at a time), with every arrival, change and departure
// appended to the event log in the same transaction. Rows that left are
// kept until PurgeBefore removes them (their PHI with them).
type Worklist interface {
	// TakeWorklistLease makes owner the domain's syncer until now+lease
	// when nobody else holds an unexpired lease, and reports whether it
	// did. Errors: ErrInvalid for an empty domain or owner, lease <= 0.
	TakeWorklistLease(ctx context.Context, domain, owner string, lease time.Duration, now time.Time) (bool, error)
	// ReleaseWorklistLease gives owner's lease up (a no-op when it holds
	// none).
	ReleaseWorklistLease(ctx context.Context, domain, owner string) error
	// ApplyWorklist records rows (of domain) seen at now in one
	// transaction: new ones and ones that had left arrive, ones whose
	// Digest differs change (LastUpdated now), the others are only seen;
	// an event (topic worklist, Resource the row's) is appended for each
	// arrival and change. With owner set, owner must hold the lease, and
	// it is renewed to now+lease (fencing a syncer that lost it); an empty
	// owner is a read's refresh, not fenced.
	// Errors: ErrInvalid for a row without ids or digest; ErrConflict when
	// owner does not hold the lease.
	ApplyWorklist(ctx context.Context, domain, owner string, lease time.Duration, rows []WorklistRow, now time.Time) ([]WorklistChange, error)
	// FinishWorklistSync ends owner's complete walk begun at started: rows
	// not seen since started leave (an event each) and the domain's sync
	// state records the walk. It returns the ids that left.
	// Errors: ErrConflict when owner does not hold the lease.
	FinishWorklistSync(ctx context.Context, domain, owner string, started, now time.Time) ([]string, error)
	// LeaveWorklist marks one row left at now (QUBS no longer has it),
	// with an event, and reports whether it was on the worklist.
	LeaveWorklist(ctx context.Context, domain, appointmentID string, now time.Time) (bool, error)
	// WorklistSyncState returns the domain's sync state (zero times before
	// the first walk).
	WorklistSyncState(ctx context.Context, domain string) (*WorklistSync, error)
	// SearchWorklist runs q. Errors: ErrInvalid for an unknown field,
	// operator or cursor.
	SearchWorklist(ctx context.Context, q WorklistQuery) (*WorklistPage, error)
}

// PolledComment is one comment or alert as QUBS listed it, for
// RecordComments: its ids and time, no text.
type PolledComment struct {
	GUID string
	// Modified is its lastModifiedDateTime (else its commentDateTime;
	// zero when QUBS gives neither).
	Modified time.Time
	// Event is what to append when the comment is news (Domain, Topic,
	// FocusType, FocusID, AppointmentID, Resource set by the caller); the
	// store sets Kind (EventCreated, or EventChanged for an edit) and At.
	Event *Event
}

// CommentStudy is a study on the worklist index as the comment watch
// schedules it.
type CommentStudy struct {
	AppointmentID string
	// ID is the ServiceRequest id, Patient its subject ("Patient/p1",
	// "" when none).
	ID, Patient string
	// PolledAt is when its comments were last polled (nil never).
	PolledAt *time.Time
}

// CommentWatch is the state of the comment watch (docs/subscriptions.md,
// "Comments"): QUBS has no comment feed, so one replica per domain (a
// lease, as the worklist sync's) polls the comments of the studies on the
// worklist index and records, per comment, what it saw, appending an
// event for what is news in the same transaction, so a crash neither
// loses nor repeats one. Ids and times only: nothing here is PHI.
type CommentWatch interface {
	// TakeCommentLease makes owner the domain's comment watcher until
	// now+lease when nobody else holds an unexpired lease, and reports
	// whether it did and when the domain's watch began: now, when no
	// watcher was active within ten leases (the first watch, or one
	// resumed after a pause: not a QUBS outage's backoff nor a
	// hand-over), else the time kept.
	// Errors: ErrInvalid for an empty domain or owner, lease <= 0.
	TakeCommentLease(ctx context.Context, domain, owner string, lease time.Duration, now time.Time) (began time.Time, ok bool, err error)
	// ReleaseCommentLease gives owner's lease up (a no-op when it holds
	// none); the watch's beginning is kept for a successor within ten
	// leases.
	ReleaseCommentLease(ctx context.Context, domain, owner string) error
	// CommentStudies returns up to limit studies on the domain's index
	// (not left), restricted to the ServiceRequest ids only when only is
	// not nil, most due first: not polled since began and arrived since
	// began; then changed (LastUpdated) since last polled; then not
	// polled since began; then by when last polled.
	CommentStudies(ctx context.Context, domain string, began time.Time, only []string, limit int) ([]CommentStudy, error)
	// RecordComments records what a poll of one study's comments found at
	// now and appends an event for each comment that is news, in one
	// transaction, returning how many. A comment is news when its GUID
	// was never seen in the domain (EventCreated) or its Modified is
	// later than seen (EventChanged), and either the study was polled
	// since the watch began, or it arrived on the index since then, or
	// Modified is since then (less a minute, for QUBS's clock and its
	// whole seconds): the first poll of a study that was there before the
	// watch records what it had without telling it.
	// With owner set, owner must hold the lease (renewed to now+lease)
	// and the study's poll is recorded; an empty owner is the bridge
	// telling of a comment it created itself: news unless seen, with no
	// poll recorded.
	// Errors: ErrInvalid for a comment without GUID or Event;
	// ErrConflict when owner does not hold the lease.
	RecordComments(ctx context.Context, domain, owner string, lease time.Duration, appointmentID string, cs []PolledComment, now time.Time) (int, error)
	// EndCommentWatch forgets a study's polls (QUBS no longer has it);
	// what was seen of its comments stays until retention.
	EndCommentWatch(ctx context.Context, domain, appointmentID string) error
}

// Subscription statuses (FHIR R4 Subscription.status).
const (
	SubscriptionRequested = "requested"
	SubscriptionActive    = "active"
	SubscriptionError     = "error"
	SubscriptionOff       = "off"
)

// Payload contents of a notification (the Backport IG's
// backport-payload-content).
const (
	PayloadEmpty        = "empty"
	PayloadIDOnly       = "id-only"
	PayloadFullResource = "full-resource"
)

// Subscription is one FHIR Subscription (R4 Backport IG, topic-based,
// rest-hook) with the state of its notification stream. Headers are
// secrets (the receiver's authorization): they are stored to be sent and
// never logged nor served back.
type Subscription struct {
	Domain, ID string
	// Status is one of the Subscription constants.
	Status string
	// Topic is the event topic (EventTopic...), Criteria the filter
	// criteria as sent ("ServiceRequest?modality=CT"), all of which an
	// event must match.
	Topic    string
	Criteria []string
	Endpoint string
	// Content is one of the Payload constants.
	Content         string
	Headers         []string
	HeartbeatPeriod time.Duration
	Timeout         time.Duration
	MaxCount        int
	// Resource is the Subscription as accepted (headers redacted); the
	// server sets status and error when serving it.
	Resource []byte
	// StartSeq: events up to this seq predate the subscription and are
	// not matched. CreateSubscription sets it.
	StartSeq int64
	// EventsSinceStart is the last eventNumber handed out (the IG's
	// events-since-subscription-start), DeliveredThrough the last one the
	// endpoint accepted.
	EventsSinceStart, DeliveredThrough int64
	// PrunedThrough is the last eventNumber retention removed from the
	// outbox (every number up to it was delivered and is gone; 0 when
	// none was). Set by Subscription only.
	PrunedThrough int64
	// Error says why the last attempt failed (PHI-free); "" after a
	// success.
	Error string
	// Attempts counts the failed attempts since the last success;
	// FailingSince is the first of them.
	Attempts     int
	FailingSince *time.Time
	// RetryAt is when a failed subscription is tried again; nil when not
	// failing.
	RetryAt *time.Time
	// HeartbeatAt is when an idle active subscription is due a heartbeat;
	// LastSentAt when a notification last reached the endpoint.
	HeartbeatAt, LastSentAt *time.Time
	CreatedAt               time.Time
	// LeasedBy and LeaseUntil name the sender holding the subscription.
	LeasedBy   string
	LeaseUntil *time.Time
}

// Notification is one event as numbered for one subscription.
type Notification struct {
	EventNumber int64
	Event       Event
	// SentAt is when the endpoint accepted it; nil before.
	SentAt *time.Time
}

// Matcher reports whether ev matches sub's filter criteria (the store has
// already matched domain, topic and start).
type Matcher func(ev *Event, sub *Subscription) bool

// Subscriptions are the FHIR Subscriptions and their durable outbox. The
// dispatcher turns the event log into numbered notifications
// (DispatchEvents); senders claim a subscription at a time, in the manner
// of Deliveries, and send its notifications in eventNumber order
// (ClaimNotifications, SettleNotifications).
type Subscriptions interface {
	// CreateSubscription stores sub with status requested, due at once
	// (the handshake); it sets StartSeq to the log's last seq and
	// CreatedAt. Errors: ErrConflict if (Domain, ID) exists; ErrInvalid
	// for missing fields.
	CreateSubscription(ctx context.Context, sub *Subscription) error
	// Subscription returns one. Errors: ErrNotFound.
	Subscription(ctx context.Context, domain, id string) (*Subscription, error)
	// SearchSubscriptions returns the domain's subscriptions whose status
	// is one of statuses (all when empty), by id, at most MaxSearchLimit.
	SearchSubscriptions(ctx context.Context, domain string, statuses []string) ([]*Subscription, error)
	// DeleteSubscription removes a subscription and its outbox.
	// Errors: ErrNotFound.
	DeleteSubscription(ctx context.Context, domain, id string) error
	// Notifications returns a subscription's notifications with
	// from <= eventNumber <= to, in order, at most limit ($events).
	// Errors: ErrNotFound for an unknown subscription.
	Notifications(ctx context.Context, domain, id string, from, to int64, limit int) ([]Notification, error)
	// DispatchEvents matches up to limit events after the dispatcher's
	// watermark against the subscriptions of their domain and topic
	// (status requested, active or error), numbers each match for its
	// subscription (EventsSinceStart+1, no gaps), and advances the
	// watermark, all in one transaction: an event is numbered exactly once
	// however the process dies. One caller at a time dispatches; others
	// (other replicas) return at once with 0. It returns how many events
	// it passed and how many notifications it wrote.
	DispatchEvents(ctx context.Context, limit int, match Matcher) (events, notifications int, err error)
	// ClaimNotifications leases to worker, until now + the
	// subscription's Timeout + lease (so a crashed sender's subscription
	// is taken over soon after its attempt could have ended), the
	// subscription due longest: one that needs its handshake (requested),
	// has notifications not yet delivered, is due a heartbeat, or failed
	// and is due a retry. It returns the subscription and up to MaxCount
	// undelivered notifications in eventNumber order (none for a
	// handshake or heartbeat). Errors: ErrNotFound when none is due.
	ClaimNotifications(ctx context.Context, worker string, lease time.Duration, now time.Time) (*Subscription, []Notification, error)
	// SettleNotifications ends worker's attempt and releases the lease.
	// With failure "" the endpoint took everything through eventNumber
	// through (0 for a handshake or heartbeat): the subscription becomes
	// active, its error and retry are cleared and a heartbeat is due a
	// period later. Otherwise the attempt failed (failure PHI-free): it is
	// retried at retryAt, and once failing since errorAfter or longer the
	// subscription's status becomes error.
	// Errors: ErrNotFound; ErrConflict unless worker holds the lease.
	SettleNotifications(ctx context.Context, worker, domain, id string, through int64, failure string, now, retryAt time.Time, errorAfter time.Duration) error
	// SubscriptionStats returns the figures of every domain's
	// subscriptions together, for metrics.
	SubscriptionStats(ctx context.Context) (*SubscriptionStats, error)
}

// SubscriptionStats are the subscriptions' figures, all domains together
// (no ids, no endpoints).
type SubscriptionStats struct {
	// ByStatus counts the subscriptions per status (the Subscription
	// constants; absent statuses are missing).
	ByStatus map[string]int
	// Pending counts the notifications numbered and not yet accepted by
	// their endpoint.
	Pending int64
	// OldestPending is when the event of the oldest of them happened;
	// nil when none is pending.
	OldestPending *time.Time
}
