package qubs

import (
	"encoding/json"
	"time"
)

// Status is an appointment status as QUBS spells it.
//
// The documented enum lacks "PENDING REPORTING", which every example and the
// operation descriptions use, and spells "APPPOINTMENT CANCELLED" with three
// Ps. Both are kept exactly as QUBS sends them (docs/qubs-api-notes.md).
type Status string

// Appointment statuses. StatusPendingReporting is the only one the pending
// reporting operations ever return.
const (
	StatusPendingReporting    Status = "PENDING REPORTING"
	StatusNotArrived          Status = "NOT ARRIVED"
	StatusArrived             Status = "ARRIVED"
	StatusDidNotAttend        Status = "DID NOT ATTEND"
	StatusCancelled           Status = "APPPOINTMENT CANCELLED" // sic: the QUBS enum's spelling
	StatusCancellationList    Status = "CANCELLATION LIST"
	StatusDictationInProgress Status = "DICTATION INPROGRESS"
	StatusDictated            Status = "DICTATED"
	StatusTyped               Status = "TYPED"
	StatusAuthorising         Status = "AUTHORISING"
	StatusAuthorised          Status = "AUTHORISED"
)

// UserSummary is UserSummaryResponse: a QUBS user (radiologist, scheduler,
// comment author). The documentation gives its fields only by example.
type UserSummary struct {
	Username  string `json:"username,omitempty"`
	FirstName string `json:"firstName,omitempty"`
	Initials  string `json:"initials,omitempty"`
	LastName  string `json:"lastName,omitempty"`
	Role      string `json:"role,omitempty"`
}

// ServiceItem is one PendingReportingServiceItemResponse. QUBS documents
// no fields for it, so it is kept as the exact JSON QUBS sent; Fields
// decodes it for callers that look for well-known keys.
type ServiceItem json.RawMessage

// MarshalJSON returns the item exactly as received.
func (s ServiceItem) MarshalJSON() ([]byte, error) {
	if len(s) == 0 {
		return []byte("null"), nil
	}
	return s, nil
}

// UnmarshalJSON keeps a copy of the raw item.
func (s *ServiceItem) UnmarshalJSON(b []byte) error {
	*s = append((*s)[:0], b...)
	return nil
}

// Fields decodes the item as a JSON object. It returns nil when the item is
// not an object.
func (s ServiceItem) Fields() map[string]any {
	var m map[string]any
	if err := json.Unmarshal(s, &m); err != nil {
		return nil
	}
	return m
}

// Appointment is PendingReportingAppointmentResponse, the tele-reporting
// view of an appointment.
//
// Fields the documentation marks "null or ..." are pointers: nil means null
// or absent, which QUBS gives the same meaning. Dates are ISO 8601
// yyyy-MM-dd and times HH:mm:ss in the scheduled site's local time zone,
// kept as strings because they carry no zone; date-times are UTC.
type Appointment struct {
	Domain           string        `json:"domain"`
	AppointmentID    string        `json:"appointmentId"`
	Status           Status        `json:"status"`
	ScheduledSite    string        `json:"scheduledSite"`
	AppointmentDate  *string       `json:"appointmentDate"`
	StartTime        *string       `json:"startTime"`
	EndTime          *string       `json:"endTime"`
	PatientID        string        `json:"patientId,omitempty"`
	PatientName      string        `json:"patientName,omitempty"`
	FirstName        string        `json:"firstName,omitempty"`
	LastName         string        `json:"lastName,omitempty"`
	DateOfBirth      *string       `json:"dateOfBirth"`
	Gender           string        `json:"gender,omitempty"`
	Modality         string        `json:"modality,omitempty"`
	StudyDescription string        `json:"studyDescription,omitempty"`
	ClinicalInfo     string        `json:"clinicalInfo,omitempty"`
	DoctorName       string        `json:"doctorName,omitempty"`
	ClinicName       string        `json:"clinicName,omitempty"`
	Priority         string        `json:"priority,omitempty"`
	ReportNeededBy   *time.Time    `json:"reportNeededBy"`
	StudyInstanceUID string        `json:"studyInstanceUid,omitempty"`
	RadiologistUser  *UserSummary  `json:"radiologistUser,omitempty"`
	ServiceItems     []ServiceItem `json:"serviceItems,omitempty"`
}

// AppointmentPage is one page of the pending reporting list.
type AppointmentPage struct {
	Items []Appointment `json:"items"`
	// NextToken is opaque. Empty, null and omitted all mean "no more pages".
	NextToken *string `json:"nextToken"`
}

// More reports whether another page follows.
func (p *AppointmentPage) More() bool { return p.NextToken != nil && *p.NextToken != "" }

// Attachment is an appointment attachment (referral, worksheet, report
// artifact). QUBS gives no content type; callers derive one from FileName.
type Attachment struct {
	GUID                 string       `json:"guid"`
	Category             string       `json:"category,omitempty"`
	FileName             string       `json:"fileName,omitempty"`
	AddedDateTime        *time.Time   `json:"addedDateTime"`
	AddedBy              *UserSummary `json:"addedBy,omitempty"`
	LastModifiedDateTime *time.Time   `json:"lastModifiedDateTime"`
	URL                  *string      `json:"url"`
	URLExpiresAtUTC      *time.Time   `json:"urlExpiresAtUtc"`
}

// Disposition is the content disposition asked of a presigned attachment URL.
type Disposition string

// Dispositions QUBS accepts; the default is inline.
const (
	DispositionInline     Disposition = "inline"
	DispositionAttachment Disposition = "attachment"
)

// AttachmentOptions are the query parameters of the attachment operations.
type AttachmentOptions struct {
	// URLTTLSeconds is the presigned URL lifetime; 0 leaves QUBS's default
	// (900). QUBS clamps values outside 60..3600.
	URLTTLSeconds int
	// Disposition is empty for QUBS's default (inline).
	Disposition Disposition
}

// CommentType is one of AC, AA, PC, PA.
type CommentType string

// Comment types.
const (
	CommentAppointment      CommentType = "AC"
	CommentAppointmentAlert CommentType = "AA"
	CommentPatient          CommentType = "PC"
	CommentPatientAlert     CommentType = "PA"
)

// Valid reports whether t is one of the four documented types.
func (t CommentType) Valid() bool {
	switch t {
	case CommentAppointment, CommentAppointmentAlert, CommentPatient, CommentPatientAlert:
		return true
	}
	return false
}

// Comment is an appointment or patient comment or alert.
type Comment struct {
	GUID        string      `json:"guid"`
	CommentType CommentType `json:"commentType"`
	// AppointmentID is empty for patient-level comments.
	AppointmentID        string       `json:"appointmentId,omitempty"`
	PatientID            string       `json:"patientId,omitempty"`
	CommentText          string       `json:"commentText,omitempty"`
	CommentDateTime      *time.Time   `json:"commentDateTime"`
	IsAlert              bool         `json:"isAlert"`
	CommentBy            *UserSummary `json:"commentBy,omitempty"`
	LastModifiedDateTime *time.Time   `json:"lastModifiedDateTime"`
}

// NewComment is the body of "Create a comment". Nil pointers are omitted and
// take QUBS's defaults (commentType AA when isAlert, else AC).
type NewComment struct {
	CommentText     string       `json:"commentText"`
	CommentType     *CommentType `json:"commentType,omitempty"`
	IsAlert         *bool        `json:"isAlert,omitempty"`
	CommentDateTime *time.Time   `json:"commentDateTime,omitempty"`
}

// Report statuses QUBS accepts (case-insensitively).
const (
	ReportPreliminary = "preliminary"
	ReportFinal       = "final"
)

// MaxReportTextBytes is the documented limit on reportText, in UTF-8 bytes.
const MaxReportTextBytes = 2097152

// ReportSubmission is the body of "Submit a report". A submission overwrites
// any earlier report for the appointment.
type ReportSubmission struct {
	ReportText                          string     `json:"reportText"`
	ReportStatus                        string     `json:"reportStatus"`
	ReportFormat                        *string    `json:"reportFormat,omitempty"`
	InterpretingClinicianName           *string    `json:"interpretingClinicianName,omitempty"`
	InterpretingClinicianProviderNumber *string    `json:"interpretingClinicianProviderNumber,omitempty"`
	InterpretingClinicianEmail          *string    `json:"interpretingClinicianEmail,omitempty"`
	ReportedAtUTC                       *time.Time `json:"reportedAtUtc,omitempty"`
}

// ReportReceipt is the 201 answer to a report submission.
type ReportReceipt struct {
	ReportGUID    string     `json:"reportGuid"`
	ReportStatus  string     `json:"reportStatus,omitempty"`
	ReportedAtUTC *time.Time `json:"reportedAtUtc"`
}

// Upload limits from the documentation.
const (
	MaxUploadItems    = 20
	MaxFileNameLength = 255
	MaxUploadBytes    = 2 * 1024 * 1024 // "max object size 2 MB", read as 2 MiB
)

// Report artifact content types QUBS accepts.
const (
	ContentTypePDF   = "application/pdf"
	ContentTypeDICOM = "application/dicom"
)

// UploadItem asks for one presigned upload URL.
type UploadItem struct {
	FileName    string  `json:"fileName"`
	ContentType *string `json:"contentType,omitempty"`
	Category    *string `json:"category,omitempty"`
}

// UploadRequest is the body of "Create upload URLs": 1..20 items.
type UploadRequest struct {
	Items []UploadItem `json:"items"`
}

// UploadURL is one created attachment with its presigned PUT URL.
type UploadURL struct {
	GUID                  string     `json:"guid"`
	FileName              string     `json:"fileName,omitempty"`
	Category              string     `json:"category,omitempty"`
	UploadURL             string     `json:"uploadUrl,omitempty"`
	UploadURLExpiresAtUTC *time.Time `json:"uploadUrlExpiresAtUtc,omitempty"`
}

// UploadURLs is the 201 answer to "Create upload URLs".
type UploadURLs struct {
	Items []UploadURL `json:"items"`
}

// Problem is an RFC 7807 problem document as QUBS sends it, with its
// requestId extension.
type Problem struct {
	Type      string `json:"type,omitempty"`
	Title     string `json:"title,omitempty"`
	Status    int    `json:"status,omitempty"`
	Detail    string `json:"detail,omitempty"`
	Instance  string `json:"instance,omitempty"`
	RequestID string `json:"requestId,omitempty"`
}
