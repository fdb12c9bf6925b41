package mapping

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// contentTypes maps lower-case file extensions to media types. It is a
// fixed table rather than mime.TypeByExtension, which reads the host's
// mime.types: the same attachment must get the same contentType on every
// machine.
var contentTypes = map[string]string{
	".pdf":   qubs.ContentTypePDF,
	".dcm":   qubs.ContentTypeDICOM,
	".dicom": qubs.ContentTypeDICOM,
	".jpg":   "image/jpeg",
	".jpeg":  "image/jpeg",
	".png":   "image/png",
	".gif":   "image/gif",
	".bmp":   "image/bmp",
	".tif":   "image/tiff",
	".tiff":  "image/tiff",
	".webp":  "image/webp",
	".txt":   "text/plain",
	".htm":   "text/html",
	".html":  "text/html",
	".rtf":   "application/rtf",
	".xml":   "application/xml",
	".doc":   "application/msword",
	".docx":  "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
	".odt":   "application/vnd.oasis.opendocument.text",
	".zip":   "application/zip",
}

// ContentTypeForFileName is the media type of a QUBS attachment, which
// QUBS does not record: from the file name's last extension, ignoring
// case; application/octet-stream when there is none or it is unknown.
func ContentTypeForFileName(name string) string {
	if i := strings.LastIndexByte(name, '.'); i >= 0 && !strings.ContainsAny(name[i:], `/\`) {
		if ct, ok := contentTypes[strings.ToLower(name[i:])]; ok {
			return ct
		}
	}
	return "application/octet-stream"
}

// docType is DocumentReference.type for a QUBS attachment category.
//
//   - Referral: LOINC 57133-1 "Referral note", the LOINC document type
//     for a referral, and 107903-7 "Clinical note", the code AU eRequesting
//     puts on its clinical-context DocumentReference (DESIGN.md asks for
//     it; it names a class of notes, not a referral, hence the pair).
//   - report (QUBS's category for report artifacts): LOINC 18748-4
//     "Diagnostic imaging study", the LOINC document type of imaging
//     reports, as IHE XDS-I and most radiology FHIR servers use it.
//   - anything else (Worksheet, ...): text only. No LOINC code fits a
//     practice's internal worksheet, and a code that does not fit is worse
//     than none.
//
// type.text is always the QUBS category; nil when there is none.
func docType(category string) *fhir.CodeableConcept {
	if category == "" {
		return nil
	}
	cc := &fhir.CodeableConcept{Text: ptr(category)}
	switch normKey(category) {
	case "REFERRAL", "REFERRALS", "REFERRAL LETTER":
		cc.Coding = []fhir.Coding{
			{System: ptr(SystemLOINC), Code: ptr("57133-1"), Display: ptr("Referral note")},
			{System: ptr(SystemLOINC), Code: ptr("107903-7"), Display: ptr("Clinical note")},
		}
	case "REPORT":
		cc.Coding = []fhir.Coding{{System: ptr(SystemLOINC), Code: ptr("18748-4"), Display: ptr("Diagnostic imaging study")}}
	}
	return cc
}

// DocumentReferenceFromAttachment maps an appointment attachment (a
// referral, a worksheet, a report artifact); MAPPING.md is the table.
// appointmentID is the QUBS appointment id; patientID is the FHIR id of
// the appointment's Patient (PatientID), "" for none; binaryURL is where
// the bridge serves the bytes (its Binary of the same id), "" to leave
// content.attachment.url out.
//
// QUBS's presigned url and urlExpiresAtUtc are deliberately left out: the
// url is a short-lived bearer capability to the file, and the bridge's own
// Binary replaces it. Everything else is recoverable from the output.
//
// It fails with ErrUnrepresentable when the appointment id and guid do not
// fit in a FHIR id, and for a patientID that is not a FHIR id.
func DocumentReferenceFromAttachment(appointmentID, patientID string, a qubs.Attachment, binaryURL string) (*fhir.DocumentReference, error) {
	id, err := DocumentReferenceID(appointmentID, a.GUID)
	if err != nil {
		return nil, fmt.Errorf("mapping attachment: %w", err)
	}
	if patientID != "" && !validID(patientID) {
		return nil, errors.New("mapping attachment: patient id is not a FHIR id")
	}
	if strings.ContainsFunc(binaryURL, unicode.IsSpace) {
		return nil, errors.New("mapping attachment: binary URL holds whitespace")
	}
	srID, _ := ServiceRequestID(appointmentID) // cannot fail: the id above did not
	var f fixer
	d := &fhir.DocumentReference{
		Id:         &id,
		Status:     fhir.DocumentReferenceStatusCurrent,
		Identifier: []fhir.Identifier{{System: ptr(SystemAttachmentGUID), Value: ptr(f.str("guid", a.GUID))}},
		Subject:    patientRef(patientID),
		Context:    &fhir.DocumentReferenceContext{Related: []fhir.Reference{serviceRequestRef(srID)}},
	}
	if lm := f.when("lastModifiedDateTime", a.LastModifiedDateTime); lm != nil {
		d.Meta = &fhir.Meta{LastUpdated: lm}
	}
	if category := f.strp("category", a.Category); category != nil {
		d.Type = docType(*category)
		d.Category = []fhir.CodeableConcept{{Text: category}}
	}
	added := f.when("addedDateTime", a.AddedDateTime)
	d.Date = added
	if author := userReference(&f, "addedBy", a.AddedBy); author != nil {
		d.Author = []fhir.Reference{*author}
	}
	fileName := f.strp("fileName", a.FileName)
	att := fhir.Attachment{
		ContentType: ptr(ContentTypeForFileName(a.FileName)),
		Title:       fileName,
		Creation:    added,
	}
	if binaryURL != "" {
		att.Url = &binaryURL
	}
	d.Content = []fhir.DocumentReferenceContent{{Attachment: att}}
	d.Extension = f.orig
	return d, nil
}

// DocumentInput is a DocumentReference a client posted: one report
// artifact for QUBS, uploaded through "Create upload URLs" and a PUT.
type DocumentInput struct {
	// AppointmentID is the QUBS appointment, from context.related.
	AppointmentID string
	// PatientID is the FHIR Patient id from subject, "" when absent; the
	// server checks it is the appointment's patient.
	PatientID string
	// Artifact is content[0].attachment. Its Index is 0.
	Artifact ArtifactInput
}

// DocumentFromFHIR reads a DocumentReference create: status current,
// context.related with exactly one ServiceRequest, an optional Patient
// subject, and exactly one content whose attachment is a PDF or DICOM
// file (application/pdf, application/dicom) given as inline base64 data
// of at most qubs.MaxUploadBytes or as a url to a Binary of this server.
// title becomes the file name as for DiagnosticReport artifacts. Other
// elements (type, category, description, ...) stay in the stored resource
// only: QUBS files every upload as category "report".
//
// It returns every issue found, and a nil input when there is any.
func DocumentFromFHIR(d *fhir.DocumentReference) (*DocumentInput, []Issue) {
	const root = "DocumentReference"
	if d == nil {
		return nil, []Issue{{Code: codeStructure, Status: 400, Expression: root, Message: "no DocumentReference"}}
	}
	var is issues
	in := &DocumentInput{}
	if d.Status != fhir.DocumentReferenceStatusCurrent {
		is.add(codeValue, 422, root+".status", "status must be current to add a document")
	}
	if d.Context == nil {
		is.add(codeRequired, 422, root+".context.related", "a reference to the ServiceRequest (the QUBS appointment) is required")
	} else {
		in.AppointmentID = appointmentFrom(d.Context.Related, root+".context.related", &is)
	}
	in.PatientID = patientFrom(d.Subject, root+".subject", &is)
	switch len(d.Content) {
	case 0:
		is.add(codeRequired, 422, root+".content", "content is required")
	default:
		for i := 1; i < len(d.Content); i++ {
			is.add(codeNotSupported, 422, idx(root+".content", i), "one content per DocumentReference: QUBS stores one file per attachment")
		}
		path := root + ".content[0].attachment"
		att := d.Content[0].Attachment
		if mt, _, ok := mediaType(att, path, &is); ok {
			if _, ok := artifactExt[mt]; ok {
				in.Artifact = artifact(att, mt, 0, 1, path, &is)
				checkSameAppointment(in.Artifact, in.AppointmentID, path, &is)
			} else {
				is.add(codeNotSupported, 422, path+".contentType", "QUBS accepts application/pdf and application/dicom documents only")
			}
		}
	}
	if len(is) > 0 {
		return nil, is
	}
	return in, nil
}

// checkSameAppointment refuses an artifact that points at a Binary of
// another appointment: copying a file between appointments could copy it
// between patients.
func checkSameAppointment(a ArtifactInput, appointmentID, path string, is *issues) {
	if a.BinaryID == "" || appointmentID == "" {
		return
	}
	if appt, _, err := ParseBinaryID(a.BinaryID); err == nil && appt != appointmentID {
		is.add(codeValue, 422, path+".url", "the Binary belongs to another appointment")
	}
}
