package postgres

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

// versionCols selects a report version (alias v) joined with its
// appointment's delivery queue (alias q, through queueJoin), whose lease
// belongs to the version only when it names the version.
const versionCols = `v.domain, v.report_id, v.version, v.appointment_id, v.patient_ref, v.status,
	v.resource, v.submission, v.purged, v.created_at,
	v.state, v.attempts, v.last_error, v.report_guid, v.delivered_at, v.next_attempt_at,
	CASE WHEN q.leased_report = v.report_id AND q.leased_version = v.version THEN q.lease_owner END,
	CASE WHEN q.leased_report = v.report_id AND q.leased_version = v.version THEN q.lease_until END`

// queueJoin joins a version (alias v) with its appointment's queue (alias
// q) for versionCols.
const queueJoin = ` LEFT JOIN delivery_queues q ON q.domain = v.domain AND q.appointment_id = v.appointment_id`

// scanVersion reads versionCols (plus extra destinations after them).
func scanVersion(row pgx.Row, extra ...any) (*store.Report, error) {
	var (
		r          store.Report
		leaseOwner *string
	)
	dest := append([]any{&r.Domain, &r.ID, &r.Version, &r.AppointmentID, &r.PatientRef, &r.Status,
		&r.Resource, &r.Submission, &r.Purged, &r.CreatedAt,
		&r.Delivery.State, &r.Delivery.Attempts, &r.Delivery.LastError, &r.Delivery.ReportGUID,
		&r.Delivery.DeliveredAt, &r.Delivery.NextAttemptAt,
		&leaseOwner, &r.Delivery.LeaseUntil}, extra...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	r.CreatedAt = utc(r.CreatedAt)
	r.Delivery.NextAttemptAt = utc(r.Delivery.NextAttemptAt)
	r.Delivery.DeliveredAt = utcPtr(r.Delivery.DeliveredAt)
	r.Delivery.LeaseUntil = utcPtr(r.Delivery.LeaseUntil)
	if leaseOwner != nil {
		r.Delivery.LeasedBy = *leaseOwner
	}
	return &r, nil
}

// CreateReport stores version 1 of a new report and queues its delivery in
// one transaction. See store.Reports.
func (s *Store) CreateReport(ctx context.Context, r *store.Report) (err error) {
	if r != nil {
		defer store.Wrap(&err, "postgres.CreateReport(%q, %q)", r.Domain, r.ID)
	}
	if err := sqlutil.PrepareReport(r); err != nil {
		return err
	}
	r.Version = 1
	audit, err := auditWithin(r.Audit)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		// ON CONFLICT waits for a concurrent insert of the same id to end,
		// then does nothing if it committed: exactly one create wins.
		tag, err := tx.Exec(ctx, `INSERT INTO reports
			(domain, id, latest_version, appointment_id, patient_ref, status, created_at, updated_at)
			VALUES ($1, $2, 1, $3, $4, $5, $6, $6)
			ON CONFLICT (domain, id) DO NOTHING`,
			r.Domain, r.ID, r.AppointmentID, r.PatientRef, r.Status, r.CreatedAt)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return store.E(store.KindConflict, "report exists")
		}
		if err := insertVersion(ctx, tx, r); err != nil {
			return err
		}
		return audit(ctx, tx)
	})
}

// UpdateReport stores the next version of a report and queues its
// delivery in one transaction. See store.Reports.
func (s *Store) UpdateReport(ctx context.Context, r *store.Report, ifMatch int) (err error) {
	if r != nil {
		defer store.Wrap(&err, "postgres.UpdateReport(%q, %q)", r.Domain, r.ID)
	}
	if err := sqlutil.PrepareReport(r); err != nil {
		return err
	}
	audit, err := auditWithin(r.Audit)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		// The row lock serialises concurrent updates: each gets its own
		// version number.
		var (
			latest int
			appt   string
		)
		err := tx.QueryRow(ctx, `SELECT latest_version, appointment_id FROM reports WHERE domain = $1 AND id = $2 FOR UPDATE`,
			r.Domain, r.ID).Scan(&latest, &appt)
		if err != nil {
			return notFound(err, "report")
		}
		if ifMatch > 0 && ifMatch != latest {
			return store.E(store.KindPrecondition, "version is %d, not %d", latest, ifMatch)
		}
		if r.AppointmentID != appt {
			return store.E(store.KindInvalid, "a report cannot move to another appointment")
		}
		r.Version = latest + 1
		if _, err := tx.Exec(ctx, `UPDATE reports
			SET latest_version = $1, patient_ref = $2, status = $3, updated_at = $4
			WHERE domain = $5 AND id = $6`,
			r.Version, r.PatientRef, r.Status, r.CreatedAt, r.Domain, r.ID); err != nil {
			return err
		}
		if err := insertVersion(ctx, tx, r); err != nil {
			return err
		}
		return audit(ctx, tx)
	})
}

// auditWithin checks a write's audit record (store.Report.Audit) and
// returns what stores it inside the write's transaction; nothing when a
// is nil.
func auditWithin(a *store.AuditRecord) (func(context.Context, pgx.Tx) error, error) {
	if a == nil {
		return func(context.Context, pgx.Tx) error { return nil }, nil
	}
	args, err := auditArgs([]*store.AuditRecord{a})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, insertAudits, args...)
		return err
	}, nil
}

// insertVersion queues r in its appointment's delivery queue and writes its
// version row and artifacts.
func insertVersion(ctx context.Context, tx pgx.Tx, r *store.Report) error {
	// The new version is the newest of its appointment, so its due time is
	// the queue's; older pending versions are superseded at the next claim.
	// The upsert locks the queue row until commit (waiting for a claim or
	// another new version of the appointment to commit first), so the
	// numbers accepted hands out follow commit order: a version numbered
	// lower than one already claimed can never appear later.
	var seq int64
	if err := tx.QueryRow(ctx, `INSERT INTO delivery_queues AS q (domain, appointment_id, accepted, due_at)
		VALUES ($1, $2, 1, $3)
		ON CONFLICT (domain, appointment_id) DO UPDATE SET accepted = q.accepted + 1, due_at = excluded.due_at
		RETURNING accepted`, r.Domain, r.AppointmentID, r.Delivery.NextAttemptAt).Scan(&seq); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO report_versions
		(domain, report_id, version, appointment_id, patient_ref, status, resource, submission, created_at, state, next_attempt_at, queue_seq)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		r.Domain, r.ID, r.Version, r.AppointmentID, r.PatientRef, r.Status, r.Resource, r.Submission,
		r.CreatedAt, r.Delivery.State, r.Delivery.NextAttemptAt, seq); err != nil {
		return err
	}
	if len(r.Artifacts) == 0 {
		return nil
	}
	return copyArtifacts(ctx, tx, r)
}

// copyArtifacts writes the artifacts of a version with one binary COPY,
// each one's bytes streamed through a pipe in 64 KiB messages: as a bytea
// parameter, the driver would copy the 2 MiB of a report's PDF twice (the
// encoded parameter, then the Bind message), tripling the memory a report
// costs while it is accepted. The binary format, unlike the text one,
// costs the server no hex to parse.
func copyArtifacts(ctx context.Context, tx pgx.Tx, r *store.Report) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeArtifactRows(pw, r)) }()
	_, err := tx.Conn().PgConn().CopyFrom(ctx, pr, `COPY report_artifacts
		(domain, report_id, version, idx, file_name, content_type, size, sha256, binary_id, data) FROM STDIN (FORMAT binary)`)
	pr.Close() // a writer still at work stops
	return err
}

// writeArtifactRows writes r's artifacts in COPY's binary format
// (PostgreSQL docs, COPY, "Binary Format"): a signature, then per row the
// field count and each field as a length and its bytes in the column
// type's binary form; -1 after the last row.
func writeArtifactRows(w io.Writer, r *store.Report) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString("PGCOPY\n\xff\r\n\x00")
	be := func(n int, v uint64) {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], v)
		bw.Write(b[8-n:])
	}
	be(4, 0) // flags
	be(4, 0) // header extension length
	field := func(b []byte) {
		if b == nil {
			be(4, math.MaxUint32) // -1: NULL
			return
		}
		be(4, uint64(len(b)))
		bw.Write(b)
	}
	for _, a := range r.Artifacts {
		be(2, 10)
		field([]byte(r.Domain))
		field([]byte(r.ID))
		be(4, 4)
		be(4, uint64(uint32(int32(r.Version))))
		be(4, 4)
		be(4, uint64(uint32(int32(a.Index))))
		field([]byte(a.FileName))
		field([]byte(a.ContentType))
		be(4, 8)
		be(8, uint64(a.Size))
		field([]byte(a.SHA256))
		field([]byte(a.BinaryID))
		field(a.Data)
	}
	be(2, math.MaxUint16) // -1: end
	return bw.Flush()
}

// Report returns the latest version of a report. See store.Reports.
func (s *Store) Report(ctx context.Context, domain, id string) (_ *store.Report, err error) {
	defer store.Wrap(&err, "postgres.Report(%q, %q)", domain, id)
	var r *store.Report
	err = s.read(ctx, func(q querier) error {
		var latest int
		if err := q.QueryRow(ctx, `SELECT latest_version FROM reports WHERE domain = $1 AND id = $2`,
			domain, id).Scan(&latest); err != nil {
			return notFound(err, "report")
		}
		r, err = loadVersion(ctx, q, domain, id, latest, false)
		return err
	})
	return r, err
}

// ReportVersion returns one version of a report. See store.Reports.
func (s *Store) ReportVersion(ctx context.Context, domain, id string, version int) (_ *store.Report, err error) {
	defer store.Wrap(&err, "postgres.ReportVersion(%q, %q, %d)", domain, id, version)
	var r *store.Report
	err = s.read(ctx, func(q querier) error {
		r, err = loadVersion(ctx, q, domain, id, version, false)
		return err
	})
	return r, err
}

// loadVersion reads one version and its artifacts, their Data only when
// withData.
func loadVersion(ctx context.Context, q querier, domain, id string, version int, withData bool) (*store.Report, error) {
	r, err := scanVersion(q.QueryRow(ctx, `SELECT `+versionCols+`
		FROM report_versions v`+queueJoin+`
		WHERE v.domain = $1 AND v.report_id = $2 AND v.version = $3`, domain, id, version))
	if err != nil {
		return nil, notFound(err, "report version")
	}
	data := "NULL::bytea"
	if withData {
		data = "data"
	}
	rows, err := q.Query(ctx, `SELECT report_id, version, idx, file_name, content_type, size, sha256, binary_id, qubs_guid, uploaded_at, `+data+`
		FROM report_artifacts a WHERE domain = $1 AND report_id = $2 AND version = $3 ORDER BY idx`, domain, id, version)
	if err != nil {
		return nil, err
	}
	err = scanArtifacts(rows, func(_ string, _ int, a store.Artifact) { r.Artifacts = append(r.Artifacts, a) })
	return r, err
}

// scanArtifacts reads rows of (report_id, version, idx, file_name,
// content_type, size, sha256, binary_id, qubs_guid, uploaded_at, data) and
// closes them.
func scanArtifacts(rows pgx.Rows, add func(reportID string, version int, a store.Artifact)) error {
	defer rows.Close()
	for rows.Next() {
		var (
			a        store.Artifact
			reportID string
			version  int
		)
		if err := rows.Scan(&reportID, &version, &a.Index, &a.FileName, &a.ContentType, &a.Size, &a.SHA256,
			&a.BinaryID, &a.QUBSGUID, &a.UploadedAt, &a.Data); err != nil {
			return err
		}
		a.UploadedAt = utcPtr(a.UploadedAt)
		add(reportID, version, a)
	}
	return rows.Err()
}

// ReportArtifact returns one artifact with its bytes. See store.Reports.
func (s *Store) ReportArtifact(ctx context.Context, domain, id string, version, index int) (_ *store.Artifact, err error) {
	defer store.Wrap(&err, "postgres.ReportArtifact(%q, %q, %d, %d)", domain, id, version, index)
	rows, err := s.pool.Query(ctx, `SELECT report_id, version, idx, file_name, content_type, size, sha256, binary_id, qubs_guid, uploaded_at, a.data
		FROM report_artifacts a WHERE domain = $1 AND report_id = $2 AND version = $3 AND idx = $4`, domain, id, version, index)
	if err != nil {
		return nil, err
	}
	var found *store.Artifact
	if err := scanArtifacts(rows, func(_ string, _ int, a store.Artifact) { found = &a }); err != nil {
		return nil, err
	}
	if found == nil {
		return nil, store.E(store.KindNotFound, "no such artifact")
	}
	return found, nil
}

// SearchReports pages through the latest versions of a domain's reports.
// See store.Reports.
func (s *Store) SearchReports(ctx context.Context, domain string, f store.ReportFilter) (reports []*store.Report, next string, err error) {
	defer store.Wrap(&err, "postgres.SearchReports(%q)", domain)
	err = s.read(ctx, func(q querier) error {
		reports, next, err = search(ctx, q, domain, f)
		return err
	})
	return reports, next, err
}

// CountReports counts the reports matching f. See store.Reports.
func (s *Store) CountReports(ctx context.Context, domain string, f store.ReportFilter) (n int, err error) {
	defer store.Wrap(&err, "postgres.CountReports(%q)", domain)
	where, args := reportWhere(domain, f)
	err = s.read(ctx, func(q querier) error {
		return q.QueryRow(ctx, `SELECT count(*) FROM reports r
			JOIN report_versions v ON v.domain = r.domain AND v.report_id = r.id AND v.version = r.latest_version
			WHERE `+strings.Join(where, " AND "), args...).Scan(&n)
	})
	return n, err
}

// reportWhere is the filter SearchReports and CountReports share.
func reportWhere(domain string, f store.ReportFilter) (where []string, args []any) {
	where = []string{"r.domain = $1"}
	args = []any{domain}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	// = ANY($n) takes the whole list as one text[] parameter.
	in := func(col string, vals []string) {
		if len(vals) > 0 {
			where = append(where, col+" = ANY("+arg(vals)+")")
		}
	}
	in("r.appointment_id", f.AppointmentIDs)
	in("r.patient_ref", f.PatientRefs)
	in("r.status", f.Statuses)
	return where, args
}

func search(ctx context.Context, q querier, domain string, f store.ReportFilter) (_ []*store.Report, next string, err error) {
	where, args := reportWhere(domain, f)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	key, dir, cmp := sqlutil.ReportOrder(f.Order)
	if f.After != "" {
		at, id, err := sqlutil.DecodeCursor(f.After)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "("+key+", r.id) "+cmp+" ("+arg(at)+", "+arg(id)+")")
	}
	limit := sqlutil.Limit(f.Limit)
	// One more than the page tells whether there is a next page.
	rows, err := q.Query(ctx, `SELECT `+versionCols+`, `+key+`
		FROM reports r JOIN report_versions v ON v.domain = r.domain AND v.report_id = r.id AND v.version = r.latest_version`+queueJoin+`
		WHERE `+strings.Join(where, " AND ")+`
		ORDER BY `+key+` `+dir+`, r.id `+dir+` LIMIT `+arg(limit+1), args...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var (
		reports []*store.Report
		firsts  []time.Time
	)
	for rows.Next() {
		var first time.Time
		r, err := scanVersion(rows, &first)
		if err != nil {
			return nil, "", err
		}
		reports = append(reports, r)
		firsts = append(firsts, first)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	rows.Close()
	if len(reports) > limit {
		reports = reports[:limit]
		next = sqlutil.EncodeCursor(firsts[limit-1], reports[limit-1].ID)
	}
	if len(reports) == 0 {
		return nil, "", nil
	}
	// The page's artifacts in one query rather than one per report.
	byID := make(map[string]*store.Report, len(reports))
	ids := make([]string, 0, len(reports))
	for _, r := range reports {
		byID[r.ID] = r
		ids = append(ids, r.ID)
	}
	arows, err := q.Query(ctx, `SELECT a.report_id, a.version, a.idx, a.file_name, a.content_type, a.size, a.sha256, a.binary_id, a.qubs_guid, a.uploaded_at, NULL::bytea
		FROM report_artifacts a JOIN reports r ON r.domain = a.domain AND r.id = a.report_id AND r.latest_version = a.version
		WHERE a.domain = $1 AND a.report_id = ANY($2)
		ORDER BY a.report_id, a.idx`, domain, ids)
	if err != nil {
		return nil, "", err
	}
	err = scanArtifacts(arows, func(id string, version int, a store.Artifact) {
		if r := byID[id]; r != nil && r.Version == version {
			r.Artifacts = append(r.Artifacts, a)
		}
	})
	if err != nil {
		return nil, "", err
	}
	return reports, next, nil
}

// ArtifactBinary returns the artifact served as a Binary. See store.Reports.
func (s *Store) ArtifactBinary(ctx context.Context, domain, binaryID string) (_ *store.ReportBinary, err error) {
	defer store.Wrap(&err, "postgres.ArtifactBinary(%q, %q)", domain, binaryID)
	if binaryID == "" { // artifacts without a Binary
		return nil, store.E(store.KindNotFound, "no such binary")
	}
	rows, err := s.pool.Query(ctx, `SELECT a.report_id, a.version, a.idx, a.file_name, a.content_type, a.size, a.sha256, a.binary_id, a.qubs_guid, a.uploaded_at, a.data,
			v.patient_ref, v.created_at, v.purged
		FROM report_artifacts a JOIN report_versions v ON v.domain = a.domain AND v.report_id = a.report_id AND v.version = a.version
		WHERE a.domain = $1 AND a.binary_id = $2 ORDER BY a.version DESC LIMIT 1`, domain, binaryID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, err
		}
		return nil, store.E(store.KindNotFound, "no such binary")
	}
	b := &store.ReportBinary{Domain: domain}
	a := &b.Artifact
	if err := rows.Scan(&b.ReportID, &b.Version, &a.Index, &a.FileName, &a.ContentType, &a.Size, &a.SHA256, &a.BinaryID,
		&a.QUBSGUID, &a.UploadedAt, &a.Data, &b.PatientRef, &b.CreatedAt, &b.Purged); err != nil {
		return nil, err
	}
	a.UploadedAt = utcPtr(a.UploadedAt)
	b.CreatedAt = b.CreatedAt.UTC()
	return b, nil
}
