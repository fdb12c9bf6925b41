package mapping

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// commentTypeDisplay is the display of each code of SystemCommentType, the
// names the QUBS documentation gives them.
var commentTypeDisplay = map[qubs.CommentType]string{
	qubs.CommentAppointment:      "Appointment Comment",
	qubs.CommentAppointmentAlert: "Appointment Alert",
	qubs.CommentPatient:          "Patient Comment",
	qubs.CommentPatientAlert:     "Patient Alert",
}

// IsAlert reports whether a comment is an alert, and so also a Flag:
// isAlert set, or type AA or PA. QUBS keeps the two consistent; should it
// not, the bridge errs towards showing the alert, as a hidden alert (a
// contrast allergy, say) costs more than a needless one.
func IsAlert(c qubs.Comment) bool {
	return c.IsAlert || c.CommentType == qubs.CommentAppointmentAlert || c.CommentType == qubs.CommentPatientAlert
}

// ErrNotAlert is returned by FlagFromComment for a comment that is not an
// alert.
var ErrNotAlert = errors.New("mapping: comment is not an alert")

// Communication is a samply Communication that marshals correctly. The
// samply payload has its three content[x] choices as plain fields without
// omitempty, so a payload marshals as all three (two of them empty
// objects), which is not valid FHIR; Communication writes only the one
// that is set. It unmarshals as the samply model does.
type Communication struct {
	fhir.Communication
}

// MarshalJSON writes the Communication with each payload's one content[x].
func (c Communication) MarshalJSON() ([]byte, error) {
	plain := c.Communication
	plain.Payload = nil
	b, err := json.Marshal(plain)
	if err != nil || len(c.Payload) == 0 {
		return b, err
	}
	type payload struct {
		ID                *string          `json:"id,omitempty"`
		Extension         []fhir.Extension `json:"extension,omitempty"`
		ModifierExtension []fhir.Extension `json:"modifierExtension,omitempty"`
		ContentString     *string          `json:"contentString,omitempty"`
		ContentAttachment *fhir.Attachment `json:"contentAttachment,omitempty"`
		ContentReference  *fhir.Reference  `json:"contentReference,omitempty"`
	}
	ps := make([]payload, len(c.Payload))
	for i, p := range c.Payload {
		ps[i] = payload{ID: p.Id, Extension: p.Extension, ModifierExtension: p.ModifierExtension}
		switch {
		case p.ContentString != "":
			ps[i].ContentString = ptr(p.ContentString)
		case !reflect.ValueOf(p.ContentAttachment).IsZero():
			ps[i].ContentAttachment = ptr(p.ContentAttachment)
		case !reflect.ValueOf(p.ContentReference).IsZero():
			ps[i].ContentReference = ptr(p.ContentReference)
		}
	}
	pb, err := json.Marshal(ps)
	if err != nil {
		return nil, err
	}
	// b is a JSON object with at least resourceType: splice the payload
	// in before its closing brace.
	out := make([]byte, 0, len(b)+len(pb)+12)
	out = append(out, b[:len(b)-1]...)
	out = append(out, `,"payload":`...)
	out = append(out, pb...)
	return append(out, '}'), nil
}

// CommunicationFromComment maps an appointment or patient comment listed
// through the appointment appointmentID; MAPPING.md is the table.
// patientID is the FHIR id of the appointment's Patient (PatientID), ""
// for none.
//
// It fails with ErrUnrepresentable when the appointment id and guid do not
// fit in a FHIR id, and for a patientID that is not a FHIR id.
func CommunicationFromComment(appointmentID, patientID string, c qubs.Comment) (*Communication, error) {
	id, srID, err := commentIDs(appointmentID, patientID, c)
	if err != nil {
		return nil, err
	}
	var f fixer
	m := &Communication{fhir.Communication{
		Id:         &id,
		Identifier: []fhir.Identifier{{System: ptr(SystemCommentGUID), Value: ptr(f.str("guid", c.GUID))}},
		BasedOn:    []fhir.Reference{serviceRequestRef(srID)},
		Status:     fhir.EventStatusCompleted,
		Category:   commentCategory(&f, c.CommentType),
		Subject:    commentSubject(&f, patientID, c.PatientID),
		Sent:       f.when("commentDateTime", c.CommentDateTime),
		Sender:     userReference(&f, "commentBy", c.CommentBy),
	}}
	if lm := f.when("lastModifiedDateTime", c.LastModifiedDateTime); lm != nil {
		m.Meta = &fhir.Meta{LastUpdated: lm}
	}
	if c.CommentText != "" {
		m.Payload = []fhir.CommunicationPayload{{ContentString: f.str("commentText", c.CommentText)}}
	}
	ext := []fhir.Extension{{Url: ExtIsAlert, ValueBoolean: ptr(c.IsAlert)}}
	switch c.AppointmentID {
	case appointmentID:
	case "":
		ext = append(ext, fhir.Extension{Url: ExtPatientLevel, ValueBoolean: ptr(true)})
	default:
		// An appointment comment listed through another appointment:
		// QUBS should not do it, and the bridge keeps what it sent.
		ext = append(ext, fhir.Extension{Url: ExtCommentAppointmentID, ValueString: ptr(f.str("appointmentId", c.AppointmentID))})
	}
	m.Extension = append(ext, f.orig...)
	return m, nil
}

// FlagFromComment maps an alert (IsAlert) listed through the appointment
// appointmentID to a Flag; MAPPING.md is the table. The Flag is a view for
// alerting systems: the Communication of the same id holds the comment in
// full, and the Flag points to it (flag-detail).
//
// It fails with ErrNotAlert for a comment that is not an alert, and as
// CommunicationFromComment does.
func FlagFromComment(appointmentID, patientID string, c qubs.Comment) (*fhir.Flag, error) {
	if !IsAlert(c) {
		return nil, ErrNotAlert
	}
	id, srID, err := commentIDs(appointmentID, patientID, c)
	if err != nil {
		return nil, err
	}
	var f fixer
	fl := &fhir.Flag{
		Id:         &id,
		Identifier: []fhir.Identifier{{System: ptr(SystemCommentGUID), Value: ptr(f.str("guid", c.GUID))}},
		Status:     fhir.FlagStatusActive,
		// No flag-category code: an alert's text may be clinical (a
		// contrast allergy) or administrative (wheelchair access), and
		// the bridge cannot tell which.
		Category: commentCategory(&f, c.CommentType),
		Author:   userReference(&f, "commentBy", c.CommentBy),
	}
	if lm := f.when("lastModifiedDateTime", c.LastModifiedDateTime); lm != nil {
		fl.Meta = &fhir.Meta{LastUpdated: lm}
	}
	if c.CommentText != "" {
		fl.Code = fhir.CodeableConcept{Text: ptr(f.str("commentText", c.CommentText))}
	} else {
		// code is 1..1 and QUBS sent no text.
		fl.Code = fhir.CodeableConcept{Text: ptr("Alert"), Extension: []fhir.Extension{{Url: ExtDerivedText, ValueBoolean: ptr(true)}}}
	}
	if s := commentSubject(&f, patientID, c.PatientID); s != nil {
		fl.Subject = *s
	} else {
		// subject is 1..1: say why it is empty rather than invent one.
		fl.Subject = fhir.Reference{Extension: []fhir.Extension{{Url: ExtDataAbsentReason, ValueCode: ptr("unknown")}}}
	}
	if start := f.when("commentDateTime", c.CommentDateTime); start != nil {
		fl.Period = &fhir.Period{Start: start}
	}
	sr := serviceRequestRef(srID)
	fl.Extension = append([]fhir.Extension{
		{Url: ExtFlagServiceRequest, ValueReference: &sr},
		{Url: ExtFlagDetail, ValueReference: &fhir.Reference{Reference: ptr("Communication/" + id), Type: ptr("Communication")}},
	}, f.orig...)
	return fl, nil
}

// commentIDs checks the arguments and returns the comment's resource id
// and the ServiceRequest id.
func commentIDs(appointmentID, patientID string, c qubs.Comment) (id, srID string, err error) {
	if id, err = CommunicationID(appointmentID, c.GUID); err != nil {
		return "", "", fmt.Errorf("mapping comment: %w", err)
	}
	if patientID != "" && !validID(patientID) {
		return "", "", errors.New("mapping comment: patient id is not a FHIR id")
	}
	srID, _ = ServiceRequestID(appointmentID) // cannot fail: the id above did not
	return id, srID, nil
}

// commentCategory is the comment type: a coding of SystemCommentType for
// the four documented types, text only for anything else QUBS sends.
func commentCategory(f *fixer, t qubs.CommentType) []fhir.CodeableConcept {
	switch {
	case t.Valid():
		return []fhir.CodeableConcept{{Coding: []fhir.Coding{{
			System: ptr(SystemCommentType), Code: ptr(string(t)), Display: ptr(commentTypeDisplay[t]),
		}}}}
	case t != "":
		return []fhir.CodeableConcept{{Text: ptr(f.str("commentType", string(t)))}}
	}
	return nil
}

// commentSubject is the Patient: the reference to the appointment's
// Patient, and the comment's own patientId as the reference's identifier,
// so it is kept exactly even where it would differ.
func commentSubject(f *fixer, patientID, qubsPatientID string) *fhir.Reference {
	r := patientRef(patientID)
	if qubsPatientID != "" {
		if r == nil {
			r = &fhir.Reference{Type: ptr("Patient")}
		}
		r.Identifier = &fhir.Identifier{System: ptr(SystemPatientID), Value: ptr(f.str("patientId", qubsPatientID))}
	}
	return r
}

// CommentInput is a Communication a client posted, as a QUBS comment to
// create on an appointment.
type CommentInput struct {
	// AppointmentID is the QUBS appointment, from basedOn.
	AppointmentID string
	// PatientID is the FHIR Patient id from subject, "" when absent; the
	// server checks it is the appointment's patient.
	PatientID string
	// Comment is the body of "Create a comment".
	Comment qubs.NewComment
}

// CommentFromFHIR reads a Communication create: status completed;
// exactly one payload, a non-blank contentString (the comment text);
// basedOn with exactly one ServiceRequest; an optional Patient subject;
// sent, a dateTime with a time, as commentDateTime.
//
// The comment type comes from a category coding in SystemCommentType
// (AC, AA, PC, PA); alerts are AA and PA, and isAlert is sent to agree
// with the type, because QUBS documents what the type defaults to but not
// what isAlert does when a type is given. ExtIsAlert is accepted too (so a
// Communication the bridge served can be posted back) and must agree;
// alone, true means AA. Without either, QUBS's default (AC) applies.
// priority does not make an alert: QUBS alerts are about what to be aware
// of, not urgency. Other elements stay in the client's resource only.
//
// It returns every issue found, and a nil input when there is any.
func CommentFromFHIR(c *fhir.Communication) (*CommentInput, []Issue) {
	const root = "Communication"
	if c == nil {
		return nil, []Issue{{Code: codeStructure, Status: 400, Expression: root, Message: "no Communication"}}
	}
	var is issues
	in := &CommentInput{}
	if c.Status != fhir.EventStatusCompleted {
		is.add(codeValue, 422, root+".status", "status must be completed: QUBS records comments that were made")
	}
	in.AppointmentID = appointmentFrom(c.BasedOn, root+".basedOn", &is)
	in.PatientID = patientFrom(c.Subject, root+".subject", &is)

	switch len(c.Payload) {
	case 0:
		is.add(codeRequired, 422, root+".payload", "a payload with contentString (the comment text) is required")
	default:
		for i := 1; i < len(c.Payload); i++ {
			is.add(codeNotSupported, 422, idx(root+".payload", i), "one payload per Communication: a QUBS comment is one text")
		}
		p := c.Payload[0]
		switch {
		case strings.TrimFunc(p.ContentString, unicode.IsSpace) != "":
			in.Comment.CommentText = p.ContentString
		case p.ContentString != "":
			is.add(codeValue, 422, root+".payload[0].contentString", "comment text must not be blank")
		default:
			is.add(codeNotSupported, 422, root+".payload[0]", "the payload must be contentString: QUBS comments are text")
		}
	}

	var typ *qubs.CommentType
	for i, cc := range c.Category {
		for j, cd := range cc.Coding {
			if val(cd.System) != SystemCommentType {
				continue
			}
			path := idx(idx(root+".category", i)+".coding", j) + ".code"
			t := qubs.CommentType(val(cd.Code))
			switch {
			case !t.Valid():
				is.add(codeCodeInvalid, 422, path, "comment type must be AC, AA, PC or PA")
			case typ != nil && *typ != t:
				is.add(codeValue, 422, path, "two different comment types")
			default:
				typ = &t
			}
		}
	}
	var alertExt *bool
	for i, e := range c.Extension {
		if e.Url == ExtIsAlert {
			if e.ValueBoolean == nil {
				is.add(codeValue, 422, idx(root+".extension", i), "the is-alert extension takes valueBoolean")
				continue
			}
			alertExt = e.ValueBoolean
		}
	}
	switch {
	case typ != nil:
		alert := *typ == qubs.CommentAppointmentAlert || *typ == qubs.CommentPatientAlert
		if alertExt != nil && *alertExt != alert {
			is.add(codeValue, 422, root+".extension", "the is-alert extension contradicts the comment type")
		}
		in.Comment.CommentType, in.Comment.IsAlert = typ, &alert
	case alertExt != nil && *alertExt:
		in.Comment.CommentType, in.Comment.IsAlert = ptr(qubs.CommentAppointmentAlert), ptr(true)
	case alertExt != nil:
		in.Comment.CommentType, in.Comment.IsAlert = ptr(qubs.CommentAppointment), ptr(false)
	}

	if c.Sent != nil {
		t, err := time.Parse(time.RFC3339Nano, *c.Sent)
		if err != nil || !strings.ContainsRune(*c.Sent, 'T') {
			is.add(codeValue, 422, root+".sent", "sent must be a dateTime with a time and zone: QUBS takes an instant")
		} else {
			t = t.UTC()
			in.Comment.CommentDateTime = &t
		}
	}
	if len(is) > 0 {
		return nil, is
	}
	return in, nil
}
