package sqlstore

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/internal/sqlutil"
)

// TakeWorklistLease takes the domain's sync lease with one conditional
// UPDATE: on PostgreSQL a second replica's UPDATE waits for the first's
// row lock and then finds the lease taken, so two never both win.
func (s *Store) TakeWorklistLease(ctx context.Context, domain, owner string, lease time.Duration, now time.Time) (ok bool, err error) {
	defer s.wrap(&err, "TakeWorklistLease(%q)", domain)
	if domain == "" || owner == "" || lease <= 0 {
		return false, store.E(store.KindInvalid, "a worklist lease needs a domain, an owner and a positive duration")
	}
	now = sqlutil.Time(now)
	err = s.write(ctx, func(t *tx) error {
		if _, err := t.exec(ctx, `INSERT INTO worklist_sync (domain) VALUES (?) ON CONFLICT (domain) DO NOTHING`, domain); err != nil {
			return err
		}
		res, err := t.exec(ctx, `UPDATE worklist_sync SET owner = ?, lease_until = ?
			WHERE domain = ? AND (owner = ? OR owner = '' OR lease_until IS NULL OR lease_until <= ?)`,
			owner, s.tm(now.Add(lease)), domain, owner, s.tm(now))
		if err != nil {
			return err
		}
		ok, err = oneRow(res)
		return err
	})
	return ok, err
}

// ReleaseWorklistLease ends owner's lease at once, so another replica
// need not wait for it to run out.
func (s *Store) ReleaseWorklistLease(ctx context.Context, domain, owner string) (err error) {
	defer s.wrap(&err, "ReleaseWorklistLease(%q)", domain)
	return s.write(ctx, func(t *tx) error {
		_, err := t.exec(ctx, `UPDATE worklist_sync SET owner = '', lease_until = NULL WHERE domain = ? AND owner = ?`, domain, owner)
		return err
	})
}

// fenceWorklist renews owner's unexpired lease inside t, or fails with
// ErrConflict: a syncer that lost its lease (it overran it, and another
// replica took over) must not write what it walked.
func (s *Store) fenceWorklist(ctx context.Context, t *tx, domain, owner string, lease time.Duration, now time.Time) error {
	res, err := t.exec(ctx, `UPDATE worklist_sync SET lease_until = ? WHERE domain = ? AND owner = ? AND lease_until > ?`,
		s.tm(now.Add(lease)), domain, owner, s.tm(now))
	return changedOne(res, err, store.KindConflict, "the worklist lease is not held")
}

// worklistState is what ApplyWorklist compares a row with.
type worklistState struct {
	digest string
	left   *time.Time
	format int
}

// ApplyWorklist records a batch of rows and the events of what changed.
func (s *Store) ApplyWorklist(ctx context.Context, domain, owner string, lease time.Duration, rows []store.WorklistRow, now time.Time) (changes []store.WorklistChange, err error) {
	defer s.wrap(&err, "ApplyWorklist(%q, %d)", domain, len(rows))
	for i := range rows {
		r := &rows[i]
		if r.Domain == "" {
			r.Domain = domain
		}
		if r.Domain != domain || r.AppointmentID == "" || r.ID == "" || r.Digest == "" || len(r.Appointment) == 0 || len(r.Resource) == 0 {
			return nil, store.E(store.KindInvalid, "a worklist row needs its domain, ids, digest, appointment and resource")
		}
	}
	// One row per appointment: a batch naming one twice (a QUBS page
	// repeating an item) keeps the last, as one upsert statement must.
	last := make(map[string]int, len(rows))
	for i := range rows {
		last[rows[i].AppointmentID] = i
	}
	if len(last) < len(rows) {
		kept := make([]store.WorklistRow, 0, len(last))
		for i := range rows {
			if last[rows[i].AppointmentID] == i {
				kept = append(kept, rows[i])
			}
		}
		rows = kept
	}
	if owner != "" && lease <= 0 {
		return nil, store.E(store.KindInvalid, "lease must be positive")
	}
	now = sqlutil.Time(now)
	err = s.write(ctx, func(t *tx) error {
		changes = changes[:0]
		if owner != "" {
			if err := s.fenceWorklist(ctx, t, domain, owner, lease, now); err != nil {
				return err
			}
		}
		prev, err := s.worklistStates(ctx, t, domain, rows)
		if err != nil {
			return err
		}
		var seen []any
		var put, backfill []*store.WorklistRow
		var evs []*store.Event
		for i := range rows {
			r := &rows[i]
			p, ok := prev[r.AppointmentID]
			kind := ""
			switch {
			case !ok:
				kind = store.EventArrived
			case p.left != nil && !p.left.Before(now):
				// It left (a read found it gone) after these rows were
				// read from QUBS: the batch is older news.
				continue
			case p.left != nil:
				kind = store.EventArrived
			case p.digest != r.Digest:
				kind = store.EventChanged
			}
			changes = append(changes, store.WorklistChange{AppointmentID: r.AppointmentID, Kind: kind})
			if kind == "" && p.format < store.WorklistRowFormat {
				backfill = append(backfill, r)
				continue
			}
			if kind == "" {
				seen = append(seen, r.AppointmentID)
				continue
			}
			put = append(put, r)
			evs = append(evs, &store.Event{Domain: domain, Topic: store.EventTopicWorklist, Kind: kind,
				FocusType: "ServiceRequest", FocusID: r.ID, AppointmentID: r.AppointmentID, At: now, Resource: r.Resource})
		}
		if err := s.putWorklistRows(ctx, t, domain, put, now); err != nil {
			return err
		}
		for _, r := range backfill {
			if _, err := t.exec(ctx, `UPDATE worklist_index SET started_start = ?, started_end = ?, site = ?,
					occurrence_local_start = ?, occurrence_local_end = ?, started_local_start = ?, started_local_end = ?, row_format = ?, seen_at = ?
				WHERE domain = ? AND appointment_id = ?`, s.tmPtr(sqlutil.TimePtr(r.StartedStart)), s.tmPtr(sqlutil.TimePtr(r.StartedEnd)),
				r.Site, nullString(r.OccurrenceLocalStart), nullString(r.OccurrenceLocalEnd), nullString(r.StartedLocalStart),
				nullString(r.StartedLocalEnd), store.WorklistRowFormat, s.tm(now), domain, r.AppointmentID); err != nil {
				return err
			}
		}
		for len(seen) > 0 {
			n := min(len(seen), worklistChunk)
			args := append([]any{s.tm(now), domain}, seen[:n]...)
			if _, err := t.exec(ctx, `UPDATE worklist_index SET seen_at = ? WHERE domain = ? AND appointment_id IN (`+placeholders(n)+`)`, args...); err != nil {
				return err
			}
			seen = seen[n:]
		}
		return s.appendEvents(ctx, t, evs)
	})
	if err == nil {
		arrived := 0
		for _, c := range changes {
			if c.Kind == store.EventArrived {
				arrived++
			}
		}
		s.wstats.moved(arrived, 0)
	}
	return changes, err
}

// worklistChunk bounds the ids of one IN list, well below both engines'
// limits on bound parameters.
const worklistChunk = 500

func (s *Store) worklistStates(ctx context.Context, t *tx, domain string, rows []store.WorklistRow) (map[string]worklistState, error) {
	out := make(map[string]worklistState, len(rows))
	for lo := 0; lo < len(rows); lo += worklistChunk {
		hi := min(lo+worklistChunk, len(rows))
		args := []any{domain}
		for _, r := range rows[lo:hi] {
			args = append(args, r.AppointmentID)
		}
		q, err := t.query(ctx, `SELECT appointment_id, digest, left_at, row_format FROM worklist_index
			WHERE domain = ? AND appointment_id IN (`+placeholders(hi-lo)+`)`+s.d.forUpdate(), args...)
		if err != nil {
			return nil, err
		}
		for q.Next() {
			var id string
			var st worklistState
			if err := q.Scan(&id, &st.digest, atPtr{&st.left}, &st.format); err != nil {
				q.Close()
				return nil, err
			}
			out[id] = st
		}
		if err := q.Close(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// putWorklistRows writes the content of rows as of now (arrived or
// changed) and their tokens, a chunk of rows per statement: a walk's
// first batch is 500 new rows, and a statement each would be most of its
// cost.
func (s *Store) putWorklistRows(ctx context.Context, t *tx, domain string, rows []*store.WorklistRow, now time.Time) error {
	n := s.tm(now)
	const perInsert = 100 // 24 parameters a row: far below both engines' limits
	for lo := 0; lo < len(rows); lo += perInsert {
		chunk := rows[lo:min(lo+perInsert, len(rows))]
		var vals, cvals []string
		var args, cargs, ids []any
		for _, r := range chunk {
			vals = append(vals, "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?)")
			args = append(args, domain, r.AppointmentID, r.ID, r.Patient, r.Performer, r.Requester, r.Status, r.Priority,
				r.PriorityRank, s.tmPtr(sqlutil.TimePtr(r.OccurrenceStart)), s.tmPtr(sqlutil.TimePtr(r.OccurrenceEnd)), s.tmPtr(sqlutil.TimePtr(r.NeededBy)),
				r.Site, r.Digest, n, n, n, s.tmPtr(sqlutil.TimePtr(r.StartedStart)), s.tmPtr(sqlutil.TimePtr(r.StartedEnd)), store.WorklistRowFormat,
				nullString(r.OccurrenceLocalStart), nullString(r.OccurrenceLocalEnd), nullString(r.StartedLocalStart), nullString(r.StartedLocalEnd))
			cvals = append(cvals, "(?, ?, ?, ?)")
			cargs = append(cargs, domain, r.AppointmentID, r.Appointment, r.Resource)
			ids = append(ids, r.AppointmentID)
		}
		if _, err := t.exec(ctx, `INSERT INTO worklist_index (domain, appointment_id, id, patient, performer, requester, status, priority,
				priority_rank, occurrence_start, occurrence_end, needed_by, site, digest, last_updated, first_seen, seen_at, left_at,
				started_start, started_end, row_format,
				occurrence_local_start, occurrence_local_end, started_local_start, started_local_end)
			VALUES `+strings.Join(vals, ", ")+`
			ON CONFLICT (domain, appointment_id) DO UPDATE SET id = excluded.id, patient = excluded.patient,
				performer = excluded.performer, requester = excluded.requester, status = excluded.status,
				priority = excluded.priority, priority_rank = excluded.priority_rank,
				occurrence_start = excluded.occurrence_start, occurrence_end = excluded.occurrence_end,
				needed_by = excluded.needed_by, site = excluded.site, digest = excluded.digest,
				last_updated = excluded.last_updated, seen_at = excluded.seen_at, left_at = NULL,
				started_start = excluded.started_start, started_end = excluded.started_end, row_format = excluded.row_format,
				occurrence_local_start = excluded.occurrence_local_start, occurrence_local_end = excluded.occurrence_local_end,
				started_local_start = excluded.started_local_start, started_local_end = excluded.started_local_end`, args...); err != nil {
			return err
		}
		if _, err := t.exec(ctx, `INSERT INTO worklist_content (domain, appointment_id, appointment, resource)
			VALUES `+strings.Join(cvals, ", ")+`
			ON CONFLICT (domain, appointment_id) DO UPDATE SET appointment = excluded.appointment, resource = excluded.resource`, cargs...); err != nil {
			return err
		}
		if _, err := t.exec(ctx, `DELETE FROM worklist_tokens WHERE domain = ? AND appointment_id IN (`+placeholders(len(ids))+`)`,
			append([]any{domain}, ids...)...); err != nil {
			return err
		}
		vals, args = vals[:0], args[:0]
		seen := map[store.WorklistToken]bool{}
		for _, r := range chunk {
			clear(seen)
			for _, k := range r.Tokens {
				if seen[k] {
					continue // the key is (row, param, system, code)
				}
				seen[k] = true
				vals = append(vals, "(?, ?, ?, ?, ?)")
				args = append(args, domain, r.AppointmentID, k.Param, k.System, k.Code)
			}
		}
		for len(vals) > 0 {
			m := min(len(vals), 1000) // 5 parameters each
			if _, err := t.exec(ctx, `INSERT INTO worklist_tokens (domain, appointment_id, param, system, code) VALUES `+
				strings.Join(vals[:m], ", "), args[:5*m]...); err != nil {
				return err
			}
			vals, args = vals[m:], args[5*m:]
		}
	}
	return nil
}

// FinishWorklistSync marks what a complete walk did not see as left.
func (s *Store) FinishWorklistSync(ctx context.Context, domain, owner string, started, now time.Time) (left []string, err error) {
	defer s.wrap(&err, "FinishWorklistSync(%q)", domain)
	started, now = sqlutil.Time(started), sqlutil.Time(now)
	err = s.write(ctx, func(t *tx) error {
		left = left[:0]
		// The lease is only checked here, not renewed: the walk is over.
		var held int
		if err := t.queryRow(ctx, `SELECT COUNT(*) FROM worklist_sync WHERE domain = ? AND owner = ? AND lease_until > ?`,
			domain, owner, s.tm(now)).Scan(&held); err != nil {
			return err
		}
		if held != 1 {
			return store.E(store.KindConflict, "the worklist lease is not held")
		}
		evs, err := s.leaveWorklist(ctx, t, `domain = ? AND left_at IS NULL AND seen_at < ?`, now, domain, s.tm(started))
		if err != nil {
			return err
		}
		for _, e := range evs {
			left = append(left, e.AppointmentID)
		}
		_, err = t.exec(ctx, `UPDATE worklist_sync SET started = ?, finished = ? WHERE domain = ?`, s.tm(started), s.tm(now), domain)
		return err
	})
	if err == nil {
		s.resources.drop(domain, left)
		s.wstats.moved(0, len(left))
		s.refreshWorklistStats(ctx)
	}
	return left, err
}

// LeaveWorklist marks one appointment left at once.
func (s *Store) LeaveWorklist(ctx context.Context, domain, appointmentID string, now time.Time) (ok bool, err error) {
	defer s.wrap(&err, "LeaveWorklist(%q)", domain)
	now = sqlutil.Time(now)
	err = s.write(ctx, func(t *tx) error {
		evs, err := s.leaveWorklist(ctx, t, `domain = ? AND appointment_id = ? AND left_at IS NULL`, now, domain, appointmentID)
		ok = len(evs) == 1
		return err
	})
	if ok {
		s.resources.drop(domain, []string{appointmentID})
	}
	return ok, err
}

// leaveWorklist marks the rows on the worklist that where selects as left
// at now and appends a left event for each, with the ServiceRequest as it
// last was.
func (s *Store) leaveWorklist(ctx context.Context, t *tx, where string, now time.Time, args ...any) ([]*store.Event, error) {
	q, err := t.query(ctx, `UPDATE worklist_index SET left_at = ? WHERE `+where+` RETURNING domain, appointment_id, id`,
		append([]any{s.tm(now)}, args...)...)
	if err != nil {
		return nil, err
	}
	var evs []*store.Event
	for q.Next() {
		e := &store.Event{Topic: store.EventTopicWorklist, Kind: store.EventLeft, FocusType: "ServiceRequest", At: now}
		if err := q.Scan(&e.Domain, &e.AppointmentID, &e.FocusID); err != nil {
			q.Close()
			return nil, err
		}
		evs = append(evs, e)
	}
	if err := q.Close(); err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, nil
	}
	byID := make(map[string]*store.Event, len(evs))
	for _, e := range evs {
		byID[e.AppointmentID] = e
	}
	if err := s.worklistContent(ctx, t.q, evs[0].Domain, keys(byID), func(id string, _, resource []byte) {
		byID[id].Resource = resource
	}); err != nil {
		return nil, err
	}
	return evs, s.appendEvents(ctx, t, evs)
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// worklistContent reads the appointment and ServiceRequest of the
// appointments ids of domain, worklistChunk at a time.
func (s *Store) worklistContent(ctx context.Context, r q, domain string, ids []string, fn func(id string, appointment, resource []byte)) error {
	for lo := 0; lo < len(ids); lo += worklistChunk {
		chunk := ids[lo:min(lo+worklistChunk, len(ids))]
		args := []any{domain}
		for _, id := range chunk {
			args = append(args, id)
		}
		rows, err := r.query(ctx, `SELECT appointment_id, appointment, resource FROM worklist_content
			WHERE domain = ? AND appointment_id IN (`+placeholders(len(chunk))+`)`, args...)
		if err != nil {
			return err
		}
		err = eachRow(rows, func() error {
			var id string
			var appt, res []byte
			if err := rows.Scan(&id, &appt, &res); err != nil {
				return err
			}
			fn(id, appt, res)
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// eachRow calls scan for each row of rows, then closes them; it stops at
// the first error, and reports an error of the iteration itself
// (rows.Err), which a loop ending on Next alone would drop.
func eachRow(rows *sql.Rows, scan func() error) error {
	for rows.Next() {
		if err := scan(); err != nil {
			rows.Close()
			return err
		}
	}
	if err := rows.Err(); err != nil {
		rows.Close()
		return err
	}
	return rows.Close()
}

// WorklistSyncState reads the domain's sync row.
func (s *Store) WorklistSyncState(ctx context.Context, domain string) (_ *store.WorklistSync, err error) {
	defer s.wrap(&err, "WorklistSyncState(%q)", domain)
	st := &store.WorklistSync{Domain: domain}
	err = s.reader().queryRow(ctx, `SELECT owner, lease_until, started, finished FROM worklist_sync WHERE domain = ?`, domain).
		Scan(&st.Owner, atPtr{&st.LeaseUntil}, atPtr{&st.Started}, atPtr{&st.Finished})
	if errors.Is(err, sql.ErrNoRows) {
		return st, nil
	}
	return st, err
}

// worklistColumns are the columns conditions may compare, by field.
var worklistColumns = map[string]string{
	store.WorklistFieldID: "id", store.WorklistFieldPatient: "patient", store.WorklistFieldPerformer: "performer",
	store.WorklistFieldRequester: "requester", store.WorklistFieldStatus: "status", store.WorklistFieldPriority: "priority",
	store.WorklistFieldPriorityRank: "priority_rank", store.WorklistFieldOccurrenceStart: "occurrence_start",
	store.WorklistFieldOccurrenceEnd: "occurrence_end", store.WorklistFieldNeededBy: "needed_by",
	store.WorklistFieldLastUpdated: "last_updated", store.WorklistFieldSite: "site",
	store.WorklistFieldStartedStart: "started_start", store.WorklistFieldStartedEnd: "started_end",
	store.WorklistFieldOccurrenceLocalStart: "occurrence_local_start", store.WorklistFieldOccurrenceLocalEnd: "occurrence_local_end",
	store.WorklistFieldStartedLocalStart: "started_local_start", store.WorklistFieldStartedLocalEnd: "started_local_end",
	store.WorklistFieldRowFormat: "row_format",
}

// deliveredVersions are the report versions QUBS accepted for a row's
// appointment; report_versions_queue (domain, appointment_id, queue_seq)
// finds them, a handful per study.
const deliveredVersions = `FROM report_versions v WHERE v.domain = w.domain AND v.appointment_id = w.appointment_id
	AND v.state = 'delivered' AND v.delivered_at IS NOT NULL`

// worklistDerived are the fields conditions compare that are not columns
// of the row but derived in the query from the reports the store holds,
// so that a Task search filters on its status without loading every
// study's reports into the server. Versions of an appointment are
// delivered in queue order, so the latest delivery is the one QUBS keeps
// (mapping.TaskStateOf).
var worklistDerived = map[string]string{
	store.WorklistFieldTaskStatus: `COALESCE((SELECT CASE WHEN v.status IN ('preliminary', 'partial') THEN 'in-progress' ELSE 'completed' END ` +
		deliveredVersions + ` ORDER BY v.delivered_at DESC, v.queue_seq DESC LIMIT 1), 'requested')`,
	store.WorklistFieldTaskLastUpdated: `CASE WHEN (SELECT MAX(v.delivered_at) ` + deliveredVersions + `) > w.last_updated
		THEN (SELECT MAX(v.delivered_at) ` + deliveredVersions + `) ELSE w.last_updated END`,
}

// worklistExpr is the SQL a condition on field compares.
func worklistExpr(field string) (string, bool) {
	if e, ok := worklistDerived[field]; ok {
		return "(" + e + ")", true
	}
	col, ok := worklistColumns[field]
	return "w." + col, ok
}

// worklistSortable are the sort keys and whether each is a time (a
// missing one sorts as noTime, after every real one).
var worklistSortable = map[string]bool{
	store.WorklistFieldPriorityRank: false, store.WorklistFieldOccurrenceStart: true,
	store.WorklistFieldNeededBy: true, store.WorklistFieldLastUpdated: true, store.WorklistFieldID: false,
}

// noTime stands for a missing time in sort keys and cursors.
var noTime = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)

// worklistNullable are the columns that hold NULL for none, so that no
// comparison holds for a row without the value: the times, and the
// wall-clock ranges (text). The other text columns hold ”.
var worklistNullable = map[string]bool{store.WorklistFieldOccurrenceStart: true, store.WorklistFieldOccurrenceEnd: true,
	store.WorklistFieldNeededBy: true, store.WorklistFieldLastUpdated: true,
	store.WorklistFieldStartedStart: true, store.WorklistFieldStartedEnd: true, store.WorklistFieldTaskLastUpdated: true,
	store.WorklistFieldOccurrenceLocalStart: true, store.WorklistFieldOccurrenceLocalEnd: true,
	store.WorklistFieldStartedLocalStart: true, store.WorklistFieldStartedLocalEnd: true}

var worklistOps = map[string]bool{"=": true, "<>": true, "<": true, "<=": true, ">": true, ">=": true}

// worklistWhere renders q's conditions (after w.domain = ? AND not left).
func (s *Store) worklistWhere(q *store.WorklistQuery) (string, []any, error) {
	var b strings.Builder
	args := []any{q.Domain}
	b.WriteString(`w.domain = ? AND w.left_at IS NULL`)
	for _, clause := range q.Where {
		if len(clause) == 0 {
			return "", nil, store.E(store.KindInvalid, "an empty clause")
		}
		b.WriteString(" AND (")
		for i, alt := range clause {
			if i > 0 {
				b.WriteString(" OR ")
			}
			if len(alt) == 0 {
				return "", nil, store.E(store.KindInvalid, "an empty alternative")
			}
			b.WriteString("(")
			for j, c := range alt {
				if j > 0 {
					b.WriteString(" AND ")
				}
				var err error
				if args, err = s.worklistCond(&b, args, c); err != nil {
					return "", nil, err
				}
			}
			b.WriteString(")")
		}
		b.WriteString(")")
	}
	return b.String(), args, nil
}

func (s *Store) worklistCond(b *strings.Builder, args []any, c store.WorklistCond) ([]any, error) {
	if c.Token != nil {
		switch c.Field {
		case "identifier", "code", "modality":
		default:
			return nil, store.E(store.KindInvalid, "no token parameter %q", c.Field)
		}
		b.WriteString(`EXISTS (SELECT 1 FROM worklist_tokens k WHERE k.domain = w.domain AND k.appointment_id = w.appointment_id AND k.param = ?`)
		args = append(args, c.Field)
		if c.Token.HasSystem {
			b.WriteString(` AND k.system = ?`)
			args = append(args, c.Token.System)
		}
		if c.Token.Code != "" {
			b.WriteString(` AND k.code = ?`)
			args = append(args, c.Token.Code)
		}
		b.WriteString(")")
		return args, nil
	}
	expr, ok := worklistExpr(c.Field)
	if !ok {
		return nil, store.E(store.KindInvalid, "no worklist field %q", c.Field)
	}
	switch {
	case c.Op == "null" || c.Op == "notnull":
		// Text columns hold '' for none, times NULL.
		if worklistNullable[c.Field] {
			fmt.Fprintf(b, "%s IS %s", expr, map[string]string{"null": "NULL", "notnull": "NOT NULL"}[c.Op])
		} else {
			fmt.Fprintf(b, "%s %s ''", expr, map[string]string{"null": "=", "notnull": "<>"}[c.Op])
		}
		return args, nil
	case !worklistOps[c.Op]:
		return nil, store.E(store.KindInvalid, "no operator %q", c.Op)
	}
	switch v := c.Value.(type) {
	case time.Time:
		args = append(args, s.tm(sqlutil.Time(v)))
	case string, int:
		args = append(args, v)
	default:
		return nil, store.E(store.KindInvalid, "a %T value", c.Value)
	}
	fmt.Fprintf(b, "%s %s ?", expr, c.Op)
	return args, nil
}

// sortExpr is the expression a sort key orders by.
func (s *Store) sortExpr(field string) string {
	col := worklistColumns[field]
	if worklistSortable[field] && field != store.WorklistFieldLastUpdated {
		return "COALESCE(w." + col + ", ?)"
	}
	return "w." + col
}

// worklistKeys are q's sort keys, id last as the tie-breaker.
func worklistKeys(q *store.WorklistQuery) ([]store.WorklistSortKey, error) {
	var keys []store.WorklistSortKey
	for _, k := range q.Sort {
		if _, ok := worklistSortable[k.Field]; !ok {
			return nil, store.E(store.KindInvalid, "cannot sort on %q", k.Field)
		}
		keys = append(keys, k)
		if k.Field == store.WorklistFieldID {
			return keys, nil
		}
	}
	// The tie-breaker runs the way the last key does, so that an index on
	// (domain, key, id) gives the whole order and a page stops early.
	desc := len(keys) > 0 && keys[len(keys)-1].Desc
	return append(keys, store.WorklistSortKey{Field: store.WorklistFieldID, Desc: desc}), nil
}

// keyArgs returns the arguments of sortExpr for key (the missing-time
// stand-in), if any.
func (s *Store) keyArgs(field string) []any {
	if worklistSortable[field] && field != store.WorklistFieldLastUpdated {
		return []any{s.tm(noTime)}
	}
	return nil
}

// SearchWorklist runs a keyset-paged search: the cursor holds the sort
// values of the last row served, so rows that arrive, change or leave
// between pages neither repeat nor hide the rows after it.
func (s *Store) SearchWorklist(ctx context.Context, wq store.WorklistQuery) (page *store.WorklistPage, err error) {
	defer s.wrap(&err, "SearchWorklist(%q)", wq.Domain)
	query := &wq
	if query.Count <= 0 || query.Count > store.MaxSearchLimit {
		return nil, store.E(store.KindInvalid, "count must be 1..%d", store.MaxSearchLimit)
	}
	keys, err := worklistKeys(query)
	if err != nil {
		return nil, err
	}
	where, args, err := s.worklistWhere(query)
	if err != nil {
		return nil, err
	}
	page = &store.WorklistPage{Total: -1}
	err = s.read(ctx, func(r q) error {
		if query.Total {
			if err := r.queryRow(ctx, `SELECT COUNT(*) FROM worklist_index w WHERE `+where, args...).Scan(&page.Total); err != nil {
				return err
			}
		}
		sel, selArgs := where, append([]any(nil), args...)
		if query.After != "" {
			cond, cargs, err := s.afterCursor(keys, query.After)
			if err != nil {
				return err
			}
			sel += " AND (" + cond + ")"
			selArgs = append(selArgs, cargs...)
		}
		var order []string
		var outerKeyArgs []any // the join's outer ORDER BY has its own
		for _, k := range keys {
			dir := " ASC"
			if k.Desc {
				dir = " DESC"
			}
			order = append(order, s.sortExpr(k.Field)+dir)
			selArgs = append(selArgs, s.keyArgs(k.Field)...)
			outerKeyArgs = append(outerKeyArgs, s.keyArgs(k.Field)...)
		}
		by := strings.Join(order, ", ")
		if query.ResourceOnly {
			return s.worklistPage(ctx, r, query, page, `SELECT `+worklistLean+` FROM worklist_index w WHERE `+sel+
				` ORDER BY `+by+` LIMIT ?`, append(selArgs, query.Count+1))
		}
		// With the appointments, one statement reads the page with its
		// content: the page is chosen in a subquery (a LIMIT keeps the
		// engines from flattening it into the join, so the join cannot
		// change how the index rows are filtered and sorted), and only its
		// rows' content is looked up by key.
		rows, err := r.query(ctx, `SELECT `+worklistSelect+`, c.resource, c.appointment
			FROM (SELECT * FROM worklist_index w WHERE `+sel+` ORDER BY `+by+` LIMIT ?) w
			JOIN worklist_content c ON c.domain = w.domain AND c.appointment_id = w.appointment_id
			ORDER BY `+by, append(append(selArgs, query.Count+1), outerKeyArgs...)...)
		if err != nil {
			return err
		}
		page.Rows = make([]store.WorklistRow, 0, query.Count+1)
		var row *store.WorklistRow
		withContent := func(dest ...any) error {
			return rows.Scan(append(dest, &row.Resource, &row.Appointment)...)
		}
		return eachRow(rows, func() error {
			page.Rows = append(page.Rows, store.WorklistRow{})
			row = &page.Rows[len(page.Rows)-1]
			return scanWorklistRow(withContent, row)
		})
	})
	if err != nil {
		return nil, err
	}
	if len(page.Rows) > query.Count {
		page.Rows = page.Rows[:query.Count]
		page.Next = worklistCursor(keys, &page.Rows[query.Count-1])
	}
	return page, nil
}

// worklistPage reads the page's index rows with query, then their
// ServiceRequests from the cache, and those it lacks from
// worklist_content by key (the probe row past the page needs none).
func (s *Store) worklistPage(ctx context.Context, r q, wq *store.WorklistQuery, page *store.WorklistPage, query string, args []any) error {
	rows, err := s.stmts.query(ctx, s.r, r, r.d.rebind(query), args...)
	if err != nil {
		return err
	}
	page.Rows = make([]store.WorklistRow, 0, wq.Count+1)
	err = eachRow(rows, func() error {
		page.Rows = append(page.Rows, store.WorklistRow{Domain: wq.Domain})
		w := &page.Rows[len(page.Rows)-1]
		return rows.Scan(&w.AppointmentID, &w.ID, &w.Patient, &w.PriorityRank, atPtr{&w.OccurrenceStart}, atPtr{&w.NeededBy},
			&w.Digest, at{&w.LastUpdated})
	})
	if err != nil {
		return err
	}
	served := page.Rows[:min(len(page.Rows), wq.Count)]
	var missing []string
	var at map[string]int // made only when the cache lacks something
	for i := range served {
		w := &served[i]
		if res, ok := s.resources.get(wq.Domain, w.AppointmentID, w.Digest, w.LastUpdated); ok {
			w.Resource = res
			continue
		}
		if at == nil {
			at = map[string]int{}
		}
		at[w.AppointmentID] = i
		missing = append(missing, w.AppointmentID)
	}
	if len(missing) == 0 {
		return nil
	}
	return s.worklistContent(ctx, r, wq.Domain, missing, func(id string, _, res []byte) {
		w := &served[at[id]]
		w.Resource = res
		s.resources.put(wq.Domain, id, w.Digest, w.LastUpdated, res)
	})
}

// worklistLean are the columns of a ResourceOnly page (the sort values
// for its cursor among them).
const worklistLean = `w.appointment_id, w.id, w.patient, w.priority_rank, w.occurrence_start, w.needed_by, w.digest, w.last_updated`

const worklistSelect = `w.domain, w.appointment_id, w.id, w.patient, w.performer, w.requester, w.status, w.priority, w.priority_rank,
	w.occurrence_start, w.occurrence_end, w.needed_by, w.site, w.digest, w.last_updated, w.first_seen, w.seen_at, w.left_at`

func scanWorklistRow(scan func(...any) error, r *store.WorklistRow) error {
	return scan(&r.Domain, &r.AppointmentID, &r.ID, &r.Patient, &r.Performer, &r.Requester, &r.Status, &r.Priority, &r.PriorityRank,
		atPtr{&r.OccurrenceStart}, atPtr{&r.OccurrenceEnd}, atPtr{&r.NeededBy}, &r.Site, &r.Digest,
		at{&r.LastUpdated}, at{&r.FirstSeen}, at{&r.SeenAt}, atPtr{&r.LeftAt})
}

// sortValue is a row's value of a sort key: int64 microseconds for
// times, the rank, or the id.
func sortValue(r *store.WorklistRow, field string) any {
	t := func(p *time.Time) any {
		if p == nil {
			return noTime.UnixMicro()
		}
		return p.UnixMicro()
	}
	switch field {
	case store.WorklistFieldPriorityRank:
		return int64(r.PriorityRank)
	case store.WorklistFieldOccurrenceStart:
		return t(r.OccurrenceStart)
	case store.WorklistFieldNeededBy:
		return t(r.NeededBy)
	case store.WorklistFieldLastUpdated:
		return r.LastUpdated.UnixMicro()
	}
	return r.ID
}

func worklistCursor(keys []store.WorklistSortKey, last *store.WorklistRow) string {
	vals := make([]any, len(keys))
	for i, k := range keys {
		vals[i] = sortValue(last, k.Field)
	}
	raw, _ := json.Marshal(vals)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// afterCursor is the keyset condition "after the row the cursor names"
// in the order of keys: (k1 > v1) OR (k1 = v1 AND k2 > v2) OR ..., with <
// for descending keys.
func (s *Store) afterCursor(keys []store.WorklistSortKey, cursor string) (string, []any, error) {
	bad := store.E(store.KindInvalid, "the worklist cursor is not valid for this search")
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return "", nil, bad
	}
	var vals []any
	d := json.NewDecoder(strings.NewReader(string(raw)))
	d.UseNumber()
	if err := d.Decode(&vals); err != nil || len(vals) != len(keys) {
		return "", nil, bad
	}
	arg := func(i int) (any, bool) {
		k := keys[i]
		if k.Field == store.WorklistFieldID {
			v, ok := vals[i].(string)
			return v, ok
		}
		n, ok := vals[i].(json.Number)
		if !ok {
			return nil, false
		}
		v, err := n.Int64()
		if err != nil {
			return nil, false
		}
		if worklistSortable[k.Field] {
			return s.tm(time.UnixMicro(v).UTC()), true
		}
		return v, true
	}
	var ors []string
	var args []any
	for i := range keys {
		var ands []string
		for j := 0; j <= i; j++ {
			v, ok := arg(j)
			if !ok {
				return "", nil, bad
			}
			op := "="
			if j == i {
				op = ">"
				if keys[j].Desc {
					op = "<"
				}
			}
			ands = append(ands, s.sortExpr(keys[j].Field)+" "+op+" ?")
			args = append(args, s.keyArgs(keys[j].Field)...)
			args = append(args, v)
		}
		ors = append(ors, "("+strings.Join(ands, " AND ")+")")
	}
	return strings.Join(ors, " OR "), args, nil
}
