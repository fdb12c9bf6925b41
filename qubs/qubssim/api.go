package qubssim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

const apiBase = "/integrations/v1/{domain}/reporting/appointments"

func (s *Sim) routes() {
	m := http.NewServeMux()
	m.HandleFunc("POST /oauth2/token", s.handleToken)
	m.HandleFunc("GET "+apiBase+"/pending", s.handlePending)
	m.HandleFunc("GET "+apiBase+"/{appointmentId}", s.handleAppointment)
	m.HandleFunc("GET "+apiBase+"/{appointmentId}/attachments", s.handleAttachments)
	m.HandleFunc("GET "+apiBase+"/{appointmentId}/attachments/{attachmentGuid}", s.handleAttachment)
	m.HandleFunc("GET "+apiBase+"/{appointmentId}/comments", s.handleComments)
	m.HandleFunc("GET "+apiBase+"/{appointmentId}/comments/{commentGuid}", s.handleComment)
	m.HandleFunc("POST "+apiBase+"/{appointmentId}/comments", s.handleCreateComment)
	m.HandleFunc("POST "+apiBase+"/{appointmentId}/report", s.handleReport)
	m.HandleFunc("POST "+apiBase+"/{appointmentId}/report/attachments", s.handleUploadURLs)
	m.HandleFunc("GET /presigned/download/{token}", s.handleDownload)
	m.HandleFunc("PUT /presigned/upload/{token}", s.handleUpload)
	s.mux = m
	s.admin = s.adminRoutes()
}

const (
	detailNoDomain = "domain not found"
	detailNoAppt   = "appointment not found or not in the PENDING REPORTING status"
)

// wireAppointment marshals an appointment, telling an empty serviceItems
// array ([]) from an absent one: qubs.Appointment omits both, QUBS may send
// either.
type wireAppointment struct {
	qubs.Appointment
	ServiceItems *[]qubs.ServiceItem `json:"serviceItems,omitempty"`
}

func wire(a qubs.Appointment) wireAppointment {
	w := wireAppointment{Appointment: a}
	if a.ServiceItems != nil {
		items := a.ServiceItems
		w.ServiceItems = &items
	}
	return w
}

type wirePage struct {
	Items []wireAppointment `json:"items"`
	// NextToken is null on the last page.
	NextToken *string `json:"nextToken"`
}

// pageCursor is the content of a sealed nextToken: the paging position
// after the last examined appointment.
type pageCursor struct {
	K uint64 `json:"k"`
	I string `json:"i"`
}

// handlePending lists PENDING REPORTING appointments, DynamoDB style: a
// page examines up to pageSize appointments (any status) in paging order
// and returns the pending ones; it carries a nextToken whenever it examined
// pageSize of them, even if none remain. Appointments added or removed
// during a walk do not disturb the others: each one present throughout
// appears exactly once.
func (s *Sim) handlePending(w http.ResponseWriter, r *http.Request) {
	domain := r.PathValue("domain")
	if _, ok := s.authorize(w, r, domain); !ok {
		return
	}
	q := r.URL.Query()
	pageSize := 100
	if q.Has("pageSize") {
		n, err := strconv.ParseInt(q.Get("pageSize"), 10, 32)
		if err != nil || n < 1 || n > 500 {
			s.problem(w, r, http.StatusBadRequest, "pageSize must be an integer between 1 and 500")
			return
		}
		pageSize = int(n)
	}
	var cur *pageCursor
	// An empty nextToken is taken as absent: the documentation tells
	// clients that an empty one ends the walk, so it can only mean "start".
	if t := q.Get("nextToken"); t != "" {
		cur = &pageCursor{}
		if s.unseal("page\x00"+domain, t, cur) != nil {
			s.problem(w, r, http.StatusBadRequest, "nextToken is invalid, tampered with, or from another domain")
			return
		}
	}

	s.mu.Lock()
	dd := s.domains[domain]
	if dd == nil {
		s.mu.Unlock()
		s.problem(w, r, http.StatusNotFound, detailNoDomain)
		return
	}
	start := 0
	if cur != nil {
		start = sort.Search(len(dd.order), func(i int) bool {
			a := dd.order[i]
			return a.key > cur.K || (a.key == cur.K && a.a.AppointmentID > cur.I)
		})
	}
	end := min(start+pageSize, len(dd.order))
	page := wirePage{Items: []wireAppointment{}}
	for _, a := range dd.order[start:end] {
		if a.a.Status == qubs.StatusPendingReporting {
			page.Items = append(page.Items, wire(cloneAppointment(a.a)))
		}
	}
	if end-start == pageSize {
		last := dd.order[end-1]
		tok := s.seal("page\x00"+domain, pageCursor{K: last.key, I: last.a.AppointmentID})
		page.NextToken = &tok
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, page)
}

// lookup authorizes a per-appointment GET and finds the appointment,
// answering 401/403/404 itself. On success s.mu is held and the caller must
// unlock it.
func (s *Sim) lookup(w http.ResponseWriter, r *http.Request, validate func() bool) (*domainData, *apptState, bool) {
	domain := r.PathValue("domain")
	if _, ok := s.authorize(w, r, domain); !ok {
		return nil, nil, false
	}
	if validate != nil && !validate() {
		return nil, nil, false
	}
	s.mu.Lock()
	dd := s.domains[domain]
	if dd == nil {
		s.mu.Unlock()
		s.problem(w, r, http.StatusNotFound, detailNoDomain)
		return nil, nil, false
	}
	a := s.pendingAppt(domain, r.PathValue("appointmentId"))
	if a == nil {
		s.mu.Unlock()
		s.problem(w, r, http.StatusNotFound, detailNoAppt)
		return nil, nil, false
	}
	return dd, a, true
}

func (s *Sim) handleAppointment(w http.ResponseWriter, r *http.Request) {
	_, a, ok := s.lookup(w, r, nil)
	if !ok {
		return
	}
	v := wire(cloneAppointment(a.a))
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, v)
}

// urlParams are the validated query parameters of the attachment
// operations.
type urlParams struct {
	ttl         time.Duration
	disposition string
}

// parseURLParams reads urlTtlSeconds (integer, clamped to 60..3600, default
// 900; a non-integer or one beyond int32 is refused) and disposition
// (inline|attachment, default inline, exact spelling).
func (s *Sim) parseURLParams(w http.ResponseWriter, r *http.Request, p *urlParams) bool {
	q := r.URL.Query()
	secs := int64(defaultURLTTLSecs)
	if q.Has("urlTtlSeconds") {
		n, err := strconv.ParseInt(q.Get("urlTtlSeconds"), 10, 32)
		if err != nil {
			s.problem(w, r, http.StatusBadRequest, "urlTtlSeconds must be an integer")
			return false
		}
		secs = max(minURLTTLSecs, min(maxURLTTLSecs, n))
	}
	p.ttl = time.Duration(secs) * time.Second
	p.disposition = string(qubs.DispositionInline)
	if q.Has("disposition") {
		switch d := q.Get("disposition"); d {
		case string(qubs.DispositionInline), string(qubs.DispositionAttachment):
			p.disposition = d
		default:
			s.problem(w, r, http.StatusBadRequest, "disposition must be inline or attachment")
			return false
		}
	}
	return true
}

// downloadClaims are sealed in a presigned download URL.
type downloadClaims struct {
	D string `json:"d"` // domain
	A string `json:"a"` // appointment id
	G string `json:"g"` // attachment guid
	P string `json:"p"` // disposition
	X int64  `json:"x"` // expiry, Unix seconds
}

// attachmentView returns the attachment with a fresh presigned URL. A
// report artifact whose upload has not succeeded is listed (its metadata
// exists from the moment the upload URL was created) without a URL.
// Callers hold s.mu.
func (s *Sim) attachmentView(r *http.Request, domain, apptID string, at *attachment, p urlParams) qubs.Attachment {
	v := at.meta
	if at.upload != nil && !at.upload.rec.Uploaded {
		v.URL, v.URLExpiresAtUTC = nil, nil
		return v
	}
	exp := s.clock.Now().Add(p.ttl).UTC().Truncate(time.Second)
	tok := s.seal("download", downloadClaims{D: domain, A: apptID, G: at.meta.GUID, P: p.disposition, X: exp.Unix()})
	u := s.baseURL(r) + "/presigned/download/" + tok
	v.URL, v.URLExpiresAtUTC = &u, &exp
	return v
}

func (s *Sim) handleAttachments(w http.ResponseWriter, r *http.Request) {
	var p urlParams
	_, a, ok := s.lookup(w, r, func() bool { return s.parseURLParams(w, r, &p) })
	if !ok {
		return
	}
	out := make([]qubs.Attachment, 0, len(a.attachments))
	for _, at := range a.attachments {
		out = append(out, s.attachmentView(r, a.a.Domain, a.a.AppointmentID, at, p))
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Sim) handleAttachment(w http.ResponseWriter, r *http.Request) {
	var p urlParams
	_, a, ok := s.lookup(w, r, func() bool { return s.parseURLParams(w, r, &p) })
	if !ok {
		return
	}
	guid := r.PathValue("attachmentGuid")
	for _, at := range a.attachments {
		if at.meta.GUID == guid {
			v := s.attachmentView(r, a.a.Domain, a.a.AppointmentID, at, p)
			s.mu.Unlock()
			writeJSON(w, http.StatusOK, v)
			return
		}
	}
	s.mu.Unlock()
	s.problem(w, r, http.StatusNotFound, "attachment not found for this appointment")
}

func (s *Sim) handleComments(w http.ResponseWriter, r *http.Request) {
	dd, a, ok := s.lookup(w, r, nil)
	if !ok {
		return
	}
	cs := dd.comments(a)
	out := make([]qubs.Comment, len(cs))
	for i, c := range cs {
		out[i] = *c
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// handleComment returns one comment of the appointment or of its patient;
// a comment of any other appointment or patient is 404.
func (s *Sim) handleComment(w http.ResponseWriter, r *http.Request) {
	dd, a, ok := s.lookup(w, r, nil)
	if !ok {
		return
	}
	guid := r.PathValue("commentGuid")
	for _, c := range dd.comments(a) {
		if c.GUID == guid {
			v := *c
			s.mu.Unlock()
			writeJSON(w, http.StatusOK, v)
			return
		}
	}
	s.mu.Unlock()
	s.problem(w, r, http.StatusNotFound, "comment not found for this appointment or its patient")
}

// newCommentBody is "Create a comment" as received; pointers tell absent
// and null from given.
type newCommentBody struct {
	CommentText     *string    `json:"commentText"`
	CommentType     *string    `json:"commentType"`
	IsAlert         *bool      `json:"isAlert"`
	CommentDateTime *time.Time `json:"commentDateTime"`
}

// handleCreateComment creates a comment or alert.
//
// The documentation says commentType defaults to AA when isAlert is true,
// else AC, but not what isAlert becomes when commentType is given. The
// simulator derives it from the type (AA and PA are alerts, AC and PC are
// not) and refuses an explicit isAlert that contradicts the type with 400,
// so a client cannot believe it created an alert when it did not.
//
// PC and PA are patient-level: stored with an empty appointmentId and the
// appointment's patientId, and listed on every appointment of that patient.
// An appointment without a patientId cannot take them (400).
func (s *Sim) handleCreateComment(w http.ResponseWriter, r *http.Request) {
	p := s.beginPost(w, r)
	if p == nil {
		return
	}
	var b newCommentBody
	if err := json.Unmarshal(p.body, &b); err != nil {
		s.problem(w, r, http.StatusBadRequest, "the request body does not match the comment schema: "+jsonFieldError(err))
		return
	}
	if b.CommentText == nil || strings.TrimSpace(*b.CommentText) == "" {
		s.problem(w, r, http.StatusBadRequest, "commentText is required and must not be blank")
		return
	}
	var typ qubs.CommentType
	switch {
	case b.CommentType != nil:
		typ = qubs.CommentType(*b.CommentType)
		if !typ.Valid() {
			s.problem(w, r, http.StatusBadRequest, "commentType must be one of AC, AA, PC, PA")
			return
		}
	case b.IsAlert != nil && *b.IsAlert:
		typ = qubs.CommentAppointmentAlert
	default:
		typ = qubs.CommentAppointment
	}
	alert := typ == qubs.CommentAppointmentAlert || typ == qubs.CommentPatientAlert
	if b.IsAlert != nil && *b.IsAlert != alert {
		s.problem(w, r, http.StatusBadRequest, fmt.Sprintf("isAlert contradicts commentType %s", typ))
		return
	}
	patientLevel := typ == qubs.CommentPatient || typ == qubs.CommentPatientAlert

	s.commit(w, r, p, idemTTLLong, func() answer {
		dd := s.domains[p.domain]
		if dd == nil {
			return refuse(http.StatusNotFound, detailNoDomain)
		}
		a := s.pendingAppt(p.domain, p.apptID)
		if a == nil {
			return refuse(http.StatusNotFound, detailNoAppt)
		}
		if patientLevel && a.a.PatientID == "" {
			return refuse(http.StatusBadRequest, "the appointment has no patient, so it cannot take a patient-level comment (PC, PA)")
		}
		now := s.clock.Now().UTC().Truncate(time.Second)
		when := now
		if b.CommentDateTime != nil {
			when = b.CommentDateTime.UTC()
		}
		c := &qubs.Comment{
			GUID:        s.newGUID(),
			CommentType: typ,
			PatientID:   a.a.PatientID,
			CommentText: *b.CommentText,
			// The author is the integration itself: QUBS documents no way
			// to name a person, so the client id stands in for the user.
			CommentBy:            &qubs.UserSummary{Username: p.clientID, Role: "Integration"},
			CommentDateTime:      &when,
			IsAlert:              alert,
			LastModifiedDateTime: &now,
		}
		if patientLevel {
			dd.patientComments[a.a.PatientID] = append(dd.patientComments[a.a.PatientID], c)
		} else {
			c.AppointmentID = a.a.AppointmentID
			a.comments = append(a.comments, c)
		}
		a.created = append(a.created, CommentRecord{Comment: *c, ClientID: p.clientID, IdempotencyKey: p.key, CorrelationID: info(r).corr})
		return created(c)
	})
}

// reportBody is "Submit a report" as received.
type reportBody = qubs.ReportSubmission

// handleReport stores a report. Resubmissions overwrite the report and keep
// its reportGuid (stable per appointment), and every submission is kept in
// the inspection history. reportText is measured in UTF-8 bytes; over the
// limit is 400 (a validation failure of a documented field), while a body
// too large to be any valid report is 413. Whitespace-only text is
// accepted: the documentation says only "1 .. 2097152 characters" and
// "stored as-is".
func (s *Sim) handleReport(w http.ResponseWriter, r *http.Request) {
	p := s.beginPost(w, r)
	if p == nil {
		return
	}
	// reportText and reportStatus are plain strings in the wire type: empty,
	// null and absent all decode to "", and all are refused.
	var b reportBody
	if err := json.Unmarshal(p.body, &b); err != nil {
		s.problem(w, r, http.StatusBadRequest, "the request body does not match the report schema: "+jsonFieldError(err))
		return
	}
	switch {
	case b.ReportText == "":
		s.problem(w, r, http.StatusBadRequest, "reportText is required")
		return
	case len(b.ReportText) > qubs.MaxReportTextBytes:
		s.problem(w, r, http.StatusBadRequest, fmt.Sprintf("reportText must be %d bytes or less when UTF-8 encoded", qubs.MaxReportTextBytes))
		return
	}
	status := strings.ToLower(b.ReportStatus)
	if status != qubs.ReportPreliminary && status != qubs.ReportFinal {
		s.problem(w, r, http.StatusBadRequest, "reportStatus is required: preliminary or final (case-insensitive)")
		return
	}

	s.commit(w, r, p, idemTTLLong, func() answer {
		if s.domains[p.domain] == nil {
			return refuse(http.StatusNotFound, detailNoDomain)
		}
		a := s.pendingAppt(p.domain, p.apptID)
		if a == nil {
			return refuse(http.StatusNotFound, detailNoAppt)
		}
		now := s.clock.Now()
		reportedAt := now.UTC().Truncate(time.Second)
		if b.ReportedAtUTC != nil {
			reportedAt = b.ReportedAtUTC.UTC()
		}
		format := "text/plain"
		if b.ReportFormat != nil && *b.ReportFormat != "" {
			format = *b.ReportFormat
		}
		if a.reportGUID == "" {
			a.reportGUID = s.newGUID()
		}
		a.reports = append(a.reports, ReportRecord{
			ReportGUID: a.reportGUID, Submission: b, Status: status, Format: format, ReportedAt: reportedAt,
			ClientID: p.clientID, IdempotencyKey: p.key, CorrelationID: info(r).corr, ReceivedAt: now,
		})
		return created(qubs.ReportReceipt{ReportGUID: a.reportGUID, ReportStatus: status, ReportedAtUTC: &reportedAt})
	})
}

// uploadBody is "Create upload URLs" as received.
type uploadBody struct {
	Items *[]struct {
		FileName    *string `json:"fileName"`
		ContentType *string `json:"contentType"`
		Category    *string `json:"category"`
	} `json:"items"`
}

// uploadClaims are sealed in a presigned upload URL.
type uploadClaims struct {
	D string `json:"d"`
	A string `json:"a"`
	G string `json:"g"`
	X int64  `json:"x"`
}

// handleUploadURLs creates report artifact metadata and presigned PUT URLs.
//
// fileName: path segments (after the last '/' or '\') are stripped, then
// surrounding white space; "." and ".." count as empty; an empty result
// gets a generated name ("report-<guid prefix>" plus .pdf or .dcm when the
// content type says so). The 255-character limit applies after stripping,
// in characters (runes). contentType: null or absent, else exactly
// application/pdf or application/dicom. category: null, absent or "" means
// "report"; anything else is kept.
func (s *Sim) handleUploadURLs(w http.ResponseWriter, r *http.Request) {
	p := s.beginPost(w, r)
	if p == nil {
		return
	}
	var b uploadBody
	if err := json.Unmarshal(p.body, &b); err != nil {
		s.problem(w, r, http.StatusBadRequest, "the request body does not match the upload schema: "+jsonFieldError(err))
		return
	}
	if b.Items == nil || len(*b.Items) < 1 || len(*b.Items) > qubs.MaxUploadItems {
		s.problem(w, r, http.StatusBadRequest, fmt.Sprintf("items must hold 1 to %d entries", qubs.MaxUploadItems))
		return
	}
	type item struct{ name, ct, cat string }
	items := make([]item, len(*b.Items))
	for i, it := range *b.Items {
		if it.FileName == nil {
			s.problem(w, r, http.StatusBadRequest, fmt.Sprintf("items[%d].fileName is required", i))
			return
		}
		name := stripPath(*it.FileName)
		if utf8.RuneCountInString(name) > qubs.MaxFileNameLength {
			s.problem(w, r, http.StatusBadRequest, fmt.Sprintf("items[%d].fileName must be at most %d characters", i, qubs.MaxFileNameLength))
			return
		}
		if it.ContentType != nil && *it.ContentType != qubs.ContentTypePDF && *it.ContentType != qubs.ContentTypeDICOM {
			s.problem(w, r, http.StatusBadRequest, fmt.Sprintf("items[%d].contentType must be application/pdf or application/dicom when given", i))
			return
		}
		items[i].name = name
		if it.ContentType != nil {
			items[i].ct = *it.ContentType
		}
		items[i].cat = "report"
		if it.Category != nil && *it.Category != "" {
			items[i].cat = *it.Category
		}
	}

	s.commit(w, r, p, idemTTLUpload, func() answer {
		if s.domains[p.domain] == nil {
			return refuse(http.StatusNotFound, detailNoDomain)
		}
		a := s.pendingAppt(p.domain, p.apptID)
		if a == nil {
			return refuse(http.StatusNotFound, detailNoAppt)
		}
		now := s.clock.Now()
		exp := now.Add(uploadURLTTL).UTC().Truncate(time.Second)
		base := s.baseURL(r)
		resp := qubs.UploadURLs{Items: make([]qubs.UploadURL, 0, len(items))}
		for _, it := range items {
			guid := s.newGUID()
			if it.name == "" {
				it.name = "report-" + guid[:8]
				switch it.ct {
				case qubs.ContentTypePDF:
					it.name += ".pdf"
				case qubs.ContentTypeDICOM:
					it.name += ".dcm"
				}
			}
			u := &upload{domain: p.domain, apptID: p.apptID, rec: UploadRecord{
				GUID: guid, FileName: it.name, Category: it.cat, ContentType: it.ct,
				IdempotencyKey: p.key, CreatedAt: now, ExpiresAt: exp,
			}}
			a.uploads = append(a.uploads, u)
			added := now.UTC().Truncate(time.Second)
			a.attachments = append(a.attachments, &attachment{upload: u, meta: qubs.Attachment{
				GUID: guid, Category: it.cat, FileName: it.name, AddedDateTime: &added,
				AddedBy: &qubs.UserSummary{Username: p.clientID, Role: "Integration"}, LastModifiedDateTime: &added,
			}})
			tok := s.seal("upload", uploadClaims{D: p.domain, A: p.apptID, G: guid, X: exp.Unix()})
			e := exp
			resp.Items = append(resp.Items, qubs.UploadURL{
				GUID: guid, FileName: it.name, Category: it.cat,
				UploadURL: base + "/presigned/upload/" + tok, UploadURLExpiresAtUTC: &e,
			})
		}
		return created(resp)
	})
}

// stripPath keeps the last path segment of a client file name, whichever
// separator the client's platform uses.
func stripPath(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.TrimSpace(name)
	if name == "." || name == ".." {
		return ""
	}
	return name
}

// jsonFieldError describes a decoding error without echoing values, which
// may hold PHI.
func jsonFieldError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		want := "value of another type"
		switch te.Type.Kind() {
		case reflect.String:
			want = "string"
		case reflect.Bool:
			want = "boolean"
		case reflect.Int, reflect.Int32, reflect.Int64, reflect.Float64:
			want = "number"
		case reflect.Slice:
			want = "array"
		case reflect.Struct, reflect.Map:
			want = "object"
		}
		if te.Type == reflect.TypeFor[time.Time]() {
			want = "date-time string"
		}
		return fmt.Sprintf("field %q must be a %s", te.Field, want)
	}
	return "a value is malformed (date-times must be RFC 3339)"
}
