package sqlite

import (
	"context"
	"database/sql"
	"strings"

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

type scanner interface{ Scan(dest ...any) error }

// scanVersion reads versionCols (plus extra destinations after them).
func scanVersion(sc scanner, extra ...any) (*store.Report, error) {
	var (
		r                     store.Report
		created, next         int64
		delivered, leaseUntil sql.NullInt64
		leaseOwner            sql.NullString
		resource, submission  []byte
	)
	dest := append([]any{&r.Domain, &r.ID, &r.Version, &r.AppointmentID, &r.PatientRef, &r.Status,
		&resource, &submission, &r.Purged, &created,
		&r.Delivery.State, &r.Delivery.Attempts, &r.Delivery.LastError, &r.Delivery.ReportGUID, &delivered, &next,
		&leaseOwner, &leaseUntil}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return nil, err
	}
	r.Resource, r.Submission = resource, submission
	r.CreatedAt = fromUS(created)
	r.Delivery.NextAttemptAt = fromUS(next)
	r.Delivery.DeliveredAt = fromNullUS(delivered)
	r.Delivery.LeasedBy = leaseOwner.String
	r.Delivery.LeaseUntil = fromNullUS(leaseUntil)
	return &r, nil
}

// CreateReport stores version 1 of a new report and queues its delivery in
// one transaction. See store.Reports.
func (s *Store) CreateReport(ctx context.Context, r *store.Report) (err error) {
	if r != nil {
		defer store.Wrap(&err, "sqlite.CreateReport(%q, %q)", r.Domain, r.ID)
	}
	if err := sqlutil.PrepareReport(r); err != nil {
		return err
	}
	r.Version = 1
	audit, err := s.auditWithin(ctx, r.Audit)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO reports
			(domain, id, latest_version, appointment_id, patient_ref, status, created_at, updated_at)
			VALUES (?, ?, 1, ?, ?, ?, ?, ?)
			ON CONFLICT (domain, id) DO NOTHING`,
			r.Domain, r.ID, r.AppointmentID, r.PatientRef, r.Status, us(r.CreatedAt), us(r.CreatedAt))
		if err != nil {
			return err
		}
		if ok, err := oneRow(res); err != nil {
			return err
		} else if !ok {
			return store.E(store.KindConflict, "report exists")
		}
		if err := insertVersion(ctx, tx, r); err != nil {
			return err
		}
		return audit(tx)
	})
}

// UpdateReport stores the next version of a report and queues its
// delivery in one transaction. See store.Reports.
func (s *Store) UpdateReport(ctx context.Context, r *store.Report, ifMatch int) (err error) {
	if r != nil {
		defer store.Wrap(&err, "sqlite.UpdateReport(%q, %q)", r.Domain, r.ID)
	}
	if err := sqlutil.PrepareReport(r); err != nil {
		return err
	}
	audit, err := s.auditWithin(ctx, r.Audit)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		var (
			latest int
			appt   string
		)
		err := tx.QueryRowContext(ctx, `SELECT latest_version, appointment_id FROM reports WHERE domain = ? AND id = ?`,
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
		if _, err := tx.ExecContext(ctx, `UPDATE reports
			SET latest_version = ?, patient_ref = ?, status = ?, updated_at = ?
			WHERE domain = ? AND id = ?`,
			r.Version, r.PatientRef, r.Status, us(r.CreatedAt), r.Domain, r.ID); err != nil {
			return err
		}
		if err := insertVersion(ctx, tx, r); err != nil {
			return err
		}
		return audit(tx)
	})
}

// auditWithin checks a write's audit record (store.Report.Audit) and
// returns what stores it inside the write's transaction; nothing when a
// is nil.
func (s *Store) auditWithin(ctx context.Context, a *store.AuditRecord) (func(*sql.Tx) error, error) {
	if a == nil {
		return func(*sql.Tx) error { return nil }, nil
	}
	if err := sqlutil.PrepareAudit(a); err != nil {
		return nil, err
	}
	events, patients, err := s.audit.prepare(ctx, s.w)
	if err != nil {
		return nil, err
	}
	return func(tx *sql.Tx) error {
		return insertAudits(ctx, tx, events, patients, []*store.AuditRecord{a})
	}, nil
}

// insertVersion queues r in its appointment's delivery queue and writes its
// version row and artifacts.
func insertVersion(ctx context.Context, tx *sql.Tx, r *store.Report) error {
	// The new version is the newest of its appointment, so its due time is
	// the queue's; older pending versions are superseded at the next claim.
	// accepted numbers the appointment's versions in the order they are
	// written, which the write lock makes commit order.
	var seq int64
	if err := tx.QueryRowContext(ctx, `INSERT INTO delivery_queues (domain, appointment_id, accepted, due_at)
		VALUES (?, ?, 1, ?)
		ON CONFLICT (domain, appointment_id) DO UPDATE SET accepted = accepted + 1, due_at = excluded.due_at
		RETURNING accepted`, r.Domain, r.AppointmentID, us(r.Delivery.NextAttemptAt)).Scan(&seq); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO report_versions
		(domain, report_id, version, appointment_id, patient_ref, status, resource, submission, created_at, state, next_attempt_at, queue_seq)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.Domain, r.ID, r.Version, r.AppointmentID, r.PatientRef, r.Status, r.Resource, r.Submission,
		us(r.CreatedAt), r.Delivery.State, us(r.Delivery.NextAttemptAt), seq); err != nil {
		return err
	}
	for _, a := range r.Artifacts {
		if _, err := tx.ExecContext(ctx, `INSERT INTO report_artifacts
			(domain, report_id, version, idx, file_name, content_type, size, sha256, binary_id, data)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.Domain, r.ID, r.Version, a.Index, a.FileName, a.ContentType, a.Size, a.SHA256, a.BinaryID, a.Data); err != nil {
			return err
		}
	}
	return nil
}

// Report returns the latest version of a report. See store.Reports.
func (s *Store) Report(ctx context.Context, domain, id string) (_ *store.Report, err error) {
	defer store.Wrap(&err, "sqlite.Report(%q, %q)", domain, id)
	var r *store.Report
	err = s.read(ctx, func(q querier) error {
		var latest int
		if err := q.QueryRowContext(ctx, `SELECT latest_version FROM reports WHERE domain = ? AND id = ?`,
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
	defer store.Wrap(&err, "sqlite.ReportVersion(%q, %q, %d)", domain, id, version)
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
	r, err := scanVersion(q.QueryRowContext(ctx, `SELECT `+versionCols+`
		FROM report_versions v`+queueJoin+`
		WHERE v.domain = ? AND v.report_id = ? AND v.version = ?`, domain, id, version))
	if err != nil {
		return nil, notFound(err, "report version")
	}
	data := "NULL"
	if withData {
		data = "data"
	}
	rows, err := q.QueryContext(ctx, `SELECT report_id, version, idx, file_name, content_type, size, sha256, binary_id, qubs_guid, uploaded_at, `+data+`
		FROM report_artifacts WHERE domain = ? AND report_id = ? AND version = ? ORDER BY idx`, domain, id, version)
	if err != nil {
		return nil, err
	}
	err = scanArtifacts(rows, func(_ string, _ int, a store.Artifact) { r.Artifacts = append(r.Artifacts, a) })
	return r, err
}

// scanArtifacts reads rows of (report_id, version, idx, file_name,
// content_type, size, sha256, binary_id, qubs_guid, uploaded_at, data) and
// closes them.
func scanArtifacts(rows *sql.Rows, add func(reportID string, version int, a store.Artifact)) error {
	defer rows.Close()
	for rows.Next() {
		var (
			a        store.Artifact
			reportID string
			version  int
			uploaded sql.NullInt64
			data     []byte
		)
		if err := rows.Scan(&reportID, &version, &a.Index, &a.FileName, &a.ContentType, &a.Size, &a.SHA256,
			&a.BinaryID, &a.QUBSGUID, &uploaded, &data); err != nil {
			return err
		}
		a.UploadedAt = fromNullUS(uploaded)
		a.Data = data
		add(reportID, version, a)
	}
	return rows.Err()
}

// ReportArtifact returns one artifact with its bytes. See store.Reports.
func (s *Store) ReportArtifact(ctx context.Context, domain, id string, version, index int) (_ *store.Artifact, err error) {
	defer store.Wrap(&err, "sqlite.ReportArtifact(%q, %q, %d, %d)", domain, id, version, index)
	rows, err := s.r.QueryContext(ctx, `SELECT report_id, version, idx, file_name, content_type, size, sha256, binary_id, qubs_guid, uploaded_at, data
		FROM report_artifacts WHERE domain = ? AND report_id = ? AND version = ? AND idx = ?`, domain, id, version, index)
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
	defer store.Wrap(&err, "sqlite.SearchReports(%q)", domain)
	err = s.read(ctx, func(q querier) error {
		reports, next, err = search(ctx, q, domain, f)
		return err
	})
	return reports, next, err
}

// CountReports counts the reports matching f. See store.Reports.
func (s *Store) CountReports(ctx context.Context, domain string, f store.ReportFilter) (n int, err error) {
	defer store.Wrap(&err, "sqlite.CountReports(%q)", domain)
	where, args := reportWhere(domain, f)
	err = s.read(ctx, func(q querier) error {
		return q.QueryRowContext(ctx, `SELECT count(*) FROM reports r
			JOIN report_versions v ON v.domain = r.domain AND v.report_id = r.id AND v.version = r.latest_version
			WHERE `+strings.Join(where, " AND "), args...).Scan(&n)
	})
	return n, err
}

// reportWhere is the filter SearchReports and CountReports share.
func reportWhere(domain string, f store.ReportFilter) (where []string, args []any) {
	where = []string{"r.domain = ?"}
	args = []any{domain}
	in := func(col string, vals []string) {
		if len(vals) == 0 {
			return
		}
		where = append(where, col+" IN ("+placeholders(len(vals))+")")
		for _, v := range vals {
			args = append(args, v)
		}
	}
	in("r.appointment_id", f.AppointmentIDs)
	in("r.patient_ref", f.PatientRefs)
	in("r.status", f.Statuses)
	return where, args
}

func search(ctx context.Context, q querier, domain string, f store.ReportFilter) (_ []*store.Report, next string, err error) {
	where, args := reportWhere(domain, f)
	key, dir, cmp := sqlutil.ReportOrder(f.Order)
	if f.After != "" {
		at, id, err := sqlutil.DecodeCursor(f.After)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "("+key+", r.id) "+cmp+" (?, ?)")
		args = append(args, us(at), id)
	}
	limit := sqlutil.Limit(f.Limit)
	// One more than the page tells whether there is a next page.
	args = append(args, limit+1)
	rows, err := q.QueryContext(ctx, `SELECT `+versionCols+`, `+key+`
		FROM reports r JOIN report_versions v ON v.domain = r.domain AND v.report_id = r.id AND v.version = r.latest_version`+queueJoin+`
		WHERE `+strings.Join(where, " AND ")+`
		ORDER BY `+key+` `+dir+`, r.id `+dir+` LIMIT ?`, args...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var (
		reports []*store.Report
		firsts  []int64
	)
	for rows.Next() {
		var first int64
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
		last := reports[limit-1]
		next = sqlutil.EncodeCursor(fromUS(firsts[limit-1]), last.ID)
	}
	if len(reports) == 0 {
		return nil, "", nil
	}
	// The page's artifacts in one query rather than one per report.
	byID := make(map[string]*store.Report, len(reports))
	args = []any{domain}
	for _, r := range reports {
		byID[r.ID] = r
		args = append(args, r.ID)
	}
	arows, err := q.QueryContext(ctx, `SELECT a.report_id, a.version, a.idx, a.file_name, a.content_type, a.size, a.sha256, a.binary_id, a.qubs_guid, a.uploaded_at, NULL
		FROM report_artifacts a JOIN reports r ON r.domain = a.domain AND r.id = a.report_id AND r.latest_version = a.version
		WHERE a.domain = ? AND a.report_id IN (`+placeholders(len(reports))+`)
		ORDER BY a.report_id, a.idx`, args...)
	if err != nil {
		return nil, "", err
	}
	err = scanArtifacts(arows, func(id string, version int, a store.Artifact) {
		// Only the artifacts of the version on the page (the join already
		// ensures it inside the read transaction; this keeps it obvious).
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
	defer store.Wrap(&err, "sqlite.ArtifactBinary(%q, %q)", domain, binaryID)
	if binaryID == "" { // artifacts without a Binary
		return nil, store.E(store.KindNotFound, "no such binary")
	}
	rows, err := s.r.QueryContext(ctx, `SELECT a.report_id, a.version, a.idx, a.file_name, a.content_type, a.size, a.sha256, a.binary_id, a.qubs_guid, a.uploaded_at, a.data,
			v.patient_ref, v.created_at, v.purged
		FROM report_artifacts a JOIN report_versions v ON v.domain = a.domain AND v.report_id = a.report_id AND v.version = a.version
		WHERE a.domain = ? AND a.binary_id = ? ORDER BY a.version DESC LIMIT 1`, domain, binaryID)
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
	var (
		uploaded sql.NullInt64
		created  int64
	)
	if err := rows.Scan(&b.ReportID, &b.Version, &a.Index, &a.FileName, &a.ContentType, &a.Size, &a.SHA256, &a.BinaryID,
		&a.QUBSGUID, &uploaded, &a.Data, &b.PatientRef, &created, &b.Purged); err != nil {
		return nil, err
	}
	a.UploadedAt = fromNullUS(uploaded)
	b.CreatedAt = fromUS(created)
	return b, nil
}
