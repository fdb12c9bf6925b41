package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

const auditCols = `a.domain, a.id, a.recorded, a.action, a.interaction, a.outcome, a.outcome_desc,
	a.agent_id, a.agent_method, a.token_id, a.network_addr, a.patient_refs, a.entity_refs, a.query,
	a.correlation_id, a.request_path`

// nullString is s as a column value, NULL when empty.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// auditSet is a patient set that records of a batch name (migration
// 0016): its id, and the references of the first record naming it.
type auditSet struct {
	domain, id string
	refs       []string
}

// patientSets gives each record of batch its patient set's id (ids[i], ""
// for a record naming no patient) and returns the distinct sets with rows
// of their own (not those naming one patient) in
// (domain, id) order: PostgreSQL batches insert their set rows in that
// order, so that two batches never wait for each other's in a cycle.
func patientSets(batch []*store.AuditRecord) (ids []string, sets []auditSet) {
	ids = make([]string, len(batch))
	for i, a := range batch {
		ids[i] = sqlutil.PatientSet(a.PatientRefs)
		if ids[i] == "" || sqlutil.SingletonSet(ids[i]) {
			continue
		}
		if !slices.ContainsFunc(sets, func(x auditSet) bool { return x.id == ids[i] && x.domain == a.Domain }) {
			sets = append(sets, auditSet{domain: a.Domain, id: ids[i], refs: a.PatientRefs})
		}
	}
	slices.SortFunc(sets, func(x, y auditSet) int {
		return cmp.Or(strings.Compare(x.domain, y.domain), strings.Compare(x.id, y.id))
	})
	return ids, sets
}

func scanAudit(sc scanner) (*store.AuditRecord, error) {
	var (
		a                  store.AuditRecord
		patients, entities string
	)
	if err := sc.Scan(&a.Domain, &a.ID, at{&a.Recorded}, &a.Action, &a.Interaction, &a.Outcome, &a.OutcomeDesc,
		&a.AgentID, &a.AgentMethod, &a.TokenID, &a.NetworkAddr, &patients, &entities, &a.Query,
		&a.CorrelationID, &a.RequestPath); err != nil {
		return nil, err
	}
	var err error
	if a.PatientRefs, err = sqlutil.DecodeRefs(patients); err != nil {
		return nil, err
	}
	if a.EntityRefs, err = sqlutil.DecodeRefs(entities); err != nil {
		return nil, err
	}
	return &a, nil
}

// RecordAudit stores an audit record, and its patient set if new, in one
// transaction. See store.Audit.
func (s *Store) RecordAudit(ctx context.Context, a *store.AuditRecord) (err error) {
	if a == nil {
		return store.E(store.KindInvalid, "nil audit record")
	}
	// A closure, so that the operation names the id the store made.
	defer func() { s.wrap(&err, "RecordAudit(%q, %q)", a.Domain, a.ID) }()
	if err := sqlutil.PrepareAudit(a); err != nil {
		return err
	}
	return s.write(ctx, func(tx *tx) error {
		var one int
		switch err := tx.queryRow(ctx, `SELECT 1 FROM audit_events WHERE domain = ? AND id = ?`, a.Domain, a.ID).Scan(&one); {
		case err == nil:
			return store.E(store.KindConflict, "audit record exists")
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		return s.d.insertAudits(ctx, tx, []*store.AuditRecord{a})
	})
}

// RecordAudits stores a batch of audit records and their new patient sets
// in one transaction, the dialect's fastest way (insertAudits). See
// store.Audit.
func (s *Store) RecordAudits(ctx context.Context, batch []*store.AuditRecord) (err error) {
	defer s.wrap(&err, "RecordAudits(%d)", len(batch))
	for _, a := range batch {
		if err := sqlutil.PrepareAudit(a); err != nil {
			return err
		}
	}
	if len(batch) == 0 {
		return nil
	}
	if p, ok := s.d.(interface {
		recordAudits(context.Context, *sql.DB, []*store.AuditRecord) error
	}); ok {
		return p.recordAudits(ctx, s.w, batch)
	}
	return s.write(ctx, func(tx *tx) error { return s.d.insertAudits(ctx, tx, batch) })
}

// AuditEvent returns one audit record. See store.Audit.
func (s *Store) AuditEvent(ctx context.Context, domain, id string) (_ *store.AuditRecord, err error) {
	defer s.wrap(&err, "AuditEvent(%q, %q)", domain, id)
	a, err := scanAudit(s.reader().queryRow(ctx, `SELECT `+auditCols+`
		FROM audit_events a WHERE a.domain = ? AND a.id = ?`, domain, id))
	if err != nil {
		return nil, notFound(err, "audit record")
	}
	return a, nil
}

// SearchAudit pages through a domain's audit records, newest first. See
// store.Audit.
func (s *Store) SearchAudit(ctx context.Context, domain string, f store.AuditFilter) (records []*store.AuditRecord, next string, err error) {
	defer s.wrap(&err, "SearchAudit(%q)", domain)
	var after []any
	if f.After != "" {
		recorded, id, err := sqlutil.DecodeAuditCursor(f.After)
		if err != nil {
			return nil, "", err
		}
		after = []any{s.tm(recorded), id}
	}
	dir, cmp := sqlutil.AuditOrder(f.OldestFirst)
	var (
		arms []string
		args []any
	)
	for _, arm := range s.auditArms(f) {
		where, wargs := s.auditWhere(domain, f, arm)
		if after != nil {
			where = append(where, "("+arm.at+", "+arm.id+") "+cmp+" (?, ?)")
			wargs = append(wargs, after...)
		}
		arms = append(arms, `SELECT `+arm.cols+` FROM `+arm.from+` WHERE `+strings.Join(where, " AND "))
		args = append(args, wargs...)
	}
	limit := sqlutil.Limit(f.Limit)
	// One more than the page tells whether there is a next page. By
	// position, as a compound SELECT orders: 3 and 2 are the record's
	// time and id (or their copies in the patient row, equal to them).
	args = append(args, limit+1)
	rows, err := s.reader().query(ctx, strings.Join(arms, " UNION ALL ")+`
		ORDER BY 3 `+dir+`, 2 `+dir+` LIMIT ?`, args...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	for rows.Next() {
		a, err := scanAudit(rows)
		if err != nil {
			return nil, "", err
		}
		records = append(records, a)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	if len(records) > limit {
		records = records[:limit]
		last := records[limit-1]
		next = sqlutil.EncodeAuditCursor(last.Recorded, last.ID)
	}
	return records, next, nil
}

// CountAudit counts the records matching f. See store.Audit.
func (s *Store) CountAudit(ctx context.Context, domain string, f store.AuditFilter) (n int, err error) {
	defer s.wrap(&err, "CountAudit(%q)", domain)
	var (
		counts []string
		args   []any
	)
	for _, arm := range s.auditArms(f) {
		where, wargs := s.auditWhere(domain, f, arm)
		counts = append(counts, `(SELECT count(*) FROM `+arm.from+` WHERE `+strings.Join(where, " AND ")+`)`)
		args = append(args, wargs...)
	}
	err = s.reader().queryRow(ctx, `SELECT `+strings.Join(counts, " + "), args...).Scan(&n)
	return n, err
}

// auditArm is one join a search reads records from: audit_events alone,
// or, filtered by patient, audit_events joined with the patient's sets
// (migration 0016), the records naming the patient alone, and
// audit_patients (records written before 0016); a record is found through
// exactly one of them. at and id are the columns the order and the cursor
// use; cols names them in the place of the record's own, which they equal.
// patient and patientCol are the table alias and column a search by
// patient binds (with that table's domain), join the rest of the arm's
// join condition.
type auditArm struct {
	from, cols, at, id        string
	patient, patientCol, join string
}

var (
	auditAll     = []auditArm{{from: "audit_events a", cols: auditCols, at: "a.recorded", id: "a.id"}}
	auditPatient = []auditArm{
		// The patient's sets, then each one's records through
		// audit_events_patient_set: CROSS JOIN keeps SQLite to that order
		// of the loops.
		{from: "audit_set_patients m CROSS JOIN audit_events a", cols: auditCols, at: "a.recorded", id: "a.id",
			patient: "m", patientCol: "patient_ref", join: "a.domain = m.domain AND a.patient_set = m.set_id"},
		// Records from before 0016, and on SQLite those naming one
		// patient once moved, through their own rows, whose (recorded,
		// audit_id) equal the record's (recorded, id).
		patientArm("audit_events a JOIN audit_patients p ON p.domain = a.domain AND p.audit_id = a.id", "p", ""),
		// Where the dialect stages (SQLite): the staged rows, not indexed
		// by patient, scanned once, each match looked up in audit_events
		// by its key; CROSS JOIN keeps SQLite to that order of the loops.
		patientArm("audit_patients_staged g CROSS JOIN audit_events a", "g", "g.audit_id = a.id"),
	}
	// auditSingle: records naming the patient alone, where they name it
	// as their set (PostgreSQL): one range of audit_events_patient_set,
	// in order.
	auditSingle = auditArm{from: "audit_events a", cols: auditCols, at: "a.recorded", id: "a.id", patient: "a", patientCol: "patient_set"}
)

func patientArm(from, alias, join string) auditArm {
	at, id := alias+".recorded", alias+".audit_id"
	return auditArm{
		from: from,
		cols: strings.Replace(strings.Replace(auditCols, "a.id,", id+",", 1), "a.recorded,", at+",", 1),
		at:   at, id: id, patient: alias, patientCol: "patient_ref", join: join,
	}
}

// auditArms is what a search with filter f reads.
func (s *Store) auditArms(f store.AuditFilter) []auditArm {
	switch {
	case f.PatientRef == "":
		return auditAll
	case s.d.auditStaging() != nil:
		return auditPatient
	}
	return []auditArm{auditPatient[0], auditSingle, auditPatient[1]}
}

// auditWhere is the filter of one arm.
func (s *Store) auditWhere(domain string, f store.AuditFilter, arm auditArm) (where []string, args []any) {
	where = []string{"a.domain = ?"}
	args = []any{domain}
	if f.PatientRef != "" {
		if arm.join != "" {
			where = append(where, arm.join)
		}
		// The patient table's domain spelled out, so that its index's
		// leading column is bound.
		where = append(where, arm.patient+".domain = ?", arm.patient+"."+arm.patientCol+" = ?")
		args = append(args, domain, f.PatientRef)
	}
	if f.AgentID != "" {
		where = append(where, "a.agent_id = ?")
		args = append(args, f.AgentID)
	}
	if f.Action != "" {
		where = append(where, "a.action = ?")
		args = append(args, f.Action)
	}
	if !f.Since.IsZero() {
		where = append(where, arm.at+" >= ?")
		args = append(args, s.tm(sqlutil.Time(f.Since)))
	}
	if !f.Until.IsZero() {
		where = append(where, arm.at+" < ?")
		args = append(args, s.tm(sqlutil.Time(f.Until)))
	}
	return where, args
}

// PurgeAuditBefore deletes the audit records recorded before cutoff, the
// patient rows of those written before migration 0016 (found by key
// through each record's patient_refs: audit_patients has no foreign key
// since 0006), and the patient sets that no remaining record names. See
// store.Audit.
//
// A set is deleted only if no record names it once the purge's records
// are gone, and a batch that finds a set's row writes no patient rows for
// it: a batch committing a record that names a set the purge is deleting
// would leave that record unfindable by patient. SQLite's writes are
// serial; on PostgreSQL audit batches hold a shared advisory lock
// (lockAuditSets) that the purge takes exclusively, so the two never
// overlap and the purge's NOT EXISTS sees every committed record.
func (s *Store) PurgeAuditBefore(ctx context.Context, cutoff time.Time) (n int, err error) {
	defer s.wrap(&err, "PurgeAuditBefore")
	c := s.tm(sqlutil.Time(cutoff))
	err = s.write(ctx, func(tx *tx) error {
		if _, err := tx.exec(ctx, `DELETE FROM audit_patients
			WHERE (domain, patient_ref, recorded, audit_id) IN (
				SELECT a.domain, j.value, a.recorded, a.id
				FROM audit_events a CROSS JOIN `+s.d.jsonElements("a.patient_refs", "j")+`
				WHERE a.recorded < ? AND a.patient_set IS NULL)`, c); err != nil {
			return err
		}
		if g := s.d.auditStaging(); g != nil {
			if _, err := tx.exec(ctx, `DELETE FROM audit_patients_staged WHERE recorded < ?`, c); err != nil {
				return err
			}
			g.purged(tx)
		}
		// The sets the purged records name, before they go.
		rows, err := tx.query(ctx, `SELECT DISTINCT domain, patient_set FROM audit_events
			WHERE recorded < ? AND patient_set IS NOT NULL`, c)
		if err != nil {
			return err
		}
		var sets [][2]string
		if err := eachRow(rows, func() error {
			sets = append(sets, [2]string{})
			return rows.Scan(&sets[len(sets)-1][0], &sets[len(sets)-1][1])
		}); err != nil {
			return err
		}
		res, err := tx.exec(ctx, `DELETE FROM audit_events WHERE recorded < ?`, c)
		if err != nil {
			return err
		}
		k, err := res.RowsAffected()
		n = int(k)
		if err != nil || len(sets) == 0 {
			return err
		}
		if err := s.d.lockAuditSets(ctx, tx, true); err != nil {
			return err
		}
		for _, set := range sets {
			const unnamed = `s.domain = ? AND s.set_id = ? AND NOT EXISTS (
				SELECT 1 FROM audit_events a WHERE a.domain = s.domain AND a.patient_set = s.set_id)`
			if _, err := tx.exec(ctx, `DELETE FROM audit_set_patients WHERE (domain, patient_ref, set_id) IN (
				SELECT s.domain, j.value, s.set_id FROM audit_sets AS s CROSS JOIN `+s.d.jsonElements("s.patient_refs", "j")+`
				WHERE `+unnamed+`)`, set[0], set[1]); err != nil {
				return err
			}
			if _, err := tx.exec(ctx, `DELETE FROM audit_sets AS s WHERE `+unnamed, set[0], set[1]); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// ClaimJTI claims (issuer, jti) until expires, unless an unexpired claim
// exists, after deleting a batch of claims long expired. See store.Replay.
//
// The claim is one INSERT ... ON CONFLICT DO UPDATE ... WHERE: it inserts
// a new claim, takes over an expired one, or changes no row. SQLite's
// write lock serialises claims; PostgreSQL guarantees the upsert atomic
// under concurrency (a racing claim waits for the row the winner wrote,
// then finds it unexpired), so exactly one is fresh, across replicas too.
// The cleanup skips rows other replicas hold (PostgreSQL), so replicas
// never wait on each other's cleanup.
func (s *Store) ClaimJTI(ctx context.Context, issuer, jti string, expires time.Time) (fresh bool, err error) {
	defer s.wrap(&err, "ClaimJTI(%q)", issuer)
	if err := sqlutil.CheckJTI(issuer, jti, expires); err != nil {
		return false, err
	}
	now := sqlutil.Now()
	err = s.write(ctx, func(tx *tx) error {
		if _, err := tx.exec(ctx, `DELETE FROM jti_claims WHERE (issuer, jti) IN (
			SELECT issuer, jti FROM jti_claims WHERE expires_at < ? LIMIT ?`+s.d.skipLocked()+`)`,
			s.tm(now.Add(-sqlutil.JTICleanupGrace)), sqlutil.JTICleanupBatch); err != nil {
			return err
		}
		res, err := tx.exec(ctx, `INSERT INTO jti_claims (issuer, jti, expires_at) VALUES (?, ?, ?)
			ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = excluded.expires_at
			WHERE jti_claims.expires_at <= ?`,
			issuer, jti, s.tm(sqlutil.Time(expires)), s.tm(now))
		if err != nil {
			return err
		}
		fresh, err = oneRow(res)
		return err
	})
	if err != nil {
		return false, err
	}
	return fresh, nil
}
