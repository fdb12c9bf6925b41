package sqlstore

import (
	"context"
	"strings"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

const auditCols = `a.domain, a.id, a.recorded, a.action, a.interaction, a.outcome, a.outcome_desc,
	a.agent_id, a.agent_method, a.token_id, a.network_addr, a.patient_refs, a.entity_refs, a.query,
	a.correlation_id, a.request_path`

// auditInsert writes one audit_events row; the dialects' batch writers
// reuse its column list.
const auditInsert = `INSERT INTO audit_events
	(domain, id, recorded, action, interaction, outcome, outcome_desc, agent_id, agent_method,
	 token_id, network_addr, patient_refs, entity_refs, query, correlation_id, request_path)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (domain, id) DO NOTHING`

// auditArgs are auditInsert's arguments for a.
func (s *Store) auditArgs(a *store.AuditRecord) []any {
	return []any{a.Domain, a.ID, s.tm(a.Recorded), a.Action, a.Interaction, a.Outcome, a.OutcomeDesc, a.AgentID, a.AgentMethod,
		a.TokenID, a.NetworkAddr, sqlutil.EncodeRefs(a.PatientRefs), sqlutil.EncodeRefs(a.EntityRefs), a.Query,
		a.CorrelationID, a.RequestPath}
}

// auditPatientsInsert writes a record's patient rows (into audit_patients,
// or where the dialect stages them) from the JSON array of its patient
// references: four arguments (domain, recorded, id, the array) whatever
// the number of patients.
func (s *Store) auditPatientsInsert() string {
	return `INSERT INTO ` + s.d.auditStaging().table() + ` (domain, patient_ref, recorded, audit_id)
		SELECT ?, p.value, ?, ? FROM ` + s.d.jsonElements("?", "p") + `
		WHERE TRUE ON CONFLICT DO NOTHING` // WHERE: SQLite would read ON as a join's
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

// RecordAudit stores an audit record and its patient index rows in one
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
		res, err := tx.exec(ctx, auditInsert, s.auditArgs(a)...)
		if err := changedOne(res, err, store.KindConflict, "audit record exists"); err != nil {
			return err
		}
		if len(a.PatientRefs) == 0 {
			return nil
		}
		if _, err := tx.exec(ctx, s.auditPatientsInsert(), a.Domain, s.tm(a.Recorded), a.ID,
			sqlutil.EncodeRefs(a.PatientRefs)); err != nil {
			return err
		}
		return s.d.auditStaging().added(ctx, tx, len(a.PatientRefs))
	})
}

// RecordAudits stores a batch of audit records and their patient rows in
// one transaction, the dialect's fastest way (insertAudits). See
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

// auditArm is one table a search reads records from: audit_events alone,
// or, filtered by patient, audit_events joined with a table of patient
// rows (audit_patients, and where the dialect stages them
// audit_patients_staged; a row is in exactly one of them). at and id are
// the columns the order and the cursor use; cols names them in the place
// of the record's own, which they equal.
type auditArm struct {
	from, cols, at, id string
}

var (
	auditAll     = []auditArm{{from: "audit_events a", cols: auditCols, at: "a.recorded", id: "a.id"}}
	auditPatient = []auditArm{
		patientArm("audit_events a JOIN audit_patients p ON p.domain = a.domain AND p.audit_id = a.id", "p"),
		// The staged rows, not indexed by patient, are scanned once, each
		// match looked up in audit_events by its key: CROSS JOIN keeps
		// SQLite to that order of the loops (the join is in auditWhere).
		patientArm("audit_patients_staged s CROSS JOIN audit_events a", "s"),
	}
)

func patientArm(from, alias string) auditArm {
	at, id := alias+".recorded", alias+".audit_id"
	return auditArm{
		from: from,
		cols: strings.Replace(strings.Replace(auditCols, "a.id,", id+",", 1), "a.recorded,", at+",", 1),
		at:   at, id: id,
	}
}

// auditArms is what a search with filter f reads.
func (s *Store) auditArms(f store.AuditFilter) []auditArm {
	switch {
	case f.PatientRef == "":
		return auditAll
	case s.d.auditStaging() == nil:
		return auditPatient[:1]
	}
	return auditPatient
}

// auditWhere is the filter of one arm. Filtered by patient, the search
// walks audit_patients' index, whose (recorded, audit_id) equal the
// record's (recorded, id), and scans the staged rows.
func (s *Store) auditWhere(domain string, f store.AuditFilter, arm auditArm) (where []string, args []any) {
	where = []string{"a.domain = ?"}
	args = []any{domain}
	if f.PatientRef != "" {
		alias, _, _ := strings.Cut(arm.at, ".")
		if alias == "s" {
			where = append(where, "s.audit_id = a.id")
		}
		// The patient row's domain spelled out, so the index's leading
		// column is bound.
		where = append(where, alias+".domain = ?", alias+".patient_ref = ?")
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

// PurgeAuditBefore deletes the audit records recorded before cutoff and
// their patient rows, found by key through each record's patient_refs
// (audit_patients has no foreign key since migration 0006), or still
// staged (SQLite, migration 0008). See store.Audit.
func (s *Store) PurgeAuditBefore(ctx context.Context, cutoff time.Time) (n int, err error) {
	defer s.wrap(&err, "PurgeAuditBefore")
	c := s.tm(sqlutil.Time(cutoff))
	err = s.write(ctx, func(tx *tx) error {
		if _, err := tx.exec(ctx, `DELETE FROM audit_patients
			WHERE (domain, patient_ref, recorded, audit_id) IN (
				SELECT a.domain, j.value, a.recorded, a.id
				FROM audit_events a CROSS JOIN `+s.d.jsonElements("a.patient_refs", "j")+`
				WHERE a.recorded < ?)`, c); err != nil {
			return err
		}
		if g := s.d.auditStaging(); g != nil {
			if _, err := tx.exec(ctx, `DELETE FROM audit_patients_staged WHERE recorded < ?`, c); err != nil {
				return err
			}
			g.purged(tx)
		}
		res, err := tx.exec(ctx, `DELETE FROM audit_events WHERE recorded < ?`, c)
		if err != nil {
			return err
		}
		k, err := res.RowsAffected()
		n = int(k)
		return err
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
