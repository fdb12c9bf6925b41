package qubssim

import (
	"sort"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// ReportRecord is one report submission exactly as QUBS received it.
type ReportRecord struct {
	// ReportGUID is stable per appointment: resubmissions overwrite the
	// report and keep its GUID.
	ReportGUID string
	// Submission is the body as received (reportStatus in the client's
	// case, optional fields nil when absent).
	Submission qubs.ReportSubmission
	// Status is the report status as stored: lower case.
	Status string
	// Format is the stored format: reportFormat, or text/plain.
	Format string
	// ReportedAt is the stored reportedAtUtc: the submitted one in UTC, or
	// the server time when it was omitted.
	ReportedAt     time.Time
	ClientID       string
	IdempotencyKey string
	CorrelationID  string
	ReceivedAt     time.Time
}

// CommentRecord is one comment created through the API.
type CommentRecord struct {
	// Comment is the comment as stored and returned with 201.
	Comment        qubs.Comment
	ClientID       string
	IdempotencyKey string
	CorrelationID  string
}

// UploadRecord is one presigned upload slot created through the API and,
// once the PUT succeeded, the bytes received.
type UploadRecord struct {
	GUID     string
	FileName string // after stripping path segments (or the generated fallback)
	Category string
	// ContentType is the declared contentType, "" when none was declared.
	ContentType    string
	IdempotencyKey string
	CreatedAt      time.Time
	ExpiresAt      time.Time
	Uploaded       bool
	UploadedAt     time.Time
	// PutContentType is the Content-Type header of the successful PUT.
	PutContentType string
	Size           int64
	SHA256         string // hex
	Bytes          []byte
	// Puts counts the successful PUTs: more than one only with
	// UsedUploadOverwrite, each replacing the content.
	Puts int
}

// TokenRequest is one request to the token endpoint.
type TokenRequest struct {
	GrantType string
	ClientID  string
	// AuthMethod is "client_secret_post" or "client_secret_basic" ("" when
	// the client did not authenticate).
	AuthMethod string
	OK         bool
	// Error is the RFC 6749 error code answered when !OK.
	Error string
	At    time.Time
}

// RequestRecord is one request to the simulator, admin endpoints excepted.
type RequestRecord struct {
	Method string
	// Route is the matched pattern, e.g.
	// "POST /integrations/v1/{domain}/reporting/appointments/{appointmentId}/report";
	// "" when no route matched.
	Route          string
	Path           string
	Status         int // as seen by the client; 0 when the connection was dropped or the client gave up
	IdempotencyKey string
	CorrelationID  string
	RequestID      string
	// TraceParent is the W3C traceparent header the request carried, ""
	// when none. The simulator does nothing with it (nor does QUBS, as far
	// as its documentation says); it is kept so tests can see the trace
	// context arrive.
	TraceParent string
	// Replayed is true when an idempotent replay answered.
	Replayed bool
	// Fault is true when an injected fault applied.
	Fault bool
	// HandledStatus is the status of the real handler when a fault with
	// AfterHandling replaced its answer.
	HandledStatus int
	At            time.Time
}

// Appointment returns the appointment with any status.
func (s *Sim) Appointment(domain, id string) (qubs.Appointment, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.appt(domain, id)
	if a == nil {
		return qubs.Appointment{}, false
	}
	return cloneAppointment(a.a), true
}

// PendingIDs returns the ids of the domain's PENDING REPORTING appointments,
// sorted.
func (s *Sim) PendingIDs(domain string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	dd := s.domains[domain]
	if dd == nil {
		return nil
	}
	var ids []string
	for id, a := range dd.appts {
		if a.a.Status == qubs.StatusPendingReporting {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// AppointmentIDs returns the ids of every appointment of the domain, any
// status, sorted.
func (s *Sim) AppointmentIDs(domain string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	dd := s.domains[domain]
	if dd == nil {
		return nil
	}
	ids := make([]string, 0, len(dd.appts))
	for id := range dd.appts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// SetStatus changes an appointment's status; false when there is no such
// appointment.
func (s *Sim) SetStatus(domain, id string, st qubs.Status) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.appt(domain, id)
	if a == nil {
		return false
	}
	a.a.Status = st
	return true
}

// PutAppointment adds an appointment or replaces one with the same domain
// and id, keeping its attachments, comments and reports. A new domain is
// created on the fly; the default client may use it.
func (s *Sim) PutAppointment(a qubs.Appointment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dd := s.domain(a.Domain)
	if old := dd.appts[a.AppointmentID]; old != nil {
		old.a = cloneAppointment(a)
		return
	}
	dd.add(s, &apptState{a: cloneAppointment(a)})
}

// PutAttachment adds an attachment with its content to an appointment; a.GUID
// is generated when empty. It returns the GUID, or "" when there is no such
// appointment.
func (s *Sim) PutAttachment(domain, appointmentID string, a qubs.Attachment, content []byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ap := s.appt(domain, appointmentID)
	if ap == nil {
		return ""
	}
	if a.GUID == "" {
		a.GUID = s.newGUID()
	}
	a.URL, a.URLExpiresAtUTC = nil, nil
	ap.attachments = append(ap.attachments, &attachment{meta: a, content: append([]byte(nil), content...)})
	return a.GUID
}

// PutComment adds a comment: to the appointment c.AppointmentID, or, when
// that is empty, to the patient c.PatientID (listed on every appointment of
// that patient). c.GUID is generated when empty. It returns the GUID, or ""
// when the appointment does not exist or neither id is given.
func (s *Sim) PutComment(domain string, c qubs.Comment) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	dd := s.domains[domain]
	if dd == nil {
		return ""
	}
	if c.GUID == "" {
		c.GUID = s.newGUID()
	}
	cc := c
	switch {
	case c.AppointmentID != "":
		ap := dd.appts[c.AppointmentID]
		if ap == nil {
			return ""
		}
		ap.comments = append(ap.comments, &cc)
	case c.PatientID != "":
		dd.patientComments[c.PatientID] = append(dd.patientComments[c.PatientID], &cc)
	default:
		return ""
	}
	return c.GUID
}

// AddComment adds a comment now, as a QUBS user would (not through the
// integration API): on the appointment, or, with appointmentID empty, on
// the patient. It returns the comment, nil when the domain or the
// appointment does not exist.
func (s *Sim) AddComment(domain, appointmentID, patientID, text string, alert bool) *qubs.Comment {
	now := s.clock.Now().UTC().Truncate(time.Second)
	typ := map[[2]bool]qubs.CommentType{{false, false}: qubs.CommentAppointment, {false, true}: qubs.CommentAppointmentAlert,
		{true, false}: qubs.CommentPatient, {true, true}: qubs.CommentPatientAlert}[[2]bool{appointmentID == "", alert}]
	c := qubs.Comment{CommentType: typ, AppointmentID: appointmentID, PatientID: patientID, CommentText: text, IsAlert: alert,
		CommentBy: &qubs.UserSummary{Username: "reception", Role: "Scheduler"}, CommentDateTime: &now, LastModifiedDateTime: &now}
	if appointmentID != "" {
		if a, ok := s.Appointment(domain, appointmentID); ok {
			c.PatientID = a.PatientID
		}
	}
	if c.GUID = s.PutComment(domain, c); c.GUID == "" {
		return nil
	}
	return &c
}

// EditComment changes a comment's text as a QUBS user would, moving its
// lastModifiedDateTime on; false when there is no such comment.
func (s *Sim) EditComment(domain, guid, text string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	dd := s.domains[domain]
	if dd == nil {
		return false
	}
	now := s.clock.Now().UTC().Truncate(time.Second)
	edit := func(cs []*qubs.Comment) bool {
		for _, c := range cs {
			if c.GUID == guid {
				if c.LastModifiedDateTime != nil && !now.After(*c.LastModifiedDateTime) {
					now = c.LastModifiedDateTime.Add(time.Second) // an edit is always later
				}
				c.CommentText, c.LastModifiedDateTime = text, &now
				return true
			}
		}
		return false
	}
	for _, a := range dd.appts {
		if edit(a.comments) {
			return true
		}
	}
	for _, cs := range dd.patientComments {
		if edit(cs) {
			return true
		}
	}
	return false
}

// Reports returns the report submissions of an appointment, oldest first.
func (s *Sim) Reports(domain, appointmentID string) []ReportRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.appt(domain, appointmentID)
	if a == nil {
		return nil
	}
	return append([]ReportRecord(nil), a.reports...)
}

// CreatedComments returns the comments created through the API on an
// appointment (patient-level ones included), oldest first.
func (s *Sim) CreatedComments(domain, appointmentID string) []CommentRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.appt(domain, appointmentID)
	if a == nil {
		return nil
	}
	return append([]CommentRecord(nil), a.created...)
}

// Uploads returns the upload slots created on an appointment, oldest first,
// with the bytes of those whose PUT succeeded.
func (s *Sim) Uploads(domain, appointmentID string) []UploadRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.appt(domain, appointmentID)
	if a == nil {
		return nil
	}
	out := make([]UploadRecord, 0, len(a.uploads))
	for _, u := range a.uploads {
		out = append(out, u.rec)
	}
	return out
}

// TokenRequests returns every token endpoint request, oldest first.
func (s *Sim) TokenRequests() []TokenRequest {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	return append([]TokenRequest(nil), s.tokenReqs...)
}

// Requests returns every request but the admin ones, oldest first.
func (s *Sim) Requests() []RequestRecord {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	return append([]RequestRecord(nil), s.requests...)
}

// SiteTimeZones returns the IANA time zone of every seeded site, by site
// name, for configuring the bridge (BRIDGE_SITE_TIMEZONES) against the
// simulator. QUBS itself gives them through SiteSettings.timeZone, an
// operation outside the reporting API.
func (s *Sim) SiteTimeZones() map[string]string {
	out := map[string]string{}
	for _, sites := range domainSites {
		for _, st := range sites {
			out[st.name] = st.tz
		}
	}
	return out
}

func cloneAppointment(a qubs.Appointment) qubs.Appointment {
	c := a
	c.AppointmentDate = cloneStr(a.AppointmentDate)
	c.StartTime = cloneStr(a.StartTime)
	c.EndTime = cloneStr(a.EndTime)
	c.DateOfBirth = cloneStr(a.DateOfBirth)
	if a.ReportNeededBy != nil {
		t := *a.ReportNeededBy
		c.ReportNeededBy = &t
	}
	if a.RadiologistUser != nil {
		u := *a.RadiologistUser
		c.RadiologistUser = &u
	}
	if a.ServiceItems != nil {
		c.ServiceItems = make([]qubs.ServiceItem, len(a.ServiceItems))
		for i, it := range a.ServiceItems {
			c.ServiceItems[i] = append(qubs.ServiceItem(nil), it...)
		}
	}
	return c
}

func cloneStr(p *string) *string {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
