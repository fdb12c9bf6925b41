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
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO audit_events
			(domain, id, recorded, action, interaction, outcome, outcome_desc, agent_id, agent_method,
			 token_id, network_addr, patient_refs, entity_refs, query, correlation_id, request_path)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (domain, id) DO NOTHING`,
			a.Domain, a.ID, us(a.Recorded), a.Action, a.Interaction, a.Outcome, a.OutcomeDesc, a.AgentID, a.AgentMethod,
			a.TokenID, a.NetworkAddr, sqlutil.EncodeRefs(a.PatientRefs), sqlutil.EncodeRefs(a.EntityRefs), a.Query,
			a.CorrelationID, a.RequestPath)
		if err != nil {
			return err
		}
		if ok, err := oneRow(res); err != nil {
			return err
		} else if !ok {
			return store.E(store.KindConflict, "audit record exists")
		}
		for _, p := range a.PatientRefs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO audit_patients (domain, audit_id, patient_ref, recorded)
				VALUES (?, ?, ?, ?)`, a.Domain, a.ID, p, us(a.Recorded)); err != nil {
				return err
			}
		}
		return nil
	})
}

// RecordAudits stores a batch of audit records and their patient rows in
// one transaction, two prepared statements per record. See store.Audit.
//
// Most batches are small (a read's record names one patient), so what a
// statement costs to parse showed more than what it does: both statements
// are prepared once per store, not once per batch. Both are INSERT OR
// IGNORE, which cannot abort half-way, so SQLite keeps no statement
// journal for them: a record that exists (a retried batch) is skipped with
// its patient rows; the other constraints (NOT NULL, the CHECKs) are
// checked by sqlutil.PrepareAudit first, so IGNORE never hides an invalid
// record.
func (s *Store) RecordAudits(ctx context.Context, batch []*store.AuditRecord) (err error) {
	defer store.Wrap(&err, "sqlite.RecordAudits(%d)", len(batch))
	for _, a := range batch {
		if err := sqlutil.PrepareAudit(a); err != nil {
			return err
		}
	}
	events, patients, err := s.audit.prepare(ctx, s.w)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		return insertAudits(ctx, tx, events, patients, batch)
	})
}

// insertAudits writes checked audit records inside tx through the prepared
// statements of auditStatements.
func insertAudits(ctx context.Context, tx *sql.Tx, events, patients *sql.Stmt, batch []*store.AuditRecord) error {
	events, patients = tx.StmtContext(ctx, events), tx.StmtContext(ctx, patients)
	for _, a := range batch {
		refs := sqlutil.EncodeRefs(a.PatientRefs)
		res, err := events.ExecContext(ctx, a.Domain, a.ID, us(a.Recorded), a.Action, a.Interaction, a.Outcome,
			a.OutcomeDesc, a.AgentID, a.AgentMethod, a.TokenID, a.NetworkAddr, refs, sqlutil.EncodeRefs(a.EntityRefs),
			a.Query, a.CorrelationID, a.RequestPath)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 || len(a.PatientRefs) == 0 {
			continue // exists (a retried batch), or names no patient
		}
		// The patient rows come from the JSON array just stored:
		// four arguments whatever the number of patients.
		if _, err := patients.ExecContext(ctx, a.Domain, us(a.Recorded), a.ID, refs); err != nil {
			return err
		}
	}
	return nil
}

// auditStatements are RecordAudits' statements, prepared on the write pool
// at first use.
type auditStatements struct {
	mu               sync.Mutex
	events, patients *sql.Stmt
}

func (p *auditStatements) prepare(ctx context.Context, db *sql.DB) (events, patients *sql.Stmt, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.events == nil {
		if p.events, err = db.PrepareContext(ctx, `INSERT OR IGNORE INTO audit_events
			(domain, id, recorded, action, interaction, outcome, outcome_desc, agent_id, agent_method,
			 token_id, network_addr, patient_refs, entity_refs, query, correlation_id, request_path)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`); err != nil {
			return nil, nil, err
		}
	}
	if p.patients == nil {
		if p.patients, err = db.PrepareContext(ctx, `INSERT OR IGNORE INTO audit_patients (domain, patient_ref, recorded, audit_id)
			SELECT ?, value, ?, ? FROM json_each(?)`); err != nil {
			return nil, nil, err
		}
	}
	return p.events, p.patients, nil
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
	from, at, id, where, args := auditWhere(domain, f)
	dir, cmp := sqlutil.AuditOrder(f.OldestFirst)
	if f.After != "" {
		recorded, after, err := sqlutil.DecodeAuditCursor(f.After)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "("+at+", "+id+") "+cmp+" (?, ?)")
		args = append(args, us(recorded), after)
	}
	limit := sqlutil.Limit(f.Limit)
	// One more than the page tells whether there is a next page.
	args = append(args, limit+1)
	rows, err := s.r.QueryContext(ctx, `SELECT `+auditCols+` FROM `+from+`
		WHERE `+strings.Join(where, " AND ")+`
		ORDER BY `+at+` `+dir+`, `+id+` `+dir+` LIMIT ?`, args...)
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
	from, _, _, where, args := auditWhere(domain, f)
	err = s.r.QueryRowContext(ctx, `SELECT count(*) FROM `+from+` WHERE `+strings.Join(where, " AND "), args...).Scan(&n)
	return n, err
}

// auditWhere is what SearchAudit and CountAudit share: the tables, the
// columns the order and cursor use, and the filter. Filtered by patient,
// the search walks audit_patients' index, whose (recorded, audit_id) equal
// the record's (recorded, id).
func auditWhere(domain string, f store.AuditFilter) (from, at, id string, where []string, args []any) {
	from, at, id = "audit_events a", "a.recorded", "a.id"
	where = []string{"a.domain = ?"}
	args = []any{domain}
	if f.PatientRef != "" {
		from += " JOIN audit_patients p ON p.domain = a.domain AND p.audit_id = a.id"
		at, id = "p.recorded", "p.audit_id"
		// p.domain spelled out, so the index's leading column is bound.
		where = append(where, "p.domain = ?", "p.patient_ref = ?")
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
		where = append(where, at+" >= ?")
		args = append(args, us(sqlutil.Time(f.Since)))
	}
	if !f.Until.IsZero() {
		where = append(where, at+" < ?")
		args = append(args, us(sqlutil.Time(f.Until)))
	}
	return from, at, id, where, args
}

// PurgeAuditBefore deletes the audit records recorded before cutoff and
// their patient rows, found by key through each record's patient_refs
// (audit_patients has no foreign key since migration 0006). See
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
