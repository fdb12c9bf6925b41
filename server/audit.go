package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/auth"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/observe"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// auditCommitWait bounds how long an answer waits for its record's commit
// when it waits at all; past it, the answer goes out and the record stays
// queued until the store takes it.
const auditCommitWait = 10 * time.Second

// auditLateEnqueue bounds the wait for room in the audit buffer of a
// request whose own deadline has passed (it timed out, or the client went
// away): those are exactly the events an audit must not miss.
const auditLateEnqueue = 5 * time.Second

// audit records one AuditEvent per FHIR interaction, after the IHE Basic
// Audit Log Patterns: who (client, method, credential id, address), what
// (action, interaction, resources, patients, search parameter names),
// when, the outcome, and the correlation id. The resources and patients
// are those the handler reported with disclose, so the record says what
// was disclosed or changed without the answer being read again.
//
// The record is made when the answer starts to be written
// (auditResponseWriter), and queued for the audit writer before the first
// byte leaves: an answer is never sent unless its record is queued or
// committed. When the buffer
// stays full until the request's deadline (the store has been failing
// that long), the answer is withheld and replaced by a 503.
//
// Writes (create, update) and failed or refused requests wait, before
// their answer is sent, until the record is committed: the batch commit is
// shared with every other request's, writes are disk-bound anyway, and
// failures are rare and the events an incident review needs most.
// Successful reads and searches wait only for room in the buffer (and,
// with Config.AuditJournal, for their record's append to it), unless
// Config.AuditCommitReads; docs/audit.md gives the loss bound of each.
func (s *Server) audit() gin.HandlerFunc {
	if s.auditor == nil {
		return func(c *gin.Context) { c.Next() }
	}
	return func(c *gin.Context) {
		pending := &state(c).auditPending
		s.auditor.begin(pending)
		defer pending.leave()
		w := &auditResponseWriter{ResponseWriter: c.Writer, s: s, c: c}
		c.Writer = w
		c.Next()
		// An answer with no body (a 201 with return=minimal, a 499) has
		// not been through Write yet.
		w.record()
		c.Writer = w.ResponseWriter
	}
}

// auditResponseWriter records the audit event at the first write of the
// answer, when its status is known and before any of it is sent.
type auditResponseWriter struct {
	gin.ResponseWriter
	s        *Server
	c        *gin.Context
	recorded bool
	// withheld is set when the record could not be queued: the handler's
	// answer is replaced by a 503 and its writes are discarded.
	withheld bool
}

// errAnswerWithheld is what the handler's writes get once its answer was
// withheld for want of an audit record.
var errAnswerWithheld = errors.New("answer withheld: its audit record could not be queued")

func (w *auditResponseWriter) record() bool {
	if !w.recorded {
		w.recorded = true
		if err := w.s.recordAudit(w.c, w.ResponseWriter.Status()); err != nil {
			w.withhold(err)
		}
	}
	return !w.withheld
}

func (w *auditResponseWriter) withhold(err error) {
	w.withheld = true
	w.s.cfg.Metrics.Refused(observe.RefusedAudit)
	w.s.log.Error("audit: answer withheld, its record could not be queued", "correlation_id", correlationIDOf(w.c),
		"route", w.c.FullPath(), "status", w.ResponseWriter.Status(), "error", err.Error())
	h := w.ResponseWriter.Header()
	for _, k := range []string{"Location", "ETag", "Last-Modified", "Content-Location", "Content-Disposition", "Content-Length"} {
		h.Del(k)
	}
	h.Set("Content-Type", fhir.ContentTypeFHIRJSON+"; charset=utf-8")
	h.Set("Retry-After", "5")
	w.ResponseWriter.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.ResponseWriter.Write(fhir.OutcomeJSON(fhir.Issue{Severity: "error", Code: "transient",
		Diagnostics: "the audit trail cannot take the request now; retry later (correlation id " + correlationIDOf(w.c) + ")"}))
}

func (w *auditResponseWriter) WriteHeaderNow() {
	if w.record() {
		w.ResponseWriter.WriteHeaderNow()
	}
}

func (w *auditResponseWriter) Write(b []byte) (int, error) {
	if !w.record() {
		return 0, errAnswerWithheld
	}
	return w.ResponseWriter.Write(b)
}

func (w *auditResponseWriter) WriteString(s string) (int, error) {
	if !w.record() {
		return 0, errAnswerWithheld
	}
	return w.ResponseWriter.WriteString(s)
}

func (w *auditResponseWriter) Flush() {
	if w.record() {
		w.ResponseWriter.Flush()
	}
}

// recordAudit queues the request's audit record, and waits for its commit
// when the request is one that waits (see audit). An error means the record
// is not queued and the answer must not be sent.
func (s *Server) recordAudit(c *gin.Context, status int) error {
	if status != 0 && state(c).auditStored == status {
		return nil // committed with the write (storeAudited)
	}
	rec := s.auditRecordOf(c, status)
	if rec == nil {
		return nil
	}
	ctx := c.Request.Context()
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), auditLateEnqueue)
		defer cancel()
	}
	// Read before the writer may clean them (PrepareAudit).
	cid, route := rec.CorrelationID, rec.RequestPath
	seq, journaled, err := s.auditor.enqueue(ctx, rec)
	if err != nil {
		return err
	}
	state(c).auditPending.leave()
	if rec.Outcome == store.AuditOutcomeSuccess && rec.Action != store.AuditActionCreate &&
		rec.Action != store.AuditActionUpdate && rec.Action != store.AuditActionDelete && !s.cfg.AuditCommitReads &&
		(journaled || s.auditor.journal == nil) {
		// A read: queued (and journaled, with a journal) is enough. One
		// the journal failed to take waits for its commit instead.
		return nil
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), auditCommitWait)
	defer cancel()
	if err := s.auditor.wait(wctx, seq); err != nil {
		// The record stays queued and is written when the store answers;
		// the work is done, so the answer goes out.
		s.log.Warn("audit: answering before the record is committed", "correlation_id", cid,
			"route", route, "error", err.Error())
	}
	return nil
}

// storeAudited runs write, a store call that writes r (CreateReport,
// UpdateReport), with the audit record of the answer it leads to, status,
// in r.Audit: the store commits the change and its record together. A
// write waits for its record's commit anyway (see audit); this way it
// waits for one commit, not two, which on PostgreSQL is one flush of the
// WAL fewer. The record is the one the middleware would make for that
// answer, the report disclosed. If the answer ends up different (the
// write failed), the middleware records it as for any request.
func (s *Server) storeAudited(c *gin.Context, r *store.Report, status int, write func(*store.Report) error) error {
	if s.auditor != nil {
		disclose(c, "DiagnosticReport/"+r.ID, r.PatientRef)
		r.Audit = s.auditRecordOf(c, status)
	}
	err := write(r)
	if r.Audit != nil && errors.Is(err, store.ErrInvalid) {
		// Perhaps the record: the audit writer judges it then, as it
		// judges every other, and the report is not refused for it.
		r.Audit = nil
		err = write(r)
	}
	if err == nil && r.Audit != nil {
		state(c).auditStored = status
		s.auditor.metrics.AuditWithWrite()
		state(c).auditPending.leave() // its record is committed already
	}
	return err
}

// auditRecordOf makes the request's audit record; nil for requests that
// are not audited.
func (s *Server) auditRecordOf(c *gin.Context, status int) *store.AuditRecord {
	route := c.FullPath()
	spec := routeOf(c)
	if spec == nil || spec.interaction.auditAction() == "" {
		return nil // no FHIR route (404), or one that discloses nothing
	}
	throttled := status == http.StatusTooManyRequests
	typ, interaction, action := spec.typ, spec.interaction.auditCode(), spec.interaction.auditAction()
	p := principalOf(c)
	rec := &store.AuditRecord{
		Domain: domainOf(c),
		// The request's time, not the batch's.
		Recorded:      time.Now(),
		Action:        action,
		Interaction:   interaction,
		Outcome:       outcomeOf(status),
		AgentID:       clientOf(c),
		AgentMethod:   principalMethod(p),
		TokenID:       principalTokenID(p),
		NetworkAddr:   c.ClientIP(),
		CorrelationID: correlationIDOf(c),
		RequestPath:   route,
	}
	if rec.Outcome != store.AuditOutcomeSuccess {
		rec.OutcomeDesc = "HTTP " + strconv.Itoa(status)
	}
	if interaction == "search-type" {
		params := c.Request.URL.Query()
		for k, vs := range c.Request.PostForm { // POST _search
			params[k] = append(params[k], vs...)
		}
		rec.Query = store.AuditQuery(typ, params)
	}
	d := state(c).disclosed
	entities := make([]string, 0, 1+len(d.entities))
	if id := c.Param("id"); id != "" {
		entities = append(entities, typ+"/"+id)
	}
	var patients []string
	if status < http.StatusBadRequest {
		// A failed request's answer is an OperationOutcome, whatever the
		// handler had reported before it failed.
		entities = append(entities, d.entities...)
		patients = d.patients
	}
	rec.EntityRefs = dedupe(entities)
	rec.PatientRefs = dedupe(patients)
	if throttled {
		// Throttled before anything was touched: the first 429 of a
		// client in a minute is recorded, the rest are counted into one
		// record at the end of the minute (throttleAudit).
		client := rec.AgentID
		if client == "" {
			client = "ip:" + rec.NetworkAddr
		}
		if !s.throttles.admit(rec.Domain+"|"+client, rec) {
			return nil
		}
	}
	return rec
}

func outcomeOf(status int) string {
	switch {
	case status < 400:
		return store.AuditOutcomeSuccess
	case status < 500:
		return store.AuditOutcomeMinorFailure
	}
	return store.AuditOutcomeSeriousFailure
}

func dedupe(refs []string) []string {
	seen := make(map[string]bool, len(refs))
	out := refs[:0]
	for _, r := range refs {
		if !seen[r] && validRef(r) {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

func validRef(r string) bool {
	typ, id, ok := strings.Cut(r, "/")
	return ok && typ != "" && validFHIRID(id)
}

func validFHIRID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

var auditEventSearch = fhir.SearchSpec{
	Resource: "AuditEvent",
	Params: []fhir.ParamSpec{
		{Name: "date", Type: "date", Repeatable: true, Documentation: "When recorded. A date without a time is a whole day in the bridge's zone (BRIDGE_DEFAULT_TIMEZONE); eq (no prefix), ge, gt, le and lt; repeat it for a range (date=ge2026-12-01&date=lt2026-12-08)."},
		{Name: "patient", Type: "reference", Documentation: "Patient/{id}: events about the patient."},
		{Name: "agent", Type: "token", Documentation: "The client id."},
		{Name: "action", Type: "token", Documentation: "C, R, U, D or E."},
		{Name: cursorParam, Type: "special", Documentation: "Opaque paging position; use the next link."},
		paramSort, paramTotal, paramSummary,
	},
}

func (s *Server) searchAuditEvents(c *gin.Context) error {
	domain := domainOf(c)
	values := c.Request.URL.Query()
	q, err := fhir.ParseSearch(values, c.GetHeader("Prefer"), auditEventSearch, defaultCount, maxCount)
	if err != nil {
		return err
	}
	f := store.AuditFilter{Limit: q.Count}
	for _, v := range q.Params["date"] {
		if err := s.dateBound(&f, v); err != nil {
			return err
		}
	}
	patients, err := referenceIDs(q, "Patient", "patient")
	if err != nil {
		return err
	}
	if len(patients) > 1 {
		return fhir.Errorf(http.StatusBadRequest, "not-supported", "patient takes one reference")
	}
	if len(patients) == 1 {
		f.PatientRef = "Patient/" + patients[0]
	}
	f.AgentID = fhir.ParseToken(first(q.Params["agent"])).Code
	f.Action = fhir.ParseToken(first(q.Params["action"])).Code
	res, err := parseResults(q, "date", "_lastUpdated")
	if err != nil {
		return err
	}
	// An AuditEvent is never updated: its _lastUpdated is its date.
	f.OldestFirst = res.sort == "date" || res.sort == "_lastUpdated"
	binding := searchBinding(domain, "AuditEvent", q)
	after, err := s.openCursor(q, binding)
	if err != nil {
		return err
	}
	f.After = string(after)
	if err := s.auditor.flush(c.Request.Context()); err != nil {
		return err
	}
	bundle, base := s.searchBundle(c, "AuditEvent", q)
	if res.total {
		n, err := s.cfg.Store.CountAudit(c.Request.Context(), domain, f)
		if err != nil {
			return fmt.Errorf("counting audit events: %w", err)
		}
		bundle.SetTotal(n)
		if res.countOnly {
			s.write(c, http.StatusOK, bundle)
			return nil
		}
	}
	recs, next, err := s.cfg.Store.SearchAudit(c.Request.Context(), domain, f)
	if err != nil {
		return fmt.Errorf("searching audit events: %w", err)
	}
	if next != "" {
		bundle.SetLink("next", pageURL(base+"/AuditEvent", q.Used(), s.cursors.Seal(binding, []byte(next))))
	}
	for _, r := range recs {
		ev, err := mapping.AuditEventFromRecord(r)
		if err != nil {
			return fmt.Errorf("mapping audit record: %w", err)
		}
		b, err := encode(ev)
		if err != nil {
			return err
		}
		bundle.AddMatch(base+"/AuditEvent/"+r.ID, b)
		// An AuditEvent names patients only as references in its entities;
		// reading it discloses the event, not the patients' data.
		disclose(c, "AuditEvent/"+r.ID, "")
	}
	s.write(c, http.StatusOK, bundle)
	return nil
}

// dateBound applies one date parameter (ANDed with the others).
func (s *Server) dateBound(f *store.AuditFilter, v string) error {
	d, err := fhir.ParseDateParam(v, s.cfg.Zones.Default())
	if err != nil {
		return err
	}
	return d.Narrow(&f.Since, &f.Until)
}

func (s *Server) readAuditEvent(c *gin.Context) error {
	// An auditor sees the events of requests answered before theirs,
	// those still queued included.
	if err := s.auditor.flush(c.Request.Context()); err != nil {
		return err
	}
	r, err := s.cfg.Store.AuditEvent(c.Request.Context(), domainOf(c), c.Param("id"))
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) {
		return fhir.Errorf(http.StatusNotFound, "not-found", "AuditEvent/%s is not known", c.Param("id"))
	}
	if err != nil {
		return err
	}
	ev, err := mapping.AuditEventFromRecord(r)
	if err != nil {
		return fmt.Errorf("mapping audit record: %w", err)
	}
	disclose(c, "AuditEvent/"+r.ID, "")
	s.write(c, http.StatusOK, ev)
	return nil
}

// patientRefOf is the reference to an appointment's Patient, as the
// resources made from the appointment carry it.
func patientRefOf(a *qubs.Appointment) string { return "Patient/" + mapping.PatientID(a) }

func principalMethod(p *auth.Principal) string {
	if p == nil {
		return ""
	}
	return p.Method
}

func principalTokenID(p *auth.Principal) string {
	if p == nil {
		return ""
	}
	return p.TokenID
}
