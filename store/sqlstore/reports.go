package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

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

// artifactCols are what scanArtifacts reads, then artifactData or
// noArtifactData.
const artifactCols = `a.report_id, a.version, a.idx, a.file_name, a.content_type, a.size, a.sha256, a.binary_id, a.qubs_guid, a.uploaded_at`

// artifactData are an artifact's bytes where its row holds them (rows
// written before migration 0012 on SQLite, 0015 on PostgreSQL), the file
// that holds them (SQLite since 0012, artifactfiles.go) and the number of
// chunks that hold them (PostgreSQL since 0015, readChunks);
// noArtifactData stands for them when the caller wants metadata only.
const artifactData = `a.data, a.data_file, a.chunks`

const noArtifactData = `NULL, NULL, NULL`

type scanner interface{ Scan(dest ...any) error }

// scanVersion reads versionCols (plus extra destinations after them).
func scanVersion(sc scanner, extra ...any) (*store.Report, error) {
	var (
		r          store.Report
		leaseOwner sql.NullString
	)
	dest := append([]any{&r.Domain, &r.ID, &r.Version, &r.AppointmentID, &r.PatientRef, &r.Status,
		&r.Resource, &r.Submission, &r.Purged, at{&r.CreatedAt},
		&r.Delivery.State, &r.Delivery.Attempts, &r.Delivery.LastError, &r.Delivery.ReportGUID,
		atPtr{&r.Delivery.DeliveredAt}, at{&r.Delivery.NextAttemptAt},
		&leaseOwner, atPtr{&r.Delivery.LeaseUntil}}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return nil, err
	}
	r.Delivery.LeasedBy = leaseOwner.String
	return &r, nil
}

// CreateReport stores version 1 of a new report and queues its delivery in
// one transaction. See store.Reports.
func (s *Store) CreateReport(ctx context.Context, r *store.Report) (err error) {
	if r != nil {
		defer s.wrap(&err, "CreateReport(%q, %q)", r.Domain, r.ID)
	}
	if err := sqlutil.PrepareReport(r); err != nil {
		return err
	}
	r.Version = 1
	if r.Audit != nil {
		if err := sqlutil.PrepareAudit(r.Audit); err != nil {
			return err
		}
	}
	return s.writeVersion(ctx, r, func(tx *tx, files []string) error {
		// ON CONFLICT waits for a concurrent insert of the same id to end,
		// then does nothing if it committed: exactly one create wins.
		res, err := tx.exec(ctx, `INSERT INTO reports
			(domain, id, latest_version, appointment_id, patient_ref, status, created_at, updated_at)
			VALUES (?, ?, 1, ?, ?, ?, ?, ?)
			ON CONFLICT (domain, id) DO NOTHING`,
			r.Domain, r.ID, r.AppointmentID, r.PatientRef, r.Status, s.tm(r.CreatedAt), s.tm(r.CreatedAt))
		if err := changedOne(res, err, store.KindConflict, "report exists"); err != nil {
			return err
		}
		if err := s.insertVersion(ctx, tx, r, files); err != nil {
			return err
		}
		return s.auditWithin(ctx, tx, r.Audit)
	})
}

// UpdateReport stores the next version of a report and queues its
// delivery in one transaction. See store.Reports.
func (s *Store) UpdateReport(ctx context.Context, r *store.Report, ifMatch int) (err error) {
	if r != nil {
		defer s.wrap(&err, "UpdateReport(%q, %q)", r.Domain, r.ID)
	}
	if err := sqlutil.PrepareReport(r); err != nil {
		return err
	}
	if r.Audit != nil {
		if err := sqlutil.PrepareAudit(r.Audit); err != nil {
			return err
		}
	}
	return s.writeVersion(ctx, r, func(tx *tx, files []string) error {
		// The report row's lock serialises concurrent updates: each gets
		// its own version number.
		var (
			latest int
			appt   string
		)
		err := tx.queryRow(ctx, `SELECT latest_version, appointment_id FROM reports WHERE domain = ? AND id = ?`+s.d.forUpdate(),
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
		if _, err := tx.exec(ctx, `UPDATE reports
			SET latest_version = ?, patient_ref = ?, status = ?, updated_at = ?
			WHERE domain = ? AND id = ?`,
			r.Version, r.PatientRef, r.Status, s.tm(r.CreatedAt), r.Domain, r.ID); err != nil {
			return err
		}
		if err := s.insertVersion(ctx, tx, r, files); err != nil {
			return err
		}
		return s.auditWithin(ctx, tx, r.Audit)
	})
}

// auditWithin stores a write's audit record (store.Report.Audit, checked
// before the transaction) inside the write's transaction, so that the
// change and its record are durable in one commit; nothing when a is nil.
func (s *Store) auditWithin(ctx context.Context, tx *tx, a *store.AuditRecord) error {
	if a == nil {
		return nil
	}
	return s.d.insertAudits(ctx, tx, []*store.AuditRecord{a})
}

// writeVersion runs the write transaction of a new version r, its
// artifacts' files (SQLite, migration 0012) written and synced before it
// begins: the fsync, the longest part of a report's write, then waits
// outside the database's one write lock, beside other writers rather than
// in front of them. fn gets the files' names for insertVersion. Files of
// a transaction that does not commit are removed.
func (s *Store) writeVersion(ctx context.Context, r *store.Report, fn func(tx *tx, files []string) error) error {
	af := s.d.artifactFiles()
	if af == nil {
		return s.write(ctx, func(tx *tx) error { return fn(tx, nil) })
	}
	files, err := af.writeAll(r.Artifacts)
	if err != nil {
		return err
	}
	if err := s.write(ctx, func(tx *tx) error { return fn(tx, files) }); err != nil {
		af.removeAll(files)
		return err
	}
	return nil
}

// insertVersion queues r in its appointment's delivery queue and writes its
// version row and artifacts (files: see dialect.insertArtifacts).
func (s *Store) insertVersion(ctx context.Context, tx *tx, r *store.Report, files []string) error {
	// The new version is the newest of its appointment, so its due time is
	// the queue's; older pending versions are superseded at the next claim.
	// The upsert locks the queue row until commit (SQLite: the write lock
	// already does), waiting for a claim or another new version of the
	// appointment to commit first, so the numbers accepted hands out
	// follow commit order: a version numbered lower than one already
	// claimed can never appear later.
	var seq int64
	if err := tx.queryRow(ctx, `INSERT INTO delivery_queues (domain, appointment_id, accepted, due_at)
		VALUES (?, ?, 1, ?)
		ON CONFLICT (domain, appointment_id) DO UPDATE SET accepted = delivery_queues.accepted + 1, due_at = excluded.due_at
		RETURNING accepted`, r.Domain, r.AppointmentID, s.tm(r.Delivery.NextAttemptAt)).Scan(&seq); err != nil {
		return err
	}
	if _, err := tx.exec(ctx, `INSERT INTO report_versions
		(domain, report_id, version, appointment_id, patient_ref, status, resource, submission, created_at, state, next_attempt_at, queue_seq)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.Domain, r.ID, r.Version, r.AppointmentID, r.PatientRef, r.Status, r.Resource, r.Submission,
		s.tm(r.CreatedAt), r.Delivery.State, s.tm(r.Delivery.NextAttemptAt), seq); err != nil {
		return err
	}
	if len(r.Artifacts) == 0 {
		return nil
	}
	return s.d.insertArtifacts(ctx, tx, r, files)
}

// Report returns the latest version of a report. See store.Reports.
func (s *Store) Report(ctx context.Context, domain, id string) (_ *store.Report, err error) {
	defer s.wrap(&err, "Report(%q, %q)", domain, id)
	var r *store.Report
	err = s.read(ctx, func(q q) error {
		var latest int
		if err := q.queryRow(ctx, `SELECT latest_version FROM reports WHERE domain = ? AND id = ?`,
			domain, id).Scan(&latest); err != nil {
			return notFound(err, "report")
		}
		r, err = loadVersion(ctx, q, domain, id, latest, false, nil)
		return err
	})
	return r, err
}

// ReportVersion returns one version of a report. See store.Reports.
func (s *Store) ReportVersion(ctx context.Context, domain, id string, version int) (_ *store.Report, err error) {
	defer s.wrap(&err, "ReportVersion(%q, %q, %d)", domain, id, version)
	var r *store.Report
	err = s.read(ctx, func(q q) error {
		r, err = loadVersion(ctx, q, domain, id, version, false, nil)
		return err
	})
	return r, err
}

// loadVersion reads one version and its artifacts, their Data only when
// withData, then from held where it has them (loadArtifacts).
func loadVersion(ctx context.Context, q q, domain, id string, version int, withData bool, held store.Held) (*store.Report, error) {
	r, err := scanVersion(q.queryRow(ctx, `SELECT `+versionCols+`
		FROM report_versions v`+queueJoin+`
		WHERE v.domain = ? AND v.report_id = ? AND v.version = ?`, domain, id, version))
	if err != nil {
		return nil, notFound(err, "report version")
	}
	data := noArtifactData
	if withData {
		data = artifactData
	}
	rows, err := q.query(ctx, `SELECT `+artifactCols+`, `+data+`
		FROM report_artifacts a WHERE a.domain = ? AND a.report_id = ? AND a.version = ? ORDER BY a.idx`, domain, id, version)
	if err != nil {
		return nil, err
	}
	arts, err := loadArtifacts(ctx, q, domain, rows, held)
	if err != nil {
		return nil, err
	}
	for _, a := range arts {
		r.Artifacts = append(r.Artifacts, a.Artifact)
	}
	return r, nil
}

// loadArtifacts reads rows of artifactCols and artifactData with their
// bytes: scanArtifacts, then, once the rows are closed, each artifact's
// file or chunks, unless held (nil: none) gives its bytes. Those are
// taken only as long as the row says, so that a Held that erred could
// not have an artifact delivered short or long.
func loadArtifacts(ctx context.Context, q q, domain string, rows *sql.Rows, held store.Held) ([]scannedArtifact, error) {
	arts, err := scanArtifacts(rows)
	if err != nil {
		return nil, err
	}
	for i := range arts {
		sa := &arts[i]
		if held != nil && sa.Data == nil && (sa.file.Valid || sa.chunks.Valid) {
			if b := held(domain, sa.reportID, sa.version, &sa.Artifact); b != nil && int64(len(b)) == sa.Size {
				sa.Data = b
				continue
			}
		}
		if err := loadArtifactFile(q.d.artifactFiles(), sa.file, &sa.Artifact); err != nil {
			return nil, err
		}
		if err := sa.readChunks(ctx, q, domain); err != nil {
			return nil, err
		}
	}
	return arts, nil
}

// scannedArtifact is a row of artifactCols and artifactData (or
// noArtifactData).
type scannedArtifact struct {
	store.Artifact
	reportID string
	version  int
	// file is set when the bytes are in a file (SQLite), chunks when they
	// are in report_artifact_chunks (PostgreSQL), for loadArtifacts to
	// read.
	file   sql.NullString
	chunks sql.NullInt64
}

// scanArtifacts reads rows of artifactCols and artifactData (or
// noArtifactData) and closes them. Bytes in files and chunks are read by
// loadArtifacts once the rows are closed: a transaction's connection runs
// one query at a time, and held may make the reads needless.
func scanArtifacts(rows *sql.Rows) ([]scannedArtifact, error) {
	defer rows.Close()
	var out []scannedArtifact
	for rows.Next() {
		var sa scannedArtifact
		a := &sa.Artifact
		if err := rows.Scan(&sa.reportID, &sa.version, &a.Index, &a.FileName, &a.ContentType, &a.Size, &a.SHA256,
			&a.BinaryID, &a.QUBSGUID, atPtr{&a.UploadedAt}, &a.Data, &sa.file, &sa.chunks); err != nil {
			return nil, err
		}
		out = append(out, sa)
	}
	return out, rows.Err()
}

// readChunks reads the bytes of an artifact stored in chunks (PostgreSQL,
// migration 0015), if it is one, into one buffer of the artifact's size.
// They used to be reassembled by the server with string_agg in the row's
// query: PostgreSQL built a 2 MiB value by appending, and the bridge held
// two copies of it at once (the driver's and database/sql's); 11.5-12 ms
// and 9.7-10 ms of the server's CPU per 2 MiB read against 4.9-5.9 and
// 1.7-2.0 since, and one copy (BenchmarkReportArtifact2MB,
// docs/performance.md). Callers read the row and its chunks in one
// transaction, whose connection q.conn holds, or under a lease no purge
// takes away, so both come from one state of the store.
func (sa *scannedArtifact) readChunks(ctx context.Context, q q, domain string) error {
	if !sa.chunks.Valid {
		return nil
	}
	n := sa.chunks.Int64
	// The size sizes the buffer, within what the chunks can hold and a
	// bound: a damaged row must not make the bridge allocate whatever it
	// says.
	data := make([]byte, 0, max(0, min(sa.Size, n*maxChunkBytes, maxChunkedPrealloc)))
	data, err := q.d.appendChunks(ctx, q, data, domain, sa.reportID, sa.version, sa.Index)
	if err != nil {
		return err
	}
	sa.Data = data
	return checkChunked(&sa.Artifact)
}

// readArtifact runs fn, which reads an artifact's row and then its chunks
// (readChunks), in one read transaction where the store keeps chunks
// (PostgreSQL). SQLite keeps the bytes in files (or, before 0012, in the
// row): there the row's one statement needs no transaction, which would
// cost a read of a 2 MiB artifact a fifth more time.
func (s *Store) readArtifact(ctx context.Context, fn func(q q) error) error {
	if s.d.artifactFiles() != nil {
		return fn(s.reader())
	}
	return s.readOnConn(ctx, fn)
}

const (
	// maxChunkedPrealloc bounds the buffer readChunks sizes by the
	// artifact's row: well over what QUBS accepts (qubs.MaxUploadBytes).
	maxChunkedPrealloc = 64 << 20
	// maxChunkBytes is the most one report_artifact_chunks row holds
	// (chunkSize is less by the row's key).
	maxChunkBytes = 8000
)

// checkChunked refuses the bytes of an artifact stored in chunks (0015)
// unless they are as long as its row says: a chunk missing is an error,
// never an artifact served or delivered short (as a file missing or cut
// is, artifactFileError).
func checkChunked(a *store.Artifact) error {
	if int64(len(a.Data)) == a.Size {
		return nil
	}
	return &artifactFileError{index: a.Index, permanent: true,
		err: fmt.Errorf("artifact %d: its chunks hold %d bytes, its row says %d", a.Index, len(a.Data), a.Size)}
}

// loadArtifactFile reads an artifact's bytes from the file its row names,
// if it names one.
func loadArtifactFile(files *artifactFiles, file sql.NullString, a *store.Artifact) (err error) {
	if !file.Valid {
		return nil
	}
	if files == nil {
		return fmt.Errorf("artifact %d names a file, and this store keeps none", a.Index)
	}
	a.Data, err = files.read(file.String, a.Size)
	var fe *artifactFileError
	if errors.As(err, &fe) {
		fe.index = a.Index
	}
	return err
}

// ReportArtifact returns one artifact with its bytes. See store.Reports.
func (s *Store) ReportArtifact(ctx context.Context, domain, id string, version, index int) (_ *store.Artifact, err error) {
	defer s.wrap(&err, "ReportArtifact(%q, %q, %d, %d)", domain, id, version, index)
	var found *store.Artifact
	err = s.readArtifact(ctx, func(q q) error {
		rows, err := q.query(ctx, `SELECT `+artifactCols+`, `+artifactData+`
		FROM report_artifacts a WHERE a.domain = ? AND a.report_id = ? AND a.version = ? AND a.idx = ?`, domain, id, version, index)
		if err != nil {
			return err
		}
		arts, err := loadArtifacts(ctx, q, domain, rows, nil)
		if len(arts) > 0 {
			found = &arts[0].Artifact
		}
		return err
	})
	if err != nil {
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
	defer s.wrap(&err, "SearchReports(%q)", domain)
	err = s.read(ctx, func(q q) error {
		reports, next, err = s.search(ctx, q, domain, f)
		return err
	})
	return reports, next, err
}

// CountReports counts the reports matching f. See store.Reports.
func (s *Store) CountReports(ctx context.Context, domain string, f store.ReportFilter) (n int, err error) {
	defer s.wrap(&err, "CountReports(%q)", domain)
	where, args := reportWhere(domain, f)
	err = s.read(ctx, func(q q) error {
		return q.queryRow(ctx, `SELECT count(*) FROM reports r
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

func (s *Store) search(ctx context.Context, q q, domain string, f store.ReportFilter) (_ []*store.Report, next string, err error) {
	where, args := reportWhere(domain, f)
	key, dir, cmp := sqlutil.ReportOrder(f.Order)
	if f.After != "" {
		t, id, err := sqlutil.DecodeCursor(f.After)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "("+key+", r.id) "+cmp+" (?, ?)")
		args = append(args, s.tm(t), id)
	}
	limit := sqlutil.Limit(f.Limit)
	// One more than the page tells whether there is a next page.
	args = append(args, limit+1)
	rows, err := q.query(ctx, `SELECT `+versionCols+`, `+key+`
		FROM reports r JOIN report_versions v ON v.domain = r.domain AND v.report_id = r.id AND v.version = r.latest_version`+queueJoin+`
		WHERE `+strings.Join(where, " AND ")+`
		ORDER BY `+key+` `+dir+`, r.id `+dir+` LIMIT ?`, args...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var (
		reports []*store.Report
		keys    []time.Time
	)
	for rows.Next() {
		var k time.Time
		r, err := scanVersion(rows, at{&k})
		if err != nil {
			return nil, "", err
		}
		reports = append(reports, r)
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	rows.Close()
	if len(reports) > limit {
		reports = reports[:limit]
		next = sqlutil.EncodeCursor(keys[limit-1], reports[limit-1].ID)
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
	arows, err := q.query(ctx, `SELECT `+artifactCols+`, `+noArtifactData+`
		FROM report_artifacts a JOIN reports r ON r.domain = a.domain AND r.id = a.report_id AND r.latest_version = a.version
		WHERE a.domain = ? AND a.report_id IN (`+placeholders(len(reports))+`)
		ORDER BY a.report_id, a.idx`, args...)
	if err != nil {
		return nil, "", err
	}
	arts, err := scanArtifacts(arows)
	if err != nil {
		return nil, "", err
	}
	for _, a := range arts {
		// Only the artifacts of the version on the page (the join already
		// ensures it inside the read transaction; this keeps it obvious).
		if r := byID[a.reportID]; r != nil && r.Version == a.version {
			r.Artifacts = append(r.Artifacts, a.Artifact)
		}
	}
	return reports, next, nil
}

// ArtifactBinary returns the artifact served as a Binary. See store.Reports.
func (s *Store) ArtifactBinary(ctx context.Context, domain, binaryID string) (_ *store.ReportBinary, err error) {
	defer s.wrap(&err, "ArtifactBinary(%q, %q)", domain, binaryID)
	if binaryID == "" { // artifacts without a Binary
		return nil, store.E(store.KindNotFound, "no such binary")
	}
	b, file, err := s.artifactBinary(ctx, domain, binaryID)
	if err != nil {
		return nil, err
	}
	err = loadArtifactFile(s.d.artifactFiles(), file, &b.Artifact)
	if errors.Is(err, fs.ErrNotExist) {
		// A purge may have removed the file since the row was read: the
		// row read again says so (purged, no bytes); if it still names
		// the file, the file is lost, which is an error.
		again, file2, err2 := s.artifactBinary(ctx, domain, binaryID)
		if err2 == nil && file2 != file {
			return again, loadArtifactFile(s.d.artifactFiles(), file2, &again.Artifact)
		}
	}
	return b, err
}

// artifactBinary reads ArtifactBinary's row and its bytes in chunks, if
// any, in one read transaction; bytes in a file are left in the file it
// names.
func (s *Store) artifactBinary(ctx context.Context, domain, binaryID string) (*store.ReportBinary, sql.NullString, error) {
	b := &store.ReportBinary{Domain: domain}
	sa := scannedArtifact{}
	a := &sa.Artifact
	err := s.readArtifact(ctx, func(q q) error {
		err := q.queryRow(ctx, `SELECT a.report_id, a.version, a.idx, a.file_name, a.content_type, a.size, a.sha256, a.binary_id, a.qubs_guid, a.uploaded_at, `+artifactData+`,
			v.patient_ref, v.created_at, v.purged
		FROM report_artifacts a JOIN report_versions v ON v.domain = a.domain AND v.report_id = a.report_id AND v.version = a.version
		WHERE a.domain = ? AND a.binary_id = ? ORDER BY a.version DESC LIMIT 1`, domain, binaryID).
			Scan(&b.ReportID, &b.Version, &a.Index, &a.FileName, &a.ContentType, &a.Size, &a.SHA256, &a.BinaryID,
				&a.QUBSGUID, atPtr{&a.UploadedAt}, &a.Data, &sa.file, &sa.chunks, &b.PatientRef, at{&b.CreatedAt}, &b.Purged)
		if err != nil {
			return notFound(err, "binary")
		}
		sa.reportID, sa.version = b.ReportID, b.Version
		return sa.readChunks(ctx, q, domain)
	})
	if err != nil {
		return nil, sa.file, err
	}
	b.Artifact = sa.Artifact
	return b, sa.file, nil
}
