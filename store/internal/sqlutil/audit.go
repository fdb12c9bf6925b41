package sqlutil

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/internal/jsonw"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// auditCursorPrefix versions the SearchAudit cursor, and keeps it apart
// from the SearchReports one.
const auditCursorPrefix = "a1."

// EncodeAuditCursor makes the opaque SearchAudit cursor that continues
// after (newest first) the record recorded at recorded with id.
func EncodeAuditCursor(recorded time.Time, id string) string {
	return encodeCursor(auditCursorPrefix, recorded, id)
}

// DecodeAuditCursor reverses EncodeAuditCursor; anything else, a
// SearchReports cursor included, is KindInvalid.
func DecodeAuditCursor(s string) (recorded time.Time, id string, err error) {
	return decodeCursor(auditCursorPrefix, s)
}

// ValidFHIRID reports whether s matches FHIR's id type: [A-Za-z0-9\-.]{1,64}.
func ValidFHIRID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// ValidRelativeRef reports whether s is a FHIR relative reference to a
// resource or one of its versions: Type/id or Type/id/_history/version.
func ValidRelativeRef(s string) bool {
	typ, rest, ok := strings.Cut(s, "/")
	if !ok || !validType(typ) {
		return false
	}
	id, version, versioned := strings.Cut(rest, "/_history/")
	return ValidFHIRID(id) && (!versioned || ValidFHIRID(version))
}

// validType reports whether s can be a FHIR resource type name: an upper
// case ASCII letter, then ASCII letters.
func validType(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

var (
	auditActions  = []string{store.AuditActionCreate, store.AuditActionRead, store.AuditActionUpdate, store.AuditActionDelete, store.AuditActionExecute}
	auditOutcomes = []string{store.AuditOutcomeSuccess, store.AuditOutcomeMinorFailure, store.AuditOutcomeSeriousFailure, store.AuditOutcomeMajorFailure}
)

// PrepareAudit checks a for RecordAudit and fills the fields the store
// sets: ID (when empty), Recorded (when zero, and normalised), and the
// references without duplicates, nil when empty.
func PrepareAudit(a *store.AuditRecord) error {
	invalid := func(format string, args ...any) error { return store.E(store.KindInvalid, format, args...) }
	switch {
	case a == nil:
		return invalid("nil audit record")
	case a.Domain == "":
		return invalid("audit record without domain")
	case a.ID != "" && !ValidFHIRID(a.ID):
		return invalid("audit record id is not a FHIR id")
	case !slices.Contains(auditActions, a.Action):
		return invalid("audit action %q is not one of C, R, U, D, E", a.Action)
	case !slices.Contains(auditOutcomes, a.Outcome):
		return invalid("audit outcome %q is not one of 0, 4, 8, 12", a.Outcome)
	case !slices.Contains(store.AuditInteractions, a.Interaction):
		return invalid("audit interaction %q is not a FHIR restful interaction", a.Interaction)
	case strings.Contains(a.Query, "="):
		// The values of a search may be PHI; see store.AuditRecord.Query.
		return invalid("audit query holds parameter values")
	}
	for _, p := range a.PatientRefs {
		id, ok := strings.CutPrefix(p, "Patient/")
		if !ok || !ValidFHIRID(id) {
			return invalid("audit patient reference %q is not Patient/<id>", p)
		}
	}
	for _, e := range a.EntityRefs {
		if !ValidRelativeRef(e) {
			return invalid("audit entity reference %q is not Type/id or Type/id/_history/version", e)
		}
	}
	// Text a client chose (a search's parameter names, a correlation id)
	// may hold a NUL or bytes that are not UTF-8, which PostgreSQL's text
	// refuses: such a record would fail its whole batch again and again.
	// It is kept, with those replaced.
	for _, f := range []*string{&a.Query, &a.OutcomeDesc, &a.AgentID, &a.AgentMethod, &a.TokenID,
		&a.NetworkAddr, &a.CorrelationID, &a.RequestPath} {
		*f = CleanText(*f)
	}
	a.SetIdentity()
	a.Recorded = Time(a.Recorded)
	a.PatientRefs = unique(a.PatientRefs)
	a.EntityRefs = unique(a.EntityRefs)
	return nil
}

// unique returns refs without duplicates, in first-seen order, as a new
// slice (the caller's is not modified); nil when empty.
func unique(refs []string) []string {
	if len(refs) > 16 {
		// A search page names a hundred patients; quadratic would show.
		// The server hands them over deduplicated already, so the list is
		// copied only when it has a repeat.
		seen := make(map[string]struct{}, len(refs))
		for i, r := range refs {
			if _, ok := seen[r]; ok {
				return uniqueFrom(refs, i, seen)
			}
			seen[r] = struct{}{}
		}
		return refs
	}
	var out []string
	for _, r := range refs {
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// uniqueFrom is unique for refs whose first repeat is at i; seen holds
// the references before it.
func uniqueFrom(refs []string, i int, seen map[string]struct{}) []string {
	out := append(make([]string, 0, len(refs)-1), refs[:i]...)
	for _, r := range refs[i:] {
		if _, ok := seen[r]; !ok {
			seen[r] = struct{}{}
			out = append(out, r)
		}
	}
	return out
}

// EncodeRefs is the column form of a reference list: a JSON array, "[]"
// when empty.
func EncodeRefs(refs []string) string {
	if len(refs) == 0 {
		return "[]"
	}
	// Written directly, as json.Marshal writes a []string (jsonw escapes
	// alike): a page's record encodes two lists of a hundred, and
	// reflection was most of that.
	n := 2
	for _, r := range refs {
		n += len(r) + 3
	}
	var b strings.Builder
	b.Grow(n)
	buf := make([]byte, 0, 64)
	b.WriteByte('[')
	for i, r := range refs {
		if i > 0 {
			b.WriteByte(',')
		}
		buf = jsonw.String(buf[:0], r)
		b.Write(buf)
	}
	b.WriteByte(']')
	return b.String()
}

// DecodeRefs reverses EncodeRefs; an empty list is nil.
func DecodeRefs(s string) ([]string, error) {
	var refs []string
	if err := json.Unmarshal([]byte(s), &refs); err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		return nil, nil
	}
	return refs, nil
}

// JTICleanupGrace is how long a jti claim is kept after it expired before
// ClaimJTI deletes it. Expiry is judged by each replica's clock; a replica
// whose clock runs ahead must not delete a claim that a replica running
// behind still relies on (it would accept the replay). Five minutes is the
// usual allowance for clock skew in JWT validation.
const JTICleanupGrace = 5 * time.Minute

// JTICleanupBatch bounds the expired claims one ClaimJTI deletes, so a
// backlog never makes one token request slow.
const JTICleanupBatch = 100

// CheckJTI checks the arguments of ClaimJTI.
func CheckJTI(issuer, jti string, expires time.Time) error {
	if issuer == "" || jti == "" || expires.IsZero() {
		return store.E(store.KindInvalid, "jti claim needs an issuer, a jti and an expiry")
	}
	return nil
}

// PatientSet names the set of patients refs holds (migration 0016). A
// record naming one patient (a read) names the reference itself: its
// record is found by patient_set alone, with no set rows. Otherwise the set
// is the hex of the first 16 bytes of the SHA-256 of the distinct
// references, sorted, one per line (never a reference: it has no "/"), and
// records naming the same patients, in any order, share it and its rows
// in audit_set_patients, so that a worklist page read again and again
// costs its patient rows once, not per read. "" when refs is empty.
// References never hold a newline (PrepareAudit), so the encoding is
// unambiguous.
func PatientSet(refs []string) string {
	if len(refs) == 0 {
		return ""
	}
	sorted := refs
	if !slices.IsSorted(refs) {
		sorted = slices.Sorted(slices.Values(refs))
	}
	if sorted[0] == sorted[len(sorted)-1] {
		return sorted[0]
	}
	n := 0
	for _, r := range sorted {
		n += len(r) + 1
	}
	b := make([]byte, 0, n) // one allocation for the hundred of a page
	for i, r := range sorted {
		if i > 0 && r == sorted[i-1] {
			continue
		}
		b = append(append(b, r...), '\n')
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// SingletonSet reports whether a PatientSet names one patient, and so has
// no rows of its own.
func SingletonSet(set string) bool { return strings.Contains(set, "/") }

// CleanText is s with every NUL and every byte sequence that is not
// UTF-8 replaced by U+FFFD, the text any engine stores.
func CleanText(s string) string {
	if utf8.ValidString(s) && !strings.Contains(s, "\x00") {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}
