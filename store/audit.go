package store

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
)

// AuditRecord is one entry of the audit trail: who did what to which
// patient's data, when, how it ended, and through which request. The bridge
// records one for every read of PHI and every change (IHE Basic Audit Log
// Patterns, BALP) and serves them as FHIR AuditEvent (mapping.
// AuditEventFromRecord).
//
// An AuditRecord holds no PHI: patients and resources appear as references
// ("Patient/123"), which are identifiers the store keeps after retention
// anyway, and a search appears as its parameter names without their values
// (see Query). That is what lets audit records outlive the PHI they are
// about (PurgeAuditBefore, not PurgeBefore).
type AuditRecord struct {
	// ID is the AuditEvent id. The store sets it when empty (a version 7
	// UUID as 32 lower-case hex digits: time-ordered, then random); a
	// caller-chosen one must be a FHIR id ([A-Za-z0-9-.]{1,64}).
	ID string
	// Domain is the QUBS domain (the FHIR base) the request was for.
	Domain string
	// Recorded is when the event happened. The store sets it to the current
	// time when zero.
	Recorded time.Time
	// Action is the FHIR AuditEvent.action: one of the AuditAction
	// constants (C, R, U, D, E). BALP records a search as E (execute).
	Action string
	// Interaction is the FHIR restful interaction (the BALP subtype):
	// read, vread, search-type, create, update... one of the codes of
	// http://hl7.org/fhir/restful-interaction.
	Interaction string
	// Outcome is one of the AuditOutcome constants (0, 4, 8, 12).
	Outcome string
	// OutcomeDesc says what failed, PHI-free: an error kind and status,
	// never a request or response body.
	OutcomeDesc string
	// AgentID is the client that made the request (Principal.Subject);
	// empty for an anonymous request (BRIDGE_AUTH=none).
	AgentID string
	// AgentMethod is how the client authenticated: none, static, jwt or
	// smart.
	AgentMethod string
	// TokenID identifies the credential used, never the credential itself:
	// the access token's jti, or the name of a static token.
	TokenID string
	// NetworkAddr is the client's IP address (or host name).
	NetworkAddr string
	// PatientRefs are the patients whose data was read or changed
	// ("Patient/123"), each once: the BALP patient entities, and what
	// AuditFilter.PatientRef searches.
	PatientRefs []string
	// EntityRefs are the resources read, created or changed, as relative
	// references ("ServiceRequest/1", "DiagnosticReport/dr-1/_history/2"),
	// each once.
	EntityRefs []string
	// Query is, for a search, the resource type and the names of the
	// search parameters used, without their values, as AuditQuery makes
	// it: "ServiceRequest?_count&patient&status". Values are left out on
	// purpose: they may be PHI (a name, a birth date, an identifier), and
	// the audit trail is kept longer than PHI. The patients a search was
	// about are in PatientRefs. The store refuses a Query holding "=".
	Query string
	// CorrelationID is the request's correlation id (X-Request-Id), which
	// ties the record to the logs and to the QUBS calls the request made.
	CorrelationID string
	// RequestPath is the route template, "/fhir/:domain/ServiceRequest/:id",
	// not the concrete path (which holds ids already in EntityRefs).
	RequestPath string
}

// AuditRecord actions: the codes of FHIR AuditEvent.action.
const (
	AuditActionCreate  = "C"
	AuditActionRead    = "R"
	AuditActionUpdate  = "U"
	AuditActionDelete  = "D"
	AuditActionExecute = "E" // BALP: searches and operations
)

// AuditRecord outcomes: the codes of FHIR AuditEvent.outcome.
const (
	AuditOutcomeSuccess        = "0"
	AuditOutcomeMinorFailure   = "4"  // the request failed: 4xx
	AuditOutcomeSeriousFailure = "8"  // the request failed: 5xx
	AuditOutcomeMajorFailure   = "12" // the bridge is unusable
)

// AuditInteractions are the codes of http://hl7.org/fhir/restful-interaction
// (FHIR R4), the values AuditRecord.Interaction may take.
var AuditInteractions = []string{
	"read", "vread", "update", "patch", "delete",
	"history", "history-instance", "history-type", "history-system",
	"create", "search", "search-type", "search-system", "search-compartment",
	"capabilities", "transaction", "batch", "operation",
}

// AuditQuery makes AuditRecord.Query from a search's resource type and
// parameters: the type, "?", and the parameter names sorted and joined by
// "&", without values ("ServiceRequest?_count&patient&status"; just
// "ServiceRequest" without parameters).
func AuditQuery(resourceType string, params url.Values) string {
	if len(params) == 0 {
		return resourceType
	}
	names := make([]string, 0, len(params))
	for k := range params {
		// A name holding "=" or "&" would forge the format; the names of
		// real search parameters never do.
		names = append(names, strings.NewReplacer("=", "%3D", "&", "%26").Replace(k))
	}
	sort.Strings(names)
	return resourceType + "?" + strings.Join(names, "&")
}

// AuditFilter selects audit records in SearchAudit. The fields combine with
// AND; a zero field does not filter.
type AuditFilter struct {
	// Since (inclusive) and Until (exclusive) bound Recorded.
	Since, Until time.Time
	// PatientRef selects the records naming that patient ("Patient/123").
	PatientRef string
	// AgentID selects the records of one client.
	AgentID string
	// Action selects one AuditRecord action (C, R, U, D, E).
	Action string
	// Limit is the page size; 0 means DefaultSearchLimit, and it is
	// clamped to MaxSearchLimit.
	Limit int
	// After is the opaque cursor SearchAudit returned as next; "" starts at
	// the newest record (the oldest with OldestFirst).
	After string
	// OldestFirst orders by Recorded ascending (then id); the default is
	// newest first.
	OldestFirst bool
}

// Audit is the audit trail. Records are written once and never changed;
// PurgeAuditBefore deletes them when their retention ends.
type Audit interface {
	// CountAudit counts the domain's records matching f (its Limit, After
	// and OldestFirst do not matter), for FHIR _total and _summary=count.
	CountAudit(ctx context.Context, domain string, f AuditFilter) (int, error)
	// RecordAudit stores a, setting a.ID (when empty) and a.Recorded (when
	// zero), and normalising PatientRefs and EntityRefs (duplicates
	// dropped, nil when empty).
	// Errors: ErrInvalid if Domain is empty, Action, Outcome or
	// Interaction is not one of its codes, ID is not a FHIR id, a patient
	// reference is not "Patient/<id>", an entity reference is not
	// "Type/id" or "Type/id/_history/version", or Query holds "=";
	// ErrConflict if (Domain, ID) exists.
	RecordAudit(ctx context.Context, a *AuditRecord) error
	// RecordAudits stores a batch of records in one transaction (group
	// commit): all of them or, on error, none. Each is checked and
	// normalised as by RecordAudit, and every record is checked before
	// anything is written. Unlike RecordAudit, a record whose (Domain, ID)
	// exists already is skipped, not an error: a writer that retries a
	// batch whose commit it could not confirm (the connection broke while
	// committing) neither loses nor doubles a record, provided it sends
	// the same IDs, which the first call sets.
	// Errors: ErrInvalid as RecordAudit, for the first invalid record (no
	// record of the batch is written).
	RecordAudits(ctx context.Context, batch []*AuditRecord) error
	// AuditEvent returns one record. Errors: ErrNotFound.
	AuditEvent(ctx context.Context, domain, id string) (*AuditRecord, error)
	// SearchAudit returns the domain's records that match f, newest first
	// (Recorded, then ID, descending), by keyset paging: next is the cursor
	// of the following page, "" on the last page; records added while a
	// client pages (newer ones) neither shift nor repeat the pages.
	// Errors: ErrInvalid for a malformed f.After.
	SearchAudit(ctx context.Context, domain string, f AuditFilter) (records []*AuditRecord, next string, err error)
	// PurgeAuditBefore deletes the records of every domain recorded before
	// cutoff and returns how many. It is separate from PurgeBefore because
	// the audit trail is evidence and is kept longer than the PHI it is
	// about (docs/store.md, Retention).
	PurgeAuditBefore(ctx context.Context, cutoff time.Time) (int, error)
}

// Replay is the replay cache of SMART client assertions (RFC 7523 JWTs,
// identified by their jti), shared by all replicas through the database.
type Replay interface {
	// ClaimJTI records (issuer, jti) until expires; fresh is false when
	// it was already claimed and that claim has not expired yet, which
	// makes the assertion a replay. Of concurrent claims of one (issuer,
	// jti), in one replica or several, exactly one is fresh. Expiry is
	// judged by the calling replica's clock, the one that checked the
	// assertion's exp. A claim expiring in the past is recorded but
	// protects nothing: callers refuse expired assertions before
	// claiming. Claims expired for longer than a grace period (which
	// absorbs clock skew between replicas) are deleted by later calls.
	// Errors: ErrInvalid for an empty issuer or jti or a zero expires.
	ClaimJTI(ctx context.Context, issuer, jti string, expires time.Time) (fresh bool, err error)
}

// SetIdentity gives a the id and time it lacks (NewAuditID, now), so
// that a record journaled before it is stored is the same record when
// written again after a crash, which the store then skips.
func (a *AuditRecord) SetIdentity() {
	if a.ID == "" {
		a.ID = NewAuditID()
	}
	if a.Recorded.IsZero() {
		a.Recorded = time.Now()
	}
}

// NewAuditID returns a new AuditEvent id: a version 7 UUID (RFC 9562) as
// 32 lower-case hex digits, a FHIR id. Its first 48 bits are the time in
// milliseconds, then (after the version) 12 bits of the time within the
// millisecond that uuid keeps increasing in the process, then 62 random
// bits: unguessable still, and unique across replicas.
//
// Time first, because the id is the audit tables' key: records written
// together sort together, so a batch appends to the right-most leaf of
// audit_events' primary key (and audit_patients') instead of landing on a
// leaf of its own each, which SQLite's WAL writes whole and PostgreSQL
// logs whole after each checkpoint (docs/performance.md, "Audit ids in
// time order"). The time it shows is the record's own, which the
// AuditEvent says anyway.
func NewAuditID() string {
	id, err := uuid.NewV7()
	if err != nil {
		// Only if crypto/rand failed, which it does not (Go 1.24+).
		panic(fmt.Sprintf("audit id: %v", err))
	}
	var b [32]byte
	hex.Encode(b[:], id[:])
	return string(b[:])
}
