package sqlite

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

const auditCols = `a.domain, a.id, a.recorded, a.action, a.interaction, a.outcome, a.outcome_desc,
	a.agent_id, a.agent_method, a.token_id, a.network_addr, a.patient_refs, a.entity_refs, a.query,
	a.correlation_id, a.request_path`

func scanAudit(sc scanner) (*store.AuditRecord, error) {
	var (
		a                  store.AuditRecord
		recorded           int64
		patients, entities string
	)
	if err := sc.Scan(&a.Domain, &a.ID, &recorded, &a.Action, &a.Interaction, &a.Outcome, &a.OutcomeDesc,
		&a.AgentID, &a.AgentMethod, &a.TokenID, &a.NetworkAddr, &patients, &entities, &a.Query,
		&a.CorrelationID, &a.RequestPath); err != nil {
		return nil, err
	}
	a.Recorded = fromUS(recorded)
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
	defer func() { store.Wrap(&err, "sqlite.RecordAudit(%q, %q)", a.Domain, a.ID) }()
	if err := sqlutil.PrepareAudit(a); err != nil {
		return err
	}
	return s.auditWrite(ctx, func(tx *sql.Tx, st auditStmts) (staged int, err error) {
		refs := sqlutil.EncodeRefs(a.PatientRefs)
		res, err := tx.StmtContext(ctx, st.events).ExecContext(ctx, a.Domain, a.ID, us(a.Recorded), a.Action, a.Interaction,
			a.Outcome, a.OutcomeDesc, a.AgentID, a.AgentMethod, a.TokenID, a.NetworkAddr, refs,
			sqlutil.EncodeRefs(a.EntityRefs), a.Query, a.CorrelationID, a.RequestPath)
		if err != nil {
			return 0, err
		}
		if ok, err := oneRow(res); err != nil {
			return 0, err
		} else if !ok {
			return 0, store.E(store.KindConflict, "audit record exists")
		}
		return stagePatients(ctx, tx.StmtContext(ctx, st.patients), a, refs)
	})
}

// RecordAudits stores a batch of audit records and their patient rows in
// one transaction, two prepared statements per record. See store.Audit.
//
// Most batches are small (a read's record names one patient), so what a
// statement costs to parse showed more than what it does: both statements
// are prepared once per store, not once per batch. Both are INSERT OR
// IGNORE or plain appends, which cannot abort half-way, so SQLite keeps no
// statement journal for them: a record that exists (a retried batch) is
// skipped with its patient rows; the other constraints (NOT NULL, the
// CHECKs) are checked by sqlutil.PrepareAudit first, so IGNORE never hides
// an invalid record.
//
// The patient rows are appended to audit_patients_staged, and moved into
// audit_patients in the same transaction once auditStagedRows have
// gathered (migration 0007 says why).
func (s *Store) RecordAudits(ctx context.Context, batch []*store.AuditRecord) (err error) {
	defer store.Wrap(&err, "sqlite.RecordAudits(%d)", len(batch))
	for _, a := range batch {
		if err := sqlutil.PrepareAudit(a); err != nil {
			return err
		}
	}
	return s.auditWrite(ctx, func(tx *sql.Tx, st auditStmts) (staged int, err error) {
		events, patients := tx.StmtContext(ctx, st.events), tx.StmtContext(ctx, st.patients)
		for _, a := range batch {
			refs := sqlutil.EncodeRefs(a.PatientRefs)
			res, err := events.ExecContext(ctx, a.Domain, a.ID, us(a.Recorded), a.Action, a.Interaction, a.Outcome,
				a.OutcomeDesc, a.AgentID, a.AgentMethod, a.TokenID, a.NetworkAddr, refs, sqlutil.EncodeRefs(a.EntityRefs),
				a.Query, a.CorrelationID, a.RequestPath)
			if err != nil {
				return 0, err
			}
			if n, err := res.RowsAffected(); err != nil {
				return 0, err
			} else if n == 0 {
				continue // exists: a retried batch
			}
			n, err := stagePatients(ctx, patients, a, refs)
			if err != nil {
				return 0, err
			}
			staged += n
		}
		return staged, nil
	})
}

// stagePatients appends a's patient rows to audit_patients_staged, from
// refs, the JSON array of them just stored: four arguments whatever the
// number of patients.
func stagePatients(ctx context.Context, stmt *sql.Stmt, a *store.AuditRecord, refs string) (int, error) {
	if len(a.PatientRefs) == 0 {
		return 0, nil
	}
	if _, err := stmt.ExecContext(ctx, a.Domain, us(a.Recorded), a.ID, refs); err != nil {
		return 0, err
	}
	return len(a.PatientRefs), nil
}

// auditWrite runs fn, which writes audit records and stages their patient
// rows, in a write transaction, and in the same transaction moves the
// staged rows into audit_patients once there are enough of them.
func (s *Store) auditWrite(ctx context.Context, fn func(tx *sql.Tx, st auditStmts) (staged int, err error)) error {
	st, err := s.audit.prepare(ctx, s.w)
	if err != nil {
		return err
	}
	// One write connection serialises the transactions anyway; the lock
	// keeps the count of staged rows with them.
	s.audit.mu.Lock()
	defer s.audit.mu.Unlock()
	staged := s.audit.staged
	err = s.write(ctx, func(tx *sql.Tx) error {
		if staged < 0 {
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM audit_patients_staged`).Scan(&staged); err != nil {
				return err
			}
		}
		n, err := fn(tx, st)
		if err != nil {
			return err
		}
		if staged += n; staged < s.audit.moveAt {
			return nil
		}
		// In key order, so that each leaf of audit_patients is visited
		// once for all of its new rows.
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO audit_patients (domain, patient_ref, recorded, audit_id)
			SELECT domain, patient_ref, recorded, audit_id FROM audit_patients_staged
			ORDER BY domain, patient_ref, recorded, audit_id`); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM audit_patients_staged`); err != nil {
			return err
		}
		staged = 0
		return nil
	})
	if err != nil {
		staged = -1 // unknown after a rollback: counted again next time
	}
	s.audit.staged = staged
	return err
}

// auditStagedRows is how many patient rows gather in audit_patients_staged
// before they are moved into audit_patients: a search by patient scans
// them all (15 ms of CPU for 64,000 rows here, BenchmarkSearchAuditStaged),
// and a move writes each leaf it touches once for all the rows gathered
// for it (a worklist page's record: 2.0-2.4 ms of CPU written directly,
// 0.77-0.84 ms staged by 16,384 rows, 0.55-0.61 ms by 65,536;
// BenchmarkRecordAudits/page).
const auditStagedRows = 32768

// auditStatements are RecordAudits' statements, prepared on the write pool
// at first use, and the count of staged patient rows.
type auditStatements struct {
	mu               sync.Mutex
	events, patients *sql.Stmt
	// staged is the number of rows in audit_patients_staged; -1 when
	// not known (at first use, or after a failed transaction).
	staged int
	// moveAt is when they are moved: auditStagedRows, but for tests.
	moveAt int
}

type auditStmts struct{ events, patients *sql.Stmt }

func (p *auditStatements) prepare(ctx context.Context, db *sql.DB) (_ auditStmts, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.events == nil {
		if p.events, err = db.PrepareContext(ctx, `INSERT OR IGNORE INTO audit_events
			(domain, id, recorded, action, interaction, outcome, outcome_desc, agent_id, agent_method,
			 token_id, network_addr, patient_refs, entity_refs, query, correlation_id, request_path)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`); err != nil {
			return auditStmts{}, err
		}
		p.staged = -1
		if p.moveAt == 0 {
			p.moveAt = auditStagedRows
		}
	}
	if p.patients == nil {
		if p.patients, err = db.PrepareContext(ctx, `INSERT INTO audit_patients_staged (domain, patient_ref, recorded, audit_id)
			SELECT ?, value, ?, ? FROM json_each(?)`); err != nil {
			return auditStmts{}, err
		}
	}
	return auditStmts{p.events, p.patients}, nil
}

// AuditEvent returns one audit record. See store.Audit.
func (s *Store) AuditEvent(ctx context.Context, domain, id string) (_ *store.AuditRecord, err error) {
	defer store.Wrap(&err, "sqlite.AuditEvent(%q, %q)", domain, id)
	a, err := scanAudit(s.r.QueryRowContext(ctx, `SELECT `+auditCols+`
		FROM audit_events a WHERE a.domain = ? AND a.id = ?`, domain, id))
	if err != nil {
		return nil, notFound(err, "audit record")
	}
	return a, nil
}

// SearchAudit pages through a domain's audit records, newest first. See
// store.Audit.
func (s *Store) SearchAudit(ctx context.Context, domain string, f store.AuditFilter) (records []*store.AuditRecord, next string, err error) {
	defer store.Wrap(&err, "sqlite.SearchAudit(%q)", domain)
	var after []any
	if f.After != "" {
		recorded, id, err := sqlutil.DecodeAuditCursor(f.After)
		if err != nil {
			return nil, "", err
		}
		after = []any{us(recorded), id}
	}
	dir, cmp := sqlutil.AuditOrder(f.OldestFirst)
	var (
		query string
		args  []any
	)
	for i, arm := range auditArms(f) {
		where, wargs := auditWhere(domain, f, arm)
		if after != nil {
			where = append(where, "("+arm.at+", "+arm.id+") "+cmp+" (?, ?)")
			wargs = append(wargs, after...)
		}
		if i > 0 {
			query += " UNION ALL "
		}
		query += `SELECT ` + arm.cols + ` FROM ` + arm.from + ` WHERE ` + strings.Join(where, " AND ")
		args = append(args, wargs...)
	}
	limit := sqlutil.Limit(f.Limit)
	// One more than the page tells whether there is a next page. By
	// position, as a compound SELECT orders: 3 and 2 are the record's
	// time and id (or their copies in the patient row, equal to them).
	args = append(args, limit+1)
	rows, err := s.r.QueryContext(ctx, query+` ORDER BY 3 `+dir+`, 2 `+dir+` LIMIT ?`, args...)
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
	defer store.Wrap(&err, "sqlite.CountAudit(%q)", domain)
	var (
		counts []string
		args   []any
	)
	for _, arm := range auditArms(f) {
		where, wargs := auditWhere(domain, f, arm)
		counts = append(counts, `(SELECT count(*) FROM `+arm.from+` WHERE `+strings.Join(where, " AND ")+`)`)
		args = append(args, wargs...)
	}
	err = s.r.QueryRowContext(ctx, `SELECT `+strings.Join(counts, " + "), args...).Scan(&n)
	return n, err
}

// auditArm is one table a search reads records from: audit_events alone,
// or, filtered by patient, audit_events joined with one of the two tables
// of patient rows (audit_patients and audit_patients_staged, which never
// hold the same row). at and id are the columns the order and the cursor
// use; cols names them in the place of the record's own, which they equal.
type auditArm struct {
	from, cols, at, id string
}

var (
	auditAll = []auditArm{{from: "audit_events a", cols: auditCols, at: "a.recorded", id: "a.id"}}
	// The staged rows, not indexed by patient, are scanned once, each
	// match looked up in audit_events by its key: CROSS JOIN keeps SQLite
	// to that order of the loops.
	auditPatient = []auditArm{
		patientArm("audit_events a JOIN audit_patients p", "p"),
		patientArm("audit_patients_staged s CROSS JOIN audit_events a", "s"),
	}
)

func patientArm(join, alias string) auditArm {
	at, id := alias+".recorded", alias+".audit_id"
	return auditArm{
		from: join + " ON " + alias + ".domain = a.domain AND " + id + " = a.id",
		cols: strings.Replace(strings.Replace(auditCols, "a.id,", id+",", 1), "a.recorded,", at+",", 1),
		at:   at, id: id,
	}
}

// auditArms is what a search with filter f reads.
func auditArms(f store.AuditFilter) []auditArm {
	if f.PatientRef != "" {
		return auditPatient
	}
	return auditAll
}

// auditWhere is the filter of one arm. Filtered by patient, the search
// walks audit_patients' index, whose (recorded, audit_id) equal the
// record's (recorded, id), and scans the staged rows.
func auditWhere(domain string, f store.AuditFilter, arm auditArm) (where []string, args []any) {
	where = []string{"a.domain = ?"}
	args = []any{domain}
	if f.PatientRef != "" {
		alias, _, _ := strings.Cut(arm.at, ".")
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
		args = append(args, us(sqlutil.Time(f.Since)))
	}
	if !f.Until.IsZero() {
		where = append(where, arm.at+" < ?")
		args = append(args, us(sqlutil.Time(f.Until)))
	}
	return where, args
}

// PurgeAuditBefore deletes the audit records recorded before cutoff and
// their patient rows, found by key through each record's patient_refs
// (audit_patients has no foreign key since migration 0006), or still
// staged (migration 0007). See
// store.Audit.
func (s *Store) PurgeAuditBefore(ctx context.Context, cutoff time.Time) (n int, err error) {
	defer store.Wrap(&err, "sqlite.PurgeAuditBefore")
	at := us(sqlutil.Time(cutoff))
	err = s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM audit_patients
			WHERE (domain, patient_ref, recorded, audit_id) IN (
				SELECT a.domain, j.value, a.recorded, a.id
				FROM audit_events a, json_each(a.patient_refs) j
				WHERE a.recorded < ?)`, at); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM audit_patients_staged WHERE recorded < ?`, at); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM audit_events WHERE recorded < ?`, at)
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
// exists. The write lock makes the check-and-insert atomic, and each call
// first deletes a batch of claims long expired. See store.Replay.
func (s *Store) ClaimJTI(ctx context.Context, issuer, jti string, expires time.Time) (fresh bool, err error) {
	defer store.Wrap(&err, "sqlite.ClaimJTI(%q)", issuer)
	if err := sqlutil.CheckJTI(issuer, jti, expires); err != nil {
		return false, err
	}
	now := sqlutil.Now()
	err = s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM jti_claims WHERE rowid IN (
			SELECT rowid FROM jti_claims WHERE expires_at < ? LIMIT ?)`,
			us(now.Add(-sqlutil.JTICleanupGrace)), sqlutil.JTICleanupBatch); err != nil {
			return err
		}
		// An expired claim is taken over; an unexpired one is left alone
		// and the statement changes no row.
		res, err := tx.ExecContext(ctx, `INSERT INTO jti_claims (issuer, jti, expires_at) VALUES (?, ?, ?)
			ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = excluded.expires_at
			WHERE jti_claims.expires_at <= ?`,
			issuer, jti, us(sqlutil.Time(expires)), us(now))
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
