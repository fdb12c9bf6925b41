package mapping

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/internal/jsonw"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// ReportInput is what the bridge delivers to QUBS for a DiagnosticReport:
// the report submission and the artifacts to upload before it.
type ReportInput struct {
	// AppointmentID is the QUBS appointment, from basedOn.
	AppointmentID string
	// PatientID is the FHIR Patient id from subject, "" when absent; the
	// server checks it is the appointment's patient.
	PatientID string
	// Status is the FHIR status as sent (Submission.ReportStatus is the
	// QUBS one).
	Status string
	// Submission is the body of "Submit a report".
	Submission qubs.ReportSubmission
	// Artifacts are the PDF and DICOM presentedForms, in order.
	Artifacts []ArtifactInput
}

// ArtifactInput is one report artifact (PDF or DICOM SR) to upload.
type ArtifactInput struct {
	// Index is the element's index: presentedForm[Index] of a
	// DiagnosticReport, content[Index] of a DocumentReference.
	Index int
	// FileName is the QUBS file name: Attachment.title sanitised, or
	// generated (report-<n>.pdf, report-<n>.dcm); it always ends in the
	// extension of ContentType.
	FileName string
	// ContentType is qubs.ContentTypePDF or qubs.ContentTypeDICOM.
	ContentType string
	// Data is the decoded inline data, nil when BinaryID is set.
	Data []byte
	// BinaryID is the id of the Binary the attachment's url points to,
	// for the server to load: a QUBS attachment (ParseBinaryID gives its
	// appointment and guid; one of another appointment is refused here) or
	// a Binary a client created. "" for inline data.
	BinaryID string
	// BinaryBase is what precedes "Binary/{id}" when the url was absolute,
	// "" when it was relative: the server checks it is its own base.
	BinaryBase string
	// Size is len(Data); for a Binary, the Attachment.size the client
	// gave, 0 when none, for the server to check once loaded.
	Size int64
	// SHA1 is, for a Binary, the decoded Attachment.hash, nil when none,
	// for the server to check once loaded. Inline data is checked here.
	SHA1 []byte
}

// Report text media types. The text goes to QUBS as reportText with this
// type, without parameters, as reportFormat. QUBS stores the text as is
// and its documentation gives no list; these are the types report viewers
// render. Other text/* (xml, csv, ...) are refused rather than delivered
// as something nobody can read.
var reportTextTypes = map[string]bool{"text/plain": true, "text/html": true, "text/rtf": true, "text/markdown": true}

// ReportFromJSON decodes a DiagnosticReport, contained resources
// included, and maps it with ReportFromFHIR. A body that is not a
// DiagnosticReport is one issue with code structure.
func ReportFromJSON(body []byte) (*ReportInput, []Issue) {
	return ReportFromJSONInline(body, nil)
}

// ReportFromJSONInline is ReportFromJSON for a body whose presentedForm
// data the server decoded while reading it: inline[i] stands for
// presentedForm[i].data, which must still be present (any valid base64).
func ReportFromJSONInline(body []byte, inline map[int]*InlineData) (*ReportInput, []Issue) {
	const root = "DiagnosticReport"
	var head struct {
		ResourceType string            `json:"resourceType"`
		Contained    []json.RawMessage `json:"contained"`
	}
	var dr fhir.DiagnosticReport
	if err := json.Unmarshal(body, &head); err != nil || head.ResourceType != root || json.Unmarshal(body, &dr) != nil {
		// The decoder's message may quote the body: not in the issue.
		return nil, []Issue{{Code: codeStructure, Status: 400, Expression: root, Message: "the body is not a DiagnosticReport the bridge can read"}}
	}
	return reportFromFHIR(&dr, inline, head.Contained)
}

// ContainedResources returns the contained resources of a resource's JSON.
// The samply models have no contained element, so ReportFromFHIR takes
// them separately.
func ContainedResources(body []byte) ([]json.RawMessage, error) {
	var head struct {
		Contained []json.RawMessage `json:"contained"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		return nil, errors.New("mapping: not a JSON resource")
	}
	return head.Contained, nil
}

// ReportFromFHIR maps a DiagnosticReport to a QUBS report submission and
// artifacts; MAPPING.md has the rules. contained are the report's
// contained resources (ContainedResources): samply's models drop them,
// and a resultsInterpreter "#id" is resolved against them.
//
// It returns every issue found, and a nil input when there is any.
func ReportFromFHIR(dr *fhir.DiagnosticReport, contained ...json.RawMessage) (*ReportInput, []Issue) {
	return reportFromFHIR(dr, nil, contained)
}

func reportFromFHIR(dr *fhir.DiagnosticReport, inline map[int]*InlineData, contained []json.RawMessage) (*ReportInput, []Issue) {
	const root = "DiagnosticReport"
	if dr == nil {
		return nil, []Issue{{Code: codeStructure, Status: 400, Expression: root, Message: "no DiagnosticReport"}}
	}
	var is issues
	in := &ReportInput{Status: dr.Status.Code()}
	sub := &in.Submission
	switch dr.Status {
	case fhir.DiagnosticReportStatusPreliminary, fhir.DiagnosticReportStatusPartial:
		sub.ReportStatus = qubs.ReportPreliminary
	case fhir.DiagnosticReportStatusFinal, fhir.DiagnosticReportStatusAmended,
		fhir.DiagnosticReportStatusCorrected, fhir.DiagnosticReportStatusAppended:
		sub.ReportStatus = qubs.ReportFinal
	default:
		// registered, cancelled, entered-in-error, unknown: QUBS has
		// preliminary and final reports only, and withdrawing one is not
		// in its API.
		is.add(codeValue, 422, root+".status", "status must be preliminary, partial, final, amended, corrected or appended")
	}
	in.AppointmentID = appointmentFrom(dr.BasedOn, root+".basedOn", &is)
	in.PatientID = patientFrom(dr.Subject, root+".subject", &is)

	// presentedForm: the first text/* form is the report text; PDF and
	// DICOM forms are artifacts.
	textFound := false
	for i, att := range dr.PresentedForm {
		path := idx(root+".presentedForm", i)
		mt, params, ok := mediaType(att, path, &is)
		if !ok {
			continue
		}
		switch {
		case reportTextTypes[mt]:
			if textFound {
				// A second rendition (text/html next to text/plain, say)
				// stays in the stored report; QUBS takes one text.
				continue
			}
			textFound = true
			if text, ok := reportText(att, inline[i], params, path, &is); ok {
				sub.ReportText = text
				sub.ReportFormat = ptr(mt)
			}
		case strings.HasPrefix(mt, "text/"):
			is.add(codeNotSupported, 422, path+".contentType", "report text must be text/plain, text/html, text/rtf or text/markdown")
		case artifactExt[mt] != "":
			a := artifactFrom(att, inline[i], mt, i, len(in.Artifacts)+1, path, &is)
			checkSameAppointment(a, in.AppointmentID, path, &is)
			in.Artifacts = append(in.Artifacts, a)
		default:
			is.add(codeNotSupported, 422, path+".contentType", "a presentedForm must be report text (text/plain, text/html, text/rtf, text/markdown), a PDF (application/pdf) or DICOM SR (application/dicom)")
		}
	}
	if len(in.Artifacts) > qubs.MaxUploadItems {
		is.add(codeTooCostly, 422, root+".presentedForm", "at most %d PDF and DICOM presentedForms: QUBS takes %d uploads per request", qubs.MaxUploadItems, qubs.MaxUploadItems)
	}
	if !textFound {
		// conclusion is the fallback only: a text presentedForm that was
		// refused above must not be replaced silently by the summary.
		switch c := val(dr.Conclusion); {
		case strings.TrimFunc(c, unicode.IsSpace) == "":
			is.add(codeRequired, 422, root+".conclusion", "the report needs text: a presentedForm text/plain (or text/html, text/rtf, text/markdown) or conclusion")
		case len(c) > qubs.MaxReportTextBytes:
			is.add(codeTooCostly, 413, root+".conclusion", "report text may be at most %d bytes of UTF-8 (QUBS limit)", qubs.MaxReportTextBytes)
		default:
			sub.ReportText = c
			sub.ReportFormat = ptr("text/plain")
		}
	}
	if dr.Issued != nil {
		t, err := time.Parse(time.RFC3339Nano, *dr.Issued)
		if err != nil || !strings.ContainsRune(*dr.Issued, 'T') {
			is.add(codeValue, 422, root+".issued", "issued must be an instant: a date, time and zone")
		} else {
			t = t.UTC()
			sub.ReportedAtUTC = &t
		}
	}
	interpreter(dr.ResultsInterpreter, contained, sub, &is)
	if len(is) > 0 {
		return nil, is
	}
	return in, nil
}

// reportText decodes a text presentedForm. The charset parameter is
// honoured for UTF-8 and US-ASCII (a subset) and refused otherwise: QUBS
// takes reportText as a JSON string, and guessing a legacy charset would
// deliver a report with the wrong characters. A leading byte order mark is
// dropped.
func reportText(att fhir.Attachment, inl *InlineData, params map[string]string, path string, is *issues) (string, bool) {
	charset := strings.ToLower(params["charset"])
	if charset != "" && charset != "utf-8" && charset != "utf8" && charset != "us-ascii" {
		is.add(codeNotSupported, 422, path+".contentType", "report text must be UTF-8 (charset utf-8 or us-ascii)")
		return "", false
	}
	if att.Data == nil {
		is.add(codeNotSupported, 422, path+".data", "report text must be inline data")
		return "", false
	}
	// QUBS counts reportText in UTF-8 bytes; a BOM (3 bytes) is allowed
	// on top, as it is dropped.
	data, tooBig, err := attachmentData(att, inl, qubs.MaxReportTextBytes+3)
	switch {
	case tooBig:
		is.add(codeTooCostly, 413, path+".data", "report text may be at most %d bytes of UTF-8 (QUBS limit)", qubs.MaxReportTextBytes)
		return "", false
	case err != nil:
		is.add(codeValue, 400, path+".data", "data is not valid base64")
		return "", false
	}
	checkIntegrity(att, data, path, is)
	data = bytes.TrimPrefix(data, []byte("\uFEFF"))
	switch {
	case len(data) > qubs.MaxReportTextBytes:
		is.add(codeTooCostly, 413, path+".data", "report text may be at most %d bytes of UTF-8 (QUBS limit)", qubs.MaxReportTextBytes)
		return "", false
	case !utf8.Valid(data):
		is.add(codeValue, 422, path+".data", "report text is not valid UTF-8")
		return "", false
	case charset == "us-ascii" && !isASCII(data):
		is.add(codeValue, 422, path+".data", "report text declared us-ascii holds other bytes")
		return "", false
	case len(bytes.TrimFunc(data, unicode.IsSpace)) == 0:
		is.add(codeValue, 422, path+".data", "report text is empty")
		return "", false
	}
	return string(data), true
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// containedResource is one contained resource, decoded on demand.
type containedResource struct {
	index int
	typ   string
	raw   json.RawMessage
}

// interpreter fills the interpreting clinician from the first
// resultsInterpreter that is a practitioner: a contained Practitioner or
// PractitionerRole ("#id"), or a reference to one (literal, or with type
// Practitioner/PractitionerRole, or untyped) read from its display and
// identifier. Organizations and CareTeams are skipped. Only the first
// practitioner is used: QUBS takes one clinician.
//
// Name: the Practitioner's first current name (text, else prefix, given,
// family and suffix), else the Reference's display. Provider number: the
// first identifier in SystemMedicareProvider on the PractitionerRole
// (where AU Base puts it: provider numbers are per location), else on the
// Practitioner, else on the Reference. Email: the first email telecom of
// the PractitionerRole, else of the Practitioner.
func interpreter(refs []fhir.Reference, contained []json.RawMessage, sub *qubs.ReportSubmission, is *issues) {
	const root = "DiagnosticReport"
	byID := map[string]containedResource{}
	for i, raw := range contained {
		var h struct {
			ResourceType string `json:"resourceType"`
			ID           string `json:"id"`
		}
		if json.Unmarshal(raw, &h) == nil && h.ID != "" {
			if _, dup := byID[h.ID]; !dup {
				byID[h.ID] = containedResource{index: i, typ: h.ResourceType, raw: raw}
			}
		}
	}
	for i, r := range refs {
		path := idx(root+".resultsInterpreter", i)
		ref, typ := val(r.Reference), val(r.Type)
		var c clinician
		switch {
		case strings.HasPrefix(ref, "#"):
			res, ok := byID[ref[1:]]
			if !ok {
				is.add(codeInvalid, 422, path+".reference", "no contained resource has this id")
				return
			}
			switch res.typ {
			case "Practitioner", "PractitionerRole":
			default:
				continue
			}
			if !c.fromContained(res, byID, is) {
				return
			}
		default:
			t := typ
			if l, ok := parseLiteral(ref); ok {
				t = l.typ
			} else if ref != "" {
				continue // a logical or odd reference: not something to read
			}
			if t != "" && t != "Practitioner" && t != "PractitionerRole" {
				continue
			}
			if r.Display == nil && r.Identifier == nil {
				continue // nothing to read without resolving it
			}
		}
		c.fromReference(r)
		c.fill(sub)
		return
	}
}

// clinician gathers the interpreting clinician's details, first found
// first kept.
type clinician struct {
	name, provider, email string
}

func (c *clinician) fromContained(res containedResource, byID map[string]containedResource, is *issues) bool {
	path := idx("DiagnosticReport.contained", res.index)
	if res.typ == "PractitionerRole" {
		var role fhir.PractitionerRole
		if json.Unmarshal(res.raw, &role) != nil {
			is.add(codeStructure, 400, path, "not a PractitionerRole the bridge can read")
			return false
		}
		c.identifiers(role.Identifier)
		c.telecom(role.Telecom)
		if role.Practitioner == nil {
			return true
		}
		ref := val(role.Practitioner.Reference)
		if strings.HasPrefix(ref, "#") {
			p, ok := byID[ref[1:]]
			if !ok || p.typ != "Practitioner" {
				is.add(codeInvalid, 422, path+".practitioner.reference", "no contained Practitioner has this id")
				return false
			}
			if !c.fromContained(p, byID, is) {
				return false
			}
		}
		c.fromReference(*role.Practitioner)
		return true
	}
	var p fhir.Practitioner
	if json.Unmarshal(res.raw, &p) != nil {
		is.add(codeStructure, 400, path, "not a Practitioner the bridge can read")
		return false
	}
	if c.name == "" {
		c.name = personName(p.Name)
	}
	c.identifiers(p.Identifier)
	c.telecom(p.Telecom)
	return true
}

func (c *clinician) fromReference(r fhir.Reference) {
	if c.name == "" {
		c.name = strings.TrimSpace(val(r.Display))
	}
	if r.Identifier != nil {
		c.identifiers([]fhir.Identifier{*r.Identifier})
	}
}

func (c *clinician) identifiers(ids []fhir.Identifier) {
	for _, id := range ids {
		if c.provider == "" && val(id.System) == SystemMedicareProvider {
			c.provider = strings.TrimSpace(val(id.Value))
		}
	}
}

func (c *clinician) telecom(cps []fhir.ContactPoint) {
	for _, cp := range cps {
		if c.email == "" && cp.System != nil && *cp.System == fhir.ContactPointSystemEmail {
			v := strings.TrimSpace(val(cp.Value))
			if len(v) > 7 && strings.EqualFold(v[:7], "mailto:") {
				v = v[7:]
			}
			c.email = v
		}
	}
}

func (c *clinician) fill(sub *qubs.ReportSubmission) {
	if c.name != "" {
		sub.InterpretingClinicianName = ptr(c.name)
	}
	if c.provider != "" {
		sub.InterpretingClinicianProviderNumber = ptr(c.provider)
	}
	if c.email != "" {
		sub.InterpretingClinicianEmail = ptr(c.email)
	}
}

// personName is the display form of the first name that is not old: its
// text, else prefix, given, family and suffix joined by spaces.
func personName(names []fhir.HumanName) string {
	for _, n := range names {
		if n.Use != nil && (*n.Use == fhir.NameUseOld || *n.Use == fhir.NameUseAnonymous) {
			continue
		}
		if t := strings.TrimSpace(val(n.Text)); t != "" {
			return t
		}
		var parts []string
		parts = append(parts, n.Prefix...)
		parts = append(parts, n.Given...)
		if n.Family != nil {
			parts = append(parts, *n.Family)
		}
		parts = append(parts, n.Suffix...)
		if s := strings.Join(strings.Fields(strings.Join(parts, " ")), " "); s != "" {
			return s
		}
	}
	return ""
}

// codeRE is a FHIR code (no leading, trailing or double white space),
// bounded: what may go in a valueCode.
var codeRE = regexp.MustCompile(`^[^\s]{1,32}( [^\s]{1,32}){0,3}$`)

// Delivery states of a report (ExtDeliveryState).
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
	// DeliverySuperseded marks a version never sent because a newer one
	// for the same study was accepted first (QUBS keeps only the latest).
	DeliverySuperseded = "superseded"
)

// ReportDelivery is what the bridge knows of a report's way into QUBS.
type ReportDelivery struct {
	// State is DeliveryPending, DeliveryDelivered, DeliveryFailed or
	// DeliverySuperseded.
	State string
	// ReportGUID is the reportGuid QUBS answered, "" until it did.
	ReportGUID string
	// DeliveredAt is when QUBS accepted the report, nil until it did.
	DeliveredAt *time.Time
	// Attempts, LastErrorKind and NextAttemptAt say why a pending or
	// failed report is not in QUBS: how often it was tried, the kind of
	// the last failure (a QUBS error kind such as "transient", never a
	// message: those can quote QUBS's answer), and, while pending, when
	// it is tried next.
	Attempts      int
	LastErrorKind string
	NextAttemptAt *time.Time
}

// DecorateReport returns the stored DiagnosticReport (the client's JSON,
// as accepted) as the bridge serves it: id and meta.versionId set,
// meta.lastUpdated set (other meta kept), the QUBS reportGuid as an
// identifier (SystemReportGUID, type FILL) once QUBS has answered one, and
// the delivery state in extension ExtDeliveryState, with ExtDeliveredAt
// when known. Identifiers and extensions of those urls that the client
// sent are replaced, so a client cannot claim a delivery.
//
// Everything else is kept byte for byte in the client's order, contained
// resources and inline data included: the stored JSON is edited at the
// top level, never round-tripped through a model that would drop what it
// does not know. The result is compact JSON.
//
// studyID, when not "", is the id of the ImagingStudy of the report's
// study (the ServiceRequest's id): it is added to imagingStudy, after
// what the client sent there, unless the client already named it.
func DecorateReport(stored []byte, id string, version int, lastUpdated time.Time, d ReportDelivery, studyID string) (_ []byte, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("mapping.DecorateReport: %w", err)
		}
	}()
	switch {
	case !validID(id):
		return nil, errors.New("id is not a FHIR id")
	case version < 1:
		return nil, errors.New("version must be at least 1")
	case lastUpdated.IsZero() || lastUpdated.Year() > 9999:
		return nil, errors.New("lastUpdated is not a time FHIR can write")
	case d.State != DeliveryPending && d.State != DeliveryDelivered && d.State != DeliveryFailed && d.State != DeliverySuperseded:
		return nil, errors.New("unknown delivery state")
	case d.ReportGUID != "" && !fhirSafe(d.ReportGUID):
		return nil, errors.New("report guid is not a FHIR string")
	case studyID != "" && !validID(studyID):
		return nil, errors.New("imaging study id is not a FHIR id")
	}
	members, err := topLevel(stored)
	if err != nil {
		return nil, err
	}
	var rt string
	if raw, ok := members.Get("resourceType"); !ok || json.Unmarshal(raw, &rt) != nil || rt != "DiagnosticReport" {
		return nil, errors.New("stored resource is not a DiagnosticReport")
	}

	meta := map[string]json.RawMessage{}
	if raw, ok := members.Get("meta"); ok {
		if err := json.Unmarshal(raw, &meta); err != nil {
			return nil, errors.New("stored meta is not an object")
		}
		if meta == nil { // "meta": null
			meta = map[string]json.RawMessage{}
		}
	}
	meta["versionId"] = mustJSON(strconv.Itoa(version))
	meta["lastUpdated"] = mustJSON(lastUpdated.UTC().Format(time.RFC3339Nano))

	var ids []json.RawMessage
	if raw, ok := members.Get("identifier"); ok {
		if ids, err = withoutURL(raw, "system", SystemReportGUID); err != nil {
			return nil, errors.New("stored identifier is not an array")
		}
	}
	if d.ReportGUID != "" {
		ids = append(ids, mustJSON(fhir.Identifier{
			Type: &fhir.CodeableConcept{
				Coding: []fhir.Coding{{System: ptr(SystemV2IdentifierType), Code: ptr("FILL"), Display: ptr("Filler Identifier")}},
			},
			System: ptr(SystemReportGUID),
			Value:  ptr(d.ReportGUID),
		}))
	}
	var exts []json.RawMessage
	if raw, ok := members.Get("extension"); ok {
		if exts, err = withoutURL(raw, "url", ExtDeliveryState, ExtDeliveredAt, ExtDeliveryAttempts, ExtDeliveryLastError, ExtDeliveryNextAttempt); err != nil {
			return nil, errors.New("stored extension is not an array")
		}
	}
	exts = append(exts, mustJSON(fhir.Extension{Url: ExtDeliveryState, ValueCode: ptr(d.State)}))
	if d.DeliveredAt != nil && d.DeliveredAt.Year() >= 1 && d.DeliveredAt.Year() <= 9999 {
		exts = append(exts, mustJSON(fhir.Extension{Url: ExtDeliveredAt, ValueInstant: ptr(d.DeliveredAt.UTC().Format(time.RFC3339Nano))}))
	}
	if d.State == DeliveryPending || d.State == DeliveryFailed {
		if d.Attempts > 0 {
			exts = append(exts, mustJSON(fhir.Extension{Url: ExtDeliveryAttempts, ValueUnsignedInt: ptr(d.Attempts)}))
		}
		if d.LastErrorKind != "" && codeRE.MatchString(d.LastErrorKind) {
			exts = append(exts, mustJSON(fhir.Extension{Url: ExtDeliveryLastError, ValueCode: ptr(d.LastErrorKind)}))
		}
	}
	if d.State == DeliveryPending && d.NextAttemptAt != nil && d.NextAttemptAt.Year() >= 1 && d.NextAttemptAt.Year() <= 9999 {
		exts = append(exts, mustJSON(fhir.Extension{Url: ExtDeliveryNextAttempt, ValueInstant: ptr(d.NextAttemptAt.UTC().Format(time.RFC3339Nano))}))
	}

	var studies []json.RawMessage
	if raw, ok := members.Get("imagingStudy"); ok {
		if studies, err = withoutURL(raw, "reference", "ImagingStudy/"+studyID); err != nil {
			return nil, errors.New("stored imagingStudy is not an array")
		}
	}
	if studyID != "" {
		studies = append(studies, mustJSON(fhir.Reference{Reference: ptr("ImagingStudy/" + studyID), Type: ptr("ImagingStudy")}))
	}

	out := make(jsonw.Object, 0, len(members)+4)
	out = append(out,
		jsonw.Member{Key: "resourceType", Value: mustJSON("DiagnosticReport")},
		jsonw.Member{Key: "id", Value: mustJSON(id)},
		jsonw.Member{Key: "meta", Value: mustJSON(meta)})
	replaced := map[string]json.RawMessage{"extension": arrayOrNil(exts), "identifier": arrayOrNil(ids), "imagingStudy": arrayOrNil(studies)}
	for _, m := range members {
		switch m.Key {
		case "resourceType", "id", "meta":
			continue
		case "extension", "identifier", "imagingStudy":
			if v := replaced[m.Key]; v != nil {
				out = append(out, jsonw.Member{Key: m.Key, Value: v})
			}
			delete(replaced, m.Key)
			continue
		}
		out = append(out, m)
	}
	for _, k := range []string{"identifier", "imagingStudy", "extension"} {
		if v := replaced[k]; v != nil {
			out = append(out, jsonw.Member{Key: k, Value: v})
		}
	}
	return encodeObject(out)
}

// AttachmentRef is where the bridge keeps an attachment's bytes: a Binary
// it serves, with the size and SHA-1 of the bytes.
type AttachmentRef struct {
	URL  string
	Size int64
	SHA1 []byte
}

// ExternalizeArtifacts returns the DiagnosticReport JSON to store with
// presentedForm[i].data replaced by refs[i]: url, size and hash (R4
// Attachment.hash, base64 of the SHA-1) set, data removed. The report
// then serves a reference to its artifacts rather than megabytes of
// base64. Other members are kept in order; the result is compact JSON.
func ExternalizeArtifacts(resource []byte, refs map[int]AttachmentRef) (_ []byte, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("mapping.ExternalizeArtifacts: %w", err)
		}
	}()
	members, err := topLevel(resource)
	if err != nil {
		return nil, err
	}
	for k := range members {
		if members[k].Key != "presentedForm" {
			continue
		}
		var forms []json.RawMessage
		if err := json.Unmarshal(members[k].Value, &forms); err != nil {
			return nil, errors.New("presentedForm is not an array")
		}
		for i, ref := range refs {
			if i < 0 || i >= len(forms) {
				return nil, errors.New("no such presentedForm")
			}
			att, err := topLevel(forms[i])
			if err != nil {
				return nil, err
			}
			out := make(jsonw.Object, 0, len(att)+3)
			for _, m := range att {
				switch m.Key {
				case "data", "url", "size", "hash":
					continue
				}
				out = append(out, m)
			}
			out = append(out,
				jsonw.Member{Key: "url", Value: mustJSON(ref.URL)},
				jsonw.Member{Key: "size", Value: mustJSON(ref.Size)},
				jsonw.Member{Key: "hash", Value: mustJSON(ref.SHA1)}) // []byte marshals as base64
			if forms[i], err = encodeObject(out); err != nil {
				return nil, err
			}
		}
		members[k].Value = mustJSON(forms)
		return encodeObject(members)
	}
	if len(refs) > 0 {
		return nil, errors.New("no presentedForm")
	}
	return resource, nil
}

// encodeObject writes members as one compact JSON object.
func encodeObject(ms jsonw.Object) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(mustJSON(m.Key))
		b.WriteByte(':')
		if err := json.Compact(&b, m.Value); err != nil {
			return nil, errors.New("stored resource is not valid JSON")
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// topLevel splits a stored resource into its members (jsonw.Members).
func topLevel(b []byte) (jsonw.Object, error) {
	ms, err := jsonw.Members(b)
	if err != nil {
		return nil, fmt.Errorf("stored resource: %w", err)
	}
	return ms, nil
}

// withoutURL decodes a JSON array of objects and drops those whose field
// (system, url) is one of drop.
func withoutURL(raw json.RawMessage, field string, drop ...string) ([]json.RawMessage, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, err
	}
	kept := items[:0]
	for _, it := range items {
		var obj map[string]json.RawMessage
		var v string
		if json.Unmarshal(it, &obj) == nil && json.Unmarshal(obj[field], &v) == nil {
			dropped := false
			for _, d := range drop {
				dropped = dropped || v == d
			}
			if dropped {
				continue
			}
		}
		kept = append(kept, it)
	}
	return kept, nil
}

// arrayOrNil marshals a non-empty array; FHIR forbids empty ones.
func arrayOrNil(items []json.RawMessage) json.RawMessage {
	if len(items) == 0 {
		return nil
	}
	return mustJSON(items)
}

// mustJSON marshals values that cannot fail to marshal (strings, maps of
// raw JSON, models of strings).
func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic("mapping: marshalling " + fmt.Sprintf("%T", v) + ": " + err.Error())
	}
	return b
}
