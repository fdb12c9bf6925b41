// Package sqlutil holds what the SQL implementations of store share and
// that is not part of the domain: input checks and defaults, time
// normalisation, the search cursor and the migration file list. Keeping it
// in one place is what makes the two databases behave alike where the
// conformance suite cannot see (cursor format, hash encoding).
package sqlutil

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// Time normalises t to what both databases keep: UTC, microseconds.
func Time(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// TimePtr is Time for optional times.
func TimePtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	n := Time(*t)
	return &n
}

// Now is the current time, normalised.
func Now() time.Time { return Time(time.Now()) }

// PrepareReport checks r for CreateReport and UpdateReport and fills the
// fields the store sets: CreatedAt (when zero), the artifacts' Index, Size
// and SHA256, and a fresh pending Delivery due at r.Delivery.NextAttemptAt or
// CreatedAt. The version is left to the caller.
func PrepareReport(r *store.Report) error {
	switch {
	case r == nil:
		return store.E(store.KindInvalid, "nil report")
	case r.Domain == "" || r.ID == "":
		return store.E(store.KindInvalid, "report without domain or id")
	case r.AppointmentID == "":
		return store.E(store.KindInvalid, "report without appointment id")
	case len(r.Resource) == 0 || len(r.Submission) == 0:
		return store.E(store.KindInvalid, "report without resource or submission")
	}
	if r.CreatedAt.IsZero() {
		r.CreatedAt = Now()
	}
	r.CreatedAt = Time(r.CreatedAt)
	for i := range r.Artifacts {
		a := &r.Artifacts[i]
		a.Index = i
		if a.Size == 0 {
			a.Size = int64(len(a.Data))
		}
		if a.SHA256 == "" {
			a.SHA256 = SHA256(a.Data)
		}
		// A new version has uploaded nothing yet, whatever the caller
		// copied from an older one: its bytes may differ.
		a.QUBSGUID, a.UploadedAt = "", nil
	}
	due := r.Delivery.NextAttemptAt
	if due.IsZero() {
		due = r.CreatedAt
	}
	r.Delivery = store.Delivery{State: store.DeliveryPending, NextAttemptAt: Time(due)}
	r.Purged = false
	return nil
}

// PrepareBinary checks b and fills CreatedAt, Size and SHA256.
func PrepareBinary(b *store.Binary) error {
	if b == nil || b.Domain == "" || b.ID == "" {
		return store.E(store.KindInvalid, "binary without domain or id")
	}
	if b.CreatedAt.IsZero() {
		b.CreatedAt = Now()
	}
	b.CreatedAt = Time(b.CreatedAt)
	if b.Size == 0 {
		b.Size = int64(len(b.Data))
	}
	if b.SHA256 == "" {
		b.SHA256 = SHA256(b.Data)
	}
	b.Purged = false
	return nil
}

// PrepareIdempotency checks rec and fills CreatedAt.
func PrepareIdempotency(rec *store.IdempotencyRecord) error {
	if rec == nil || rec.Domain == "" || rec.Scope == "" || rec.Key == "" {
		return store.E(store.KindInvalid, "idempotency record without domain, scope or key")
	}
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = Now()
	}
	rec.CreatedAt = Time(rec.CreatedAt)
	return nil
}

// CheckClaim checks the arguments of ClaimDelivery.
func CheckClaim(worker string, lease time.Duration) error {
	if worker == "" || lease <= 0 {
		return store.E(store.KindInvalid, "claim needs a worker name and a positive lease")
	}
	return nil
}

// CheckWorker checks the worker name of a fenced delivery call (RecordUpload,
// CompleteDelivery, RetryDelivery, FailDelivery).
func CheckWorker(worker string) error {
	if worker == "" {
		return store.E(store.KindInvalid, "a delivery call needs the worker's name")
	}
	return nil
}

// Holder is the lease on an appointment's delivery queue as a fenced call
// finds it: the job (report id, version) and the worker holding it; Owner
// is "" when nobody does.
type Holder struct {
	Report  string
	Version int
	Owner   string
}

// CheckHolder answers KindConflict unless worker holds the lease on the job
// (id, version). Whether the lease has expired does not matter: a lease
// nobody took over is still its worker's, and one somebody took over names
// the new worker. Worker names are not PHI; the message names the holder,
// which is what an operator debugging a lost lease needs.
func CheckHolder(worker, id string, version int, h Holder) error {
	switch {
	case h.Owner == "":
		return store.E(store.KindConflict, "version is not leased (released, or taken over and settled)")
	case h.Report != id || h.Version != version:
		return store.E(store.KindConflict, "the appointment's lease is on report %q version %d", h.Report, h.Version)
	case h.Owner != worker:
		return store.E(store.KindConflict, "version is leased by %q", h.Owner)
	}
	return nil
}

// CheckPendingHolder is what every write by a lease holder checks first:
// the version is still pending, and worker holds its lease (CheckHolder).
func CheckPendingHolder(worker, id string, version int, state string, h Holder) error {
	if state != store.DeliveryPending {
		return store.E(store.KindConflict, "version is %s", state)
	}
	return CheckHolder(worker, id, version, h)
}

// SupersededBy is the last_error of a version superseded by a newer one of
// the same appointment (report id and version name it; neither is PHI).
func SupersededBy(id string, version int) string {
	return fmt.Sprintf("superseded by report %s version %d", id, version)
}

// SHA256 is the lower-case hex SHA-256 of data.
func SHA256(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// Limit applies the defaults and bounds of ReportFilter.Limit.
func Limit(n int) int {
	switch {
	case n <= 0:
		return store.DefaultSearchLimit
	case n > store.MaxSearchLimit:
		return store.MaxSearchLimit
	}
	return n
}

// cursorPrefix versions the cursor format so that a later change can
// recognise (and refuse cleanly) cursors minted by an older release.
const cursorPrefix = "r1."

// EncodeCursor makes the opaque SearchReports cursor that continues after
// the report first created at created with id.
func EncodeCursor(created time.Time, id string) string {
	return encodeCursor(cursorPrefix, created, id)
}

// DecodeCursor reverses EncodeCursor; anything else is KindInvalid.
func DecodeCursor(s string) (created time.Time, id string, err error) {
	return decodeCursor(cursorPrefix, s)
}

// encodeCursor makes a keyset cursor (time, id) with prefix, which names
// the search it belongs to, so that one search refuses another's cursors.
func encodeCursor(prefix string, t time.Time, id string) string {
	raw := strconv.FormatInt(t.UnixMicro(), 10) + "\x00" + id
	return prefix + base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// decodeCursor reverses encodeCursor; anything else is KindInvalid.
func decodeCursor(prefix, s string) (time.Time, string, error) {
	bad := store.E(store.KindInvalid, "malformed search cursor")
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return time.Time{}, "", bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return time.Time{}, "", bad
	}
	micros, id, ok := strings.Cut(string(raw), "\x00")
	if !ok || id == "" {
		return time.Time{}, "", bad
	}
	us, err := strconv.ParseInt(micros, 10, 64)
	if err != nil {
		return time.Time{}, "", bad
	}
	return time.UnixMicro(us).UTC(), id, nil
}

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations reads dir of fsys: files named NNNN_name.sql, applied in
// number order. Numbers must be unique and start at 1 without gaps, so a
// missing or misnamed file fails every Open instead of leaving a schema
// half-built.
func Migrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %q: name is not NNNN_name.sql", name)
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: strings.TrimSuffix(name, ".sql"), SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	want := 1
	for _, m := range ms {
		if m.Version != want {
			return nil, fmt.Errorf("migration %q: expected number %d", m.Name, want)
		}
		want++
	}
	return ms, nil
}

// ReportOrder is what both engines sort and page report searches on: the
// column (its value is what the cursor holds), the direction, and the
// comparison that continues after the cursor.
func ReportOrder(o store.ReportOrder) (key, dir, cmp string) {
	switch o {
	case store.ReportsByUpdate:
		return "v.created_at", "ASC", ">"
	case store.ReportsByUpdateDesc:
		return "v.created_at", "DESC", "<"
	}
	return "r.created_at", "ASC", ">"
}

// AuditOrder is the direction of an audit search and the comparison that
// continues after its cursor: newest first unless oldestFirst.
func AuditOrder(oldestFirst bool) (dir, cmp string) {
	if oldestFirst {
		return "ASC", ">"
	}
	return "DESC", "<"
}
