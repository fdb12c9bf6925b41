package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

const auditCols = `a.domain, a.id, a.recorded, a.action, a.interaction, a.outcome, a.outcome_desc,
	a.agent_id, a.agent_method, a.token_id, a.network_addr, a.patient_refs, a.entity_refs, a.query,
	a.correlation_id, a.request_path`

func scanAudit(row pgx.Row) (*store.AuditRecord, error) {
	var (
		a                  store.AuditRecord
		patients, entities string
	)
	if err := row.Scan(&a.Domain, &a.ID, &a.Recorded, &a.Action, &a.Interaction, &a.Outcome, &a.OutcomeDesc,
		&a.AgentID, &a.AgentMethod, &a.TokenID, &a.NetworkAddr, &patients, &entities, &a.Query,
		&a.CorrelationID, &a.RequestPath); err != nil {
		return nil, err
	}
	a.Recorded = utc(a.Recorded)
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
	defer func() { store.Wrap(&err, "postgres.RecordAudit(%q, %q)", a.Domain, a.ID) }()
	if err := sqlutil.PrepareAudit(a); err != nil {
		return err
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO audit_events
			(domain, id, recorded, action, interaction, outcome, outcome_desc, agent_id, agent_method,
			 token_id, network_addr, patient_refs, entity_refs, query, correlation_id, request_path)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
			ON CONFLICT (domain, id) DO NOTHING`,
			a.Domain, a.ID, a.Recorded, a.Action, a.Interaction, a.Outcome, a.OutcomeDesc, a.AgentID, a.AgentMethod,
			a.TokenID, a.NetworkAddr, sqlutil.EncodeRefs(a.PatientRefs), sqlutil.EncodeRefs(a.EntityRefs), a.Query,
			a.CorrelationID, a.RequestPath)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return store.E(store.KindConflict, "audit record exists")
		}
		if len(a.PatientRefs) > 0 {
			// One statement for all patients: unnest pairs each with the
			// record's key.
			if _, err := tx.Exec(ctx, `INSERT INTO audit_patients (domain, audit_id, patient_ref, recorded)
				SELECT $1, $2, p, $3 FROM unnest($4::text[]) AS p`,
				a.Domain, a.ID, a.Recorded, a.PatientRefs); err != nil {
				return err
			}
		}
		return nil
	})
}

// RecordAudits stores a batch of audit records and their patient rows in
// one statement (column arrays through unnest, the patient rows joined to
// the records the statement inserted) and one transaction. See store.Audit.
//
// A batch of successful reads and searches commits with synchronous_commit
// off: the commit returns once the records are in PostgreSQL's write-ahead
// log buffers, without waiting for them to reach the disk, so that a read
// waiting for its audit record waits for a round trip, not an fsync. A
// crash of the bridge then loses nothing committed; a crash of the
// database server itself can lose the last few hundred milliseconds of
// read records (three times wal_writer_delay at most), never corrupting
// anything. A batch holding a change (create, update, delete) or a failed
// or refused request keeps the server's setting: those records are
// promised durable before their answer is sent, like the report they are
// about.
func (s *Store) RecordAudits(ctx context.Context, batch []*store.AuditRecord) (err error) {
	defer store.Wrap(&err, "postgres.RecordAudits(%d)", len(batch))
	if len(batch) == 0 {
		return nil
	}
	args, err := auditArgs(batch)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		if readsOnly(batch) {
			if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, insertAudits, args...)
		return err
	})
}

// auditArgs checks a batch of audit records and returns insertAudits'
// arguments: one array per column.
func auditArgs(batch []*store.AuditRecord) ([]any, error) {
	// One array per column: text, except recorded (3rd).
	text := make([][]string, 16)
	at := make([]time.Time, 0, len(batch))
	var pDomain, pID, pRef []string
	var pAt []time.Time
	for _, a := range batch {
		if err := sqlutil.PrepareAudit(a); err != nil {
			return nil, err
		}
		at = append(at, a.Recorded)
		for i, v := range [...]string{a.Domain, a.ID, "", a.Action, a.Interaction, a.Outcome, a.OutcomeDesc, a.AgentID,
			a.AgentMethod, a.TokenID, a.NetworkAddr, sqlutil.EncodeRefs(a.PatientRefs), sqlutil.EncodeRefs(a.EntityRefs),
			a.Query, a.CorrelationID, a.RequestPath} {
			text[i] = append(text[i], v)
		}
		for _, p := range a.PatientRefs {
			pDomain, pID, pRef, pAt = append(pDomain, a.Domain), append(pID, a.ID), append(pRef, p), append(pAt, a.Recorded)
		}
	}
	args := make([]any, 0, 20)
	for i, col := range text {
		if i == 2 {
			args = append(args, at)
			continue
		}
		args = append(args, col)
	}
	return append(args, pDomain, pID, pRef, pAt), nil
}

// insertAudits writes the records of auditArgs, each with its patient
// rows, skipping a record whose (domain, id) exists.
const insertAudits = `WITH ins AS (
			INSERT INTO audit_events
				(domain, id, recorded, action, interaction, outcome, outcome_desc, agent_id, agent_method,
				 token_id, network_addr, patient_refs, entity_refs, query, correlation_id, request_path)
			SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
				$7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
				$15::text[], $16::text[])
			ON CONFLICT (domain, id) DO NOTHING
			RETURNING domain, id)
			INSERT INTO audit_patients (domain, audit_id, patient_ref, recorded)
			SELECT p.domain, p.id, p.ref, p.recorded
			FROM unnest($17::text[], $18::text[], $19::text[], $20::timestamptz[]) AS p (domain, id, ref, recorded)
			JOIN ins ON ins.domain = p.domain AND ins.id = p.id`

// AuditEvent returns one audit record. See store.Audit.
func (s *Store) AuditEvent(ctx context.Context, domain, id string) (_ *store.AuditRecord, err error) {
	defer store.Wrap(&err, "postgres.AuditEvent(%q, %q)", domain, id)
	a, err := scanAudit(s.pool.QueryRow(ctx, `SELECT `+auditCols+`
		FROM audit_events a WHERE a.domain = $1 AND a.id = $2`, domain, id))
	if err != nil {
		return nil, notFound(err, "audit record")
	}
	return a, nil
}

// SearchAudit pages through a domain's audit records, newest first. See
// store.Audit.
func (s *Store) SearchAudit(ctx context.Context, domain string, f store.AuditFilter) (records []*store.AuditRecord, next string, err error) {
	defer store.Wrap(&err, "postgres.SearchAudit(%q)", domain)
	from, at, id, where, args := auditWhere(domain, f)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	dir, cmp := sqlutil.AuditOrder(f.OldestFirst)
	if f.After != "" {
		recorded, after, err := sqlutil.DecodeAuditCursor(f.After)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "("+at+", "+id+") "+cmp+" ("+arg(recorded)+", "+arg(after)+")")
	}
	limit := sqlutil.Limit(f.Limit)
	// One more than the page tells whether there is a next page.
	rows, err := s.pool.Query(ctx, `SELECT `+auditCols+` FROM `+from+`
		WHERE `+strings.Join(where, " AND ")+`
		ORDER BY `+at+` `+dir+`, `+id+` `+dir+` LIMIT `+arg(limit+1), args...)
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
	defer store.Wrap(&err, "postgres.CountAudit(%q)", domain)
	from, _, _, where, args := auditWhere(domain, f)
	err = s.pool.QueryRow(ctx, `SELECT count(*) FROM `+from+` WHERE `+strings.Join(where, " AND "), args...).Scan(&n)
	return n, err
}

// auditWhere is what SearchAudit and CountAudit share: the tables, the
// columns the order and cursor use, and the filter. Filtered by patient,
// the search walks audit_patients' index, whose (recorded, audit_id) equal
// the record's (recorded, id).
func auditWhere(domain string, f store.AuditFilter) (from, at, id string, where []string, args []any) {
	args = []any{domain}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	from, at, id = "audit_events a", "a.recorded", "a.id"
	where = []string{"a.domain = $1"}
	if f.PatientRef != "" {
		from += " JOIN audit_patients p ON p.domain = a.domain AND p.audit_id = a.id"
		at, id = "p.recorded", "p.audit_id"
		// p.domain spelled out, so the index's leading column is bound.
		where = append(where, "p.domain = $1", "p.patient_ref = "+arg(f.PatientRef))
	}
	if f.AgentID != "" {
		where = append(where, "a.agent_id = "+arg(f.AgentID))
	}
	if f.Action != "" {
		where = append(where, "a.action = "+arg(f.Action))
	}
	if !f.Since.IsZero() {
		where = append(where, at+" >= "+arg(sqlutil.Time(f.Since)))
	}
	if !f.Until.IsZero() {
		where = append(where, at+" < "+arg(sqlutil.Time(f.Until)))
	}
	return from, at, id, where, args
}

// PurgeAuditBefore deletes the audit records recorded before cutoff and
// their patient rows, in one statement: the rows are found by key through
// each deleted record's patient_refs (audit_patients has no foreign key
// since migration 0006). See store.Audit.
func (s *Store) PurgeAuditBefore(ctx context.Context, cutoff time.Time) (n int, err error) {
	defer store.Wrap(&err, "postgres.PurgeAuditBefore")
	// A data-modifying CTE runs to completion whether or not it is read.
	err = s.pool.QueryRow(ctx, `WITH gone AS (
			DELETE FROM audit_events WHERE recorded < $1
			RETURNING domain, id, recorded, patient_refs),
		rows AS (
			DELETE FROM audit_patients p
			USING gone CROSS JOIN LATERAL jsonb_array_elements_text(gone.patient_refs::jsonb) AS r (ref)
			WHERE p.domain = gone.domain AND p.patient_ref = r.ref AND p.recorded = gone.recorded
				AND p.audit_id = gone.id)
		SELECT count(*) FROM gone`, sqlutil.Time(cutoff)).Scan(&n)
	if err != nil {
		return 0, err
	}
	return n, nil
}

// ClaimJTI claims (issuer, jti) until expires, unless an unexpired claim
// exists. See store.Replay.
//
// The claim is one INSERT ... ON CONFLICT DO UPDATE ... WHERE, which
// PostgreSQL guarantees to insert or update atomically even under
// concurrency: a racing claim waits for the row the winner inserted or
// updated, then evaluates the WHERE against the winner's committed row
// (no longer expired) and changes nothing. So exactly one is fresh, across
// replicas too.
func (s *Store) ClaimJTI(ctx context.Context, issuer, jti string, expires time.Time) (fresh bool, err error) {
	defer store.Wrap(&err, "postgres.ClaimJTI(%q)", issuer)
	if err := sqlutil.CheckJTI(issuer, jti, expires); err != nil {
		return false, err
	}
	now := sqlutil.Now()
	// Cleanup first, in its own statement: SKIP LOCKED leaves rows another
	// replica is deleting (or claiming) to it, so replicas never wait on
	// each other's cleanup, and it is done before anything is claimed, so
	// its failure is the call's failure with nothing half done.
	if _, err := s.pool.Exec(ctx, `DELETE FROM jti_claims WHERE ctid = ANY(ARRAY(
		SELECT ctid FROM jti_claims WHERE expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))`,
		now.Add(-sqlutil.JTICleanupGrace), sqlutil.JTICleanupBatch); err != nil {
		return false, err
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO jti_claims (issuer, jti, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = EXCLUDED.expires_at
		WHERE jti_claims.expires_at <= $4`,
		issuer, jti, sqlutil.Time(expires), now)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// readsOnly reports whether every record of the batch is a successful read
// or search, the records whose loss in a database crash is bounded rather
// than ruled out (see RecordAudits).
func readsOnly(batch []*store.AuditRecord) bool {
	for _, a := range batch {
		if a.Outcome != store.AuditOutcomeSuccess || (a.Action != store.AuditActionRead && a.Action != store.AuditActionExecute) {
			return false
		}
	}
	return true
}
