package server

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

var communicationSearch = fhir.SearchSpec{
	Resource: "Communication",
	Params: []fhir.ParamSpec{
		{Name: "based-on", Type: "reference", Documentation: "ServiceRequest/{id}: the study's appointment comments and its patient's comments, alerts included."},
		{Name: "patient", Type: "reference", Documentation: "Patient/{id}: comments of every pending study of the patient."},
		{Name: "subject", Type: "reference", Documentation: "Patient/{id}."},
	},
}

var flagSearch = fhir.SearchSpec{
	Resource: "Flag",
	Params: []fhir.ParamSpec{
		{Name: "patient", Type: "reference", Documentation: "Patient/{id}: alerts of the patient and of their pending studies."},
		{Name: "subject", Type: "reference", Documentation: "Patient/{id}."},
	},
}

// commentView is one QUBS comment as listed through one appointment.
type commentView struct {
	appt    *qubs.Appointment
	comment qubs.Comment
}

// comments lists the comments of the appointments a search names. A
// patient-level comment shows through each appointment of the patient;
// it is kept once, through the first, so a patient search does not repeat
// it.
func (s *Server) comments(c *gin.Context, q *fhir.Query, resource, srParam string) ([]commentView, error) {
	appts, err := s.searchAppointments(c, q, resource, srParam)
	if err != nil {
		return nil, err
	}
	var out []commentView
	seen := map[string]bool{}
	for i := range appts {
		a := &appts[i]
		cs, err := s.cfg.QUBS.ListComments(c.Request.Context(), domainOf(c), a.AppointmentID)
		if qubs.KindOf(err) == qubs.KindNotFound {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, cm := range cs {
			if seen[cm.GUID] {
				continue
			}
			seen[cm.GUID] = true
			out = append(out, commentView{appt: a, comment: cm})
		}
	}
	return out, nil
}

func (s *Server) searchCommunications(c *gin.Context) error {
	q, err := fhir.ParseSearch(c.Request.URL.Query(), c.GetHeader("Prefer"), communicationSearch, defaultCount, maxCount)
	if err != nil {
		return err
	}
	views, err := s.comments(c, q, "Communication", "based-on")
	if err != nil {
		return err
	}
	bundle, base := s.searchBundle(c, "Communication", q)
	skipped := 0
	for _, v := range views {
		body, id, err := communication(v.appt, v.comment)
		if unrepresentable(err) {
			skipped++
			continue
		}
		if err != nil {
			return err
		}
		bundle.AddMatch(base+"/Communication/"+id, body)
		disclose(c, "Communication/"+id, patientRefOf(v.appt))
	}
	s.noteSkipped(c, bundle, skipped, "comments")
	s.write(c, http.StatusOK, bundle)
	return nil
}

func communication(a *qubs.Appointment, cm qubs.Comment) (json.RawMessage, string, error) {
	m, err := mapping.CommunicationFromComment(a.AppointmentID, mapping.PatientID(a), cm)
	if err != nil {
		return nil, "", fmt.Errorf("mapping comment: %w", err)
	}
	b, err := encode(m)
	if err != nil {
		return nil, "", fmt.Errorf("encoding Communication: %w", err)
	}
	return b, deref(m.Id), nil
}

func (s *Server) searchFlags(c *gin.Context) error {
	q, err := fhir.ParseSearch(c.Request.URL.Query(), c.GetHeader("Prefer"), flagSearch, defaultCount, maxCount)
	if err != nil {
		return err
	}
	views, err := s.comments(c, q, "Flag", "")
	if err != nil {
		return err
	}
	bundle, base := s.searchBundle(c, "Flag", q)
	skipped := 0
	for _, v := range views {
		if !mapping.IsAlert(v.comment) {
			continue
		}
		f, err := mapping.FlagFromComment(v.appt.AppointmentID, mapping.PatientID(v.appt), v.comment)
		if unrepresentable(err) {
			skipped++
			continue
		}
		if err != nil {
			return fmt.Errorf("mapping alert: %w", err)
		}
		b, err := encode(f)
		if err != nil {
			return err
		}
		bundle.AddMatch(base+"/Flag/"+deref(f.Id), b)
		disclose(c, "Flag/"+deref(f.Id), patientRefOf(v.appt))
	}
	s.noteSkipped(c, bundle, skipped, "alerts")
	s.write(c, http.StatusOK, bundle)
	return nil
}

// comment fetches one comment through its appointment; nil when QUBS does
// not know either.
func (s *Server) comment(c *gin.Context, apptID, guid string) (*qubs.Appointment, *qubs.Comment, error) {
	ctx, domain := c.Request.Context(), domainOf(c)
	a, err := s.cfg.QUBS.GetPending(ctx, domain, apptID)
	if qubs.KindOf(err) == qubs.KindNotFound {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	cm, err := s.cfg.QUBS.GetComment(ctx, domain, apptID, guid)
	if qubs.KindOf(err) == qubs.KindNotFound {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return a, cm, nil
}

func (s *Server) readCommunication(c *gin.Context) error {
	id := c.Param("id")
	appt, guid, err := mapping.ParseCommunicationID(id)
	if err != nil {
		return fhir.Errorf(http.StatusNotFound, "not-found", "Communication/%s is not known", id)
	}
	a, cm, err := s.comment(c, appt, guid)
	if err != nil {
		return err
	}
	if a == nil {
		return fhir.Errorf(http.StatusNotFound, "not-found", "Communication/%s is not known, or its study is no longer pending reporting", id)
	}
	body, cid, err := communication(a, *cm)
	if err != nil {
		return err
	}
	disclose(c, "Communication/"+cid, patientRefOf(a))
	s.writeRaw(c, http.StatusOK, body)
	return nil
}

func (s *Server) readFlag(c *gin.Context) error {
	id := c.Param("id")
	appt, guid, err := mapping.ParseFlagID(id)
	if err != nil {
		return fhir.Errorf(http.StatusNotFound, "not-found", "Flag/%s is not known", id)
	}
	a, cm, err := s.comment(c, appt, guid)
	if err != nil {
		return err
	}
	if a == nil || !mapping.IsAlert(*cm) {
		return fhir.Errorf(http.StatusNotFound, "not-found", "Flag/%s is not known", id)
	}
	f, err := mapping.FlagFromComment(a.AppointmentID, mapping.PatientID(a), *cm)
	if err != nil {
		return fmt.Errorf("mapping alert: %w", err)
	}
	disclose(c, "Flag/"+deref(f.Id), patientRefOf(a))
	s.write(c, http.StatusOK, f)
	return nil
}

// createCommunication posts a comment or alert to QUBS at once. The QUBS
// Idempotency-Key follows from the client's Idempotency-Key, else the
// content, so a retry within QUBS's 24 hours creates no second comment.
func (s *Server) createCommunication(c *gin.Context) error {
	ctx, domain := c.Request.Context(), domainOf(c)
	body, m, err := readInbound[models.Communication](s, c, "Communication")
	if err != nil {
		return err
	}
	in, issues := mapping.CommentFromFHIR(m)
	if err := mappingError(issues); err != nil {
		return err
	}
	k, err := idempotencyKey(c, body)
	if err != nil {
		return err
	}
	a, err := s.writeTarget(c, in.AppointmentID, in.PatientID, "Communication.basedOn", mapping.CommunicationID)
	if err != nil {
		return err
	}
	cm, err := s.cfg.QUBS.CreateComment(ctx, domain, in.AppointmentID, in.Comment, qubsKey("qfb-comment", domain, k))
	switch qubs.KindOf(err) {
	case qubs.KindNotFound:
		s.indexGone(c, domain, in.AppointmentID)
		return appointmentGone("Communication.basedOn")
	case qubs.KindConflict:
		return fhir.Errorf(http.StatusUnprocessableEntity, "business-rule", "this Idempotency-Key was used with a different Communication")
	}
	if err != nil {
		return err
	}
	if a == nil {
		// QUBS could not be asked before; it answers now.
		if a, err = s.cfg.QUBS.GetPending(ctx, domain, in.AppointmentID); err != nil {
			return err
		}
	}
	// The study changed in QUBS (a comment on it): its index row follows
	// from the appointment this write read, with no further QUBS call.
	s.indexSaw(c, domain, a)
	out, id, err := communication(a, *cm)
	if err != nil {
		return err
	}
	disclose(c, "Communication/"+id, patientRefOf(a))
	s.commentEvent(c, in.AppointmentID, cm, id, out)
	base := fhir.BaseURL(c.Request, s.cfg.PublicURL, domain)
	s.respondWrite(c, http.StatusCreated, base+"/Communication/"+id, 0, timeOr(cm.LastModifiedDateTime), out, "comment created in QUBS")
	return nil
}
