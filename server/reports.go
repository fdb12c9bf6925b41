package server

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// diagnosticReportSearch is what DiagnosticReport search understands.
var diagnosticReportSearch = fhir.SearchSpec{
	Resource: "DiagnosticReport",
	Params: []fhir.ParamSpec{
		{Name: "based-on", Type: "reference", Documentation: "ServiceRequest/{id}: reports for a study."},
		{Name: "patient", Type: "reference", Documentation: "Patient/{id}."},
		{Name: "subject", Type: "reference", Documentation: "Patient/{id}."},
		{Name: "status", Type: "token", Documentation: "Status as the client sent it (preliminary, final, amended, ...)."},
		{Name: cursorParam, Type: "special", Documentation: "Opaque paging position; use the next link."},
		paramSort, paramTotal, paramSummary,
	},
}

// createDiagnosticReport accepts a report for QUBS: strict R4 validation,
// the mapping rules, the appointment still pending, then the report and
// its delivery job stored in one transaction. Delivery to QUBS happens
// after the answer, so a report is accepted while QUBS is down; its
// delivery state is part of the resource served back.
func (s *Server) createDiagnosticReport(c *gin.Context) error {
	ctx, domain := c.Request.Context(), domainOf(c)
	rd, err := s.readStreamed(c, "DiagnosticReport", "presentedForm", c.GetHeader("Idempotency-Key") == "")
	if err != nil {
		return err
	}
	in, issues := mapping.ReportFromJSONInline(rd.view, rd.inline())
	if err := mappingError(issues); err != nil {
		return err
	}
	if cond := c.GetHeader("If-None-Exist"); cond != "" {
		// Conditional create (FHIR R4 3.1.0.8.1): the condition is a
		// DiagnosticReport search; one match is the answer, several are a
		// 412, none means create.
		existing, err := s.conditionalMatch(c, cond)
		if err != nil || existing != nil {
			if existing != nil {
				return s.respondReport(c, http.StatusOK, existing, "the If-None-Exist condition matched this report")
			}
			return err
		}
	}
	k, err := idempotencyKeyOr(c, rd.sum)
	if err != nil {
		return err
	}
	// The id follows from the client's key (or the content), so a retry,
	// or two replicas racing on one retried request, compute the same id
	// and the store lets exactly one create it. Nothing is recorded before
	// the report is stored, so a refused attempt leaves no trace to replay.
	id := "dr-" + hashHex([]byte(domain), []byte(k.kind), []byte(k.key))[:40]
	resource, inline, err := s.storedReport(c, id, in, rd)
	if err != nil {
		return err
	}
	r, err := s.buildReport(c, id, in, resource, inline)
	if err != nil {
		// A retry gets the first answer again, whatever QUBS says now
		// (the appointment may be closed since). The store is asked here,
		// when a check fails, and on a conflict below, rather than before
		// every create: a first create, the common case, then costs no
		// read.
		if done, rerr := s.replayReport(c, id, k, resource); done || rerr != nil {
			return rerr
		}
		return err
	}
	r.Domain, r.ID = domain, id
	err = s.storeAudited(c, r, http.StatusCreated, func(r *store.Report) error { return s.cfg.Store.CreateReport(ctx, r) })
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			if done, err := s.replayReport(c, id, k, resource); done || err != nil {
				return err
			}
		}
		return fmt.Errorf("storing report: %w", err)
	}
	s.accepted(r)
	return s.respondReport(c, http.StatusCreated, r, "report accepted; delivery to QUBS is under way")
}

// inlineArtifact is an artifact the client sent inline, as stored: served
// as Binary/binaryID.
type inlineArtifact struct {
	binaryID string
	sha256   string
}

// storedReport is the resource to store for report id: each artifact sent
// inline becomes a url to the Binary that serves its bytes from the store
// ("Binary/dra-...", made absolute when served), with its size and hash,
// so the stored, served and echoed report is small; other base64 values
// (report text) stay as sent.
//
// A Binary id is "dra-" and a hash of (domain, report, presentedForm
// index, bytes): it cannot be a QUBS attachment's (those carry a ".") or
// a client Binary's ("bin-"), and the same bytes sent again for the same
// report (a retried create, a PUT of the same content) name the same
// Binary, so retries compare equal.
func (s *Server) storedReport(c *gin.Context, id string, in *mapping.ReportInput, rd *streamed) ([]byte, map[int]inlineArtifact, error) {
	domain := domainOf(c)
	refs := map[int]mapping.AttachmentRef{}
	inline := map[int]inlineArtifact{}
	for _, a := range in.Artifacts {
		if a.BinaryID != "" || a.Data == nil {
			continue
		}
		// Hashed as they were decoded (readStreamed), not here again.
		sum1, sum, ok := rd.digests(a.Data)
		if !ok {
			s256 := sha256.Sum256(a.Data)
			sum1, sum = sha1Sum(a.Data), s256[:]
		}
		bid := "dra-" + hashHex([]byte(domain), []byte(id), []byte(strconv.Itoa(a.Index)), sum)[:40]
		inline[a.Index] = inlineArtifact{binaryID: bid, sha256: hex.EncodeToString(sum)}
		// Relative in the store, absolute when served (reportBody).
		refs[a.Index] = mapping.AttachmentRef{URL: "Binary/" + bid, Size: int64(len(a.Data)), SHA1: sum1}
	}
	var lost []int
	resource := rd.sp.Fill(func(d *fhir.InlineData) []byte {
		switch _, ext := refs[d.Index]; {
		case ext:
			return []byte(`""`) // dropped below
		case d.Raw != nil:
			return d.Raw
		case d.Data != nil:
			// Too long to keep as sent: the same bytes, in canonical base64.
			return []byte(strconv.Quote(base64.StdEncoding.EncodeToString(d.Data)))
		}
		lost = append(lost, d.Index)
		return []byte(`""`)
	})
	if len(lost) > 0 {
		// Only a second text rendition escapes the mapping's checks: one
		// over the size the bridge decodes cannot be kept.
		return nil, nil, &fhir.Error{Status: http.StatusRequestEntityTooLarge, Issues: []fhir.Issue{{Severity: "error", Code: "too-costly",
			Expression:  []string{"DiagnosticReport.presentedForm[" + strconv.Itoa(lost[0]) + "].data"},
			Diagnostics: fmt.Sprintf("inline data may be at most %d bytes", inlineLimit)}}}
	}
	if len(refs) == 0 {
		return resource, inline, nil
	}
	out, err := mapping.ExternalizeArtifacts(resource, refs)
	if err != nil {
		return nil, nil, fmt.Errorf("storing artifacts by reference: %w", err)
	}
	return out, inline, nil
}

// buildReport checks what only QUBS and the store can tell (the appointment
// is pending, the patient is the appointment's, referenced Binaries exist)
// and assembles the version to store.
func (s *Server) buildReport(c *gin.Context, id string, in *mapping.ReportInput, resource []byte, inline map[int]inlineArtifact) (*store.Report, error) {
	appt, ok, err := s.checkPending(c, in.AppointmentID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, appointmentGone("DiagnosticReport.basedOn")
	}
	patientRef, err := s.patientRef(appt, in.PatientID, "DiagnosticReport.subject")
	if err != nil {
		return nil, err
	}
	artifacts, err := s.loadArtifacts(c, id, patientRef, in.Artifacts, inline, "DiagnosticReport.presentedForm")
	if err != nil {
		return nil, err
	}
	sub, err := json.Marshal(in.Submission)
	if err != nil {
		return nil, fmt.Errorf("encoding submission: %w", err)
	}
	return &store.Report{
		AppointmentID: in.AppointmentID,
		PatientRef:    patientRef,
		Status:        in.Status,
		Resource:      resource,
		Submission:    sub,
		Artifacts:     artifacts,
	}, nil
}

// patientRef checks a client's subject against the appointment's patient
// (when QUBS could be asked) and returns the reference to store.
func (s *Server) patientRef(appt *qubs.Appointment, clientPatientID, expr string) (string, error) {
	if appt != nil {
		want := mapping.PatientID(appt)
		if clientPatientID != "" && clientPatientID != want {
			return "", &fhir.Error{Status: http.StatusUnprocessableEntity, Issues: []fhir.Issue{{
				Severity: "error", Code: "business-rule", Expression: []string{expr},
				Diagnostics: "subject is not the patient of the appointment in basedOn",
			}}}
		}
		return "Patient/" + want, nil
	}
	if clientPatientID != "" {
		return "Patient/" + clientPatientID, nil
	}
	return "", nil
}

// loadArtifacts resolves artifacts given by url: a Binary the client sent
// the bridge earlier, an artifact of a report it accepted, or the bytes of
// a QUBS attachment. The url must be this server's, and the bytes must
// match the size and hash the client declared. Inline artifacts keep the
// Binary id storedReport gave them.
func (s *Server) loadArtifacts(c *gin.Context, reportID, patientRef string, in []mapping.ArtifactInput, inline map[int]inlineArtifact, path string) ([]store.Artifact, error) {
	base := fhir.BaseURL(c.Request, s.cfg.PublicURL, domainOf(c)) + "/"
	out := make([]store.Artifact, 0, len(in))
	for _, a := range in {
		art := store.Artifact{FileName: a.FileName, ContentType: a.ContentType, Data: a.Data}
		if ia, ok := inline[a.Index]; ok {
			art.BinaryID, art.SHA256 = ia.binaryID, ia.sha256
		}
		if a.BinaryID != "" {
			expr := path + "[" + strconv.Itoa(a.Index) + "]"
			refuse := func(status int, code, msg string) error {
				return &fhir.Error{Status: status, Issues: []fhir.Issue{{Severity: "error", Code: code, Expression: []string{expr}, Diagnostics: msg}}}
			}
			if a.BinaryBase != "" && a.BinaryBase != base {
				return nil, refuse(http.StatusUnprocessableEntity, "not-supported", "the url is not a Binary of this FHIR base")
			}
			b, err := s.binaryBytes(c, a.BinaryID)
			switch {
			case errors.Is(err, errNoBinary):
				return nil, refuse(http.StatusUnprocessableEntity, "not-found", "the url references no Binary known to this server")
			case errors.Is(err, errBinaryTooLarge):
				return nil, refuse(http.StatusRequestEntityTooLarge, "too-costly", fmt.Sprintf("the referenced Binary is over the %d bytes QUBS accepts", qubs.MaxUploadBytes))
			case err != nil:
				return nil, err
			case b.patientRef != "" && patientRef != "" && b.patientRef != patientRef:
				// An artifact of another patient's report must not be
				// copied into this one.
				return nil, refuse(http.StatusUnprocessableEntity, "business-rule", "the referenced Binary belongs to another patient's report")
			case b.contentType != "" && b.contentType != a.ContentType:
				return nil, refuse(http.StatusUnprocessableEntity, "value", "contentType differs from the referenced Binary's")
			case a.Size > 0 && a.Size != int64(len(b.data)):
				return nil, refuse(http.StatusUnprocessableEntity, "value", "size differs from the referenced Binary's")
			case len(a.SHA1) > 0 && !bytes.Equal(a.SHA1, sha1Sum(b.data)):
				return nil, refuse(http.StatusUnprocessableEntity, "value", "hash differs from the referenced Binary's")
			}
			art.Data = b.data
			if b.reportID == reportID {
				// The report's own artifact, sent back by url (a PUT of
				// the report as read): the url keeps naming the newest
				// version's bytes.
				art.BinaryID = a.BinaryID
			}
		}
		out = append(out, art)
	}
	return out, nil
}

func sha1Sum(b []byte) []byte {
	h := sha1.Sum(b)
	return h[:]
}

var (
	errNoBinary       = errors.New("no such Binary")
	errBinaryTooLarge = errors.New("Binary too large")
)

// binaryContent is a Binary's bytes and what is known of them.
type binaryContent struct {
	data []byte
	// contentType is "" when QUBS does not say.
	contentType string
	// reportID and patientRef are set for a report artifact's Binary.
	reportID, patientRef string
}

// binaryBytes loads a Binary's bytes, at most qubs.MaxUploadBytes: a QUBS
// attachment, a report artifact or a Binary a client created.
func (s *Server) binaryBytes(c *gin.Context, id string) (*binaryContent, error) {
	ctx, domain := c.Request.Context(), domainOf(c)
	if appt, guid, err := mapping.ParseBinaryID(id); err == nil {
		att, err := s.cfg.QUBS.GetAttachment(ctx, domain, appt, guid, qubs.AttachmentOptions{})
		if qubs.KindOf(err) == qubs.KindNotFound || err == nil && (att.URL == nil || *att.URL == "") {
			return nil, errNoBinary
		}
		if err != nil {
			return nil, err
		}
		dl, err := s.cfg.QUBS.Download(ctx, *att.URL)
		if err != nil {
			return nil, err
		}
		defer dl.Body.Close()
		data, err := io.ReadAll(io.LimitReader(dl.Body, qubs.MaxUploadBytes+1))
		if err != nil {
			return nil, fmt.Errorf("reading attachment: %w", err)
		}
		if len(data) > qubs.MaxUploadBytes {
			return nil, errBinaryTooLarge
		}
		return &binaryContent{data: data, contentType: mapping.ContentTypeForFileName(att.FileName)}, nil
	}
	if s.cfg.Store == nil {
		return nil, errNoBinary
	}
	if isArtifactBinary(id) {
		rb, err := s.cfg.Store.ArtifactBinary(ctx, domain, id)
		if errors.Is(err, store.ErrNotFound) || err == nil && (rb.Purged || rb.Artifact.Data == nil) {
			return nil, errNoBinary
		}
		if err != nil {
			return nil, err
		}
		return &binaryContent{data: rb.Artifact.Data, contentType: rb.Artifact.ContentType, reportID: rb.ReportID, patientRef: rb.PatientRef}, nil
	}
	b, err := s.cfg.Store.Binary(ctx, domain, id)
	if errors.Is(err, store.ErrNotFound) || err == nil && b.Purged {
		return nil, errNoBinary
	}
	if err != nil {
		return nil, err
	}
	if len(b.Data) > qubs.MaxUploadBytes {
		return nil, errBinaryTooLarge
	}
	return &binaryContent{data: b.Data, contentType: b.ContentType}, nil
}

// isArtifactBinary reports whether a Binary id is a report artifact's
// (storedReport).
func isArtifactBinary(id string) bool { return strings.HasPrefix(id, "dra-") }

// replayReport answers a retried create with the report it created. done
// is false when there is no such report. An Idempotency-Key that created a
// report from another body is a 422 (the key is the client's promise that
// the requests are the same).
func (s *Server) replayReport(c *gin.Context, id string, k clientKey, resource []byte) (done bool, err error) {
	ctx, domain := c.Request.Context(), domainOf(c)
	first, err := s.cfg.Store.ReportVersion(ctx, domain, id, 1)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	if k.kind == "idempotency-key" && !first.Purged && !bytes.Equal(first.Resource, resource) {
		return true, fhir.Errorf(http.StatusUnprocessableEntity, "business-rule",
			"this Idempotency-Key was used with a different DiagnosticReport")
	}
	r, err := s.cfg.Store.Report(ctx, domain, id)
	if err != nil {
		return true, err
	}
	status := http.StatusOK // the same content again: the report it made
	if k.kind == "idempotency-key" {
		status = http.StatusCreated // the original answer, repeated
	}
	return true, s.respondReport(c, status, r, "an earlier identical request created this report")
}

// conditionalMatch evaluates an If-None-Exist condition as a
// DiagnosticReport search: nil for no match, the report for one, 412 for
// several, 400 for a condition the search does not understand.
func (s *Server) conditionalMatch(c *gin.Context, cond string) (*store.Report, error) {
	q, err := parseCondition(cond, diagnosticReportSearch, "based-on=ServiceRequest/123")
	if err != nil {
		return nil, err
	}
	f, err := reportFilter(q)
	if err != nil {
		return nil, err
	}
	f.Limit = 2
	found, _, err := s.cfg.Store.SearchReports(c.Request.Context(), domainOf(c), f)
	if err != nil {
		return nil, fmt.Errorf("evaluating If-None-Exist: %w", err)
	}
	return oneMatch(found, "report")
}

// parseCondition reads an If-None-Exist condition as a search of spec,
// strictly (an unknown parameter is a 400, not ignored).
func parseCondition(cond string, spec fhir.SearchSpec, example string) (*fhir.Query, error) {
	values, err := url.ParseQuery(strings.TrimPrefix(cond, "?"))
	if err != nil || len(values) == 0 {
		return nil, fhir.Errorf(http.StatusBadRequest, "invalid", "If-None-Exist must be a search query such as %s", example)
	}
	return fhir.ParseSearch(values, "handling=strict", spec, 2, 2)
}

// oneMatch is a conditional create's answer to what its condition
// found: nil to create, the one match, or 412 for several.
func oneMatch[T any](found []*T, what string) (*T, error) {
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return found[0], nil
	}
	return nil, fhir.Errorf(http.StatusPreconditionFailed, "multiple-matches", "the If-None-Exist condition matches more than one %s", what)
}

func (s *Server) kick() {
	if s.cfg.Kick != nil {
		s.cfg.Kick()
	}
}

// accepted tells the delivery workers of a version just stored.
func (s *Server) accepted(r *store.Report) {
	if s.cfg.Accepted != nil {
		s.cfg.Accepted(r)
		return
	}
	s.kick()
}

// reportBody is the stored resource as served: id, version, lastUpdated
// and delivery state added, and the urls of its artifacts made absolute on
// base (the FHIR base of this request).
func reportBody(r *store.Report, base string) ([]byte, error) {
	if r.Purged {
		return nil, fhir.Errorf(http.StatusGone, "deleted", "this report's content was removed under the retention policy")
	}
	d := mapping.ReportDelivery{
		State: r.Delivery.State, ReportGUID: r.Delivery.ReportGUID, DeliveredAt: r.Delivery.DeliveredAt,
		Attempts: r.Delivery.Attempts, LastErrorKind: r.Delivery.LastErrorKind(),
	}
	if !r.Delivery.NextAttemptAt.IsZero() {
		next := r.Delivery.NextAttemptAt
		d.NextAttemptAt = &next
	}
	// The study's ImagingStudy shares the ServiceRequest's id.
	study, _ := mapping.ServiceRequestID(r.AppointmentID)
	b, err := mapping.DecorateReport(r.Resource, r.ID, r.Version, r.CreatedAt, d, study)
	if err != nil {
		return nil, fmt.Errorf("decorating report: %w", err)
	}
	return absoluteArtifactURLs(b, base), nil
}

// artifactURLPrefix is how a stored report names the Binary of an artifact
// sent inline (storedReport writes it; DecorateReport compacts, so the
// member reads exactly so).
const artifactURLPrefix = `"url":"Binary/dra-`

// absoluteArtifactURLs makes the artifact urls of a served report
// absolute. They are stored relative, so that the report survives a change
// of BRIDGE_PUBLIC_URL and a retry through another host name compares
// equal; clients get a url they can fetch as it is.
func absoluteArtifactURLs(b []byte, base string) []byte {
	if !bytes.Contains(b, []byte(artifactURLPrefix)) {
		return b
	}
	abs, _ := json.Marshal(base + "/Binary/dra-")
	return bytes.ReplaceAll(b, []byte(artifactURLPrefix), append([]byte(`"url":`), abs[:len(abs)-1]...))
}

func (s *Server) respondReport(c *gin.Context, status int, r *store.Report, note string) error {
	disclose(c, "DiagnosticReport/"+r.ID, r.PatientRef)
	var body []byte
	if preferReturn(c) == "representation" {
		var err error
		if body, err = reportBody(r, fhir.BaseURL(c.Request, s.cfg.PublicURL, domainOf(c))); err != nil {
			return err
		}
	}
	base := fhir.BaseURL(c.Request, s.cfg.PublicURL, domainOf(c))
	loc := base + "/DiagnosticReport/" + r.ID + "/_history/" + strconv.Itoa(r.Version)
	s.respondWrite(c, status, loc, r.Version, r.CreatedAt, body, note)
	return nil
}

func (s *Server) readDiagnosticReport(c *gin.Context) error {
	r, err := s.cfg.Store.Report(c.Request.Context(), domainOf(c), c.Param("id"))
	if errors.Is(err, store.ErrNotFound) {
		return fhir.Errorf(http.StatusNotFound, "not-found", "DiagnosticReport/%s is not known", c.Param("id"))
	}
	if err != nil {
		return err
	}
	return s.serveReport(c, r)
}

func (s *Server) vreadDiagnosticReport(c *gin.Context) error {
	v, err := strconv.Atoi(c.Param("vid"))
	if err != nil || v < 1 {
		return fhir.Errorf(http.StatusNotFound, "not-found", "no such version")
	}
	r, err := s.cfg.Store.ReportVersion(c.Request.Context(), domainOf(c), c.Param("id"), v)
	if errors.Is(err, store.ErrNotFound) {
		return fhir.Errorf(http.StatusNotFound, "not-found", "DiagnosticReport/%s has no version %d", c.Param("id"), v)
	}
	if err != nil {
		return err
	}
	return s.serveReport(c, r)
}

func (s *Server) serveReport(c *gin.Context, r *store.Report) error {
	disclose(c, "DiagnosticReport/"+r.ID, r.PatientRef)
	body, err := reportBody(r, fhir.BaseURL(c.Request, s.cfg.PublicURL, domainOf(c)))
	if err != nil {
		return err
	}
	c.Header("ETag", etag(r.Version))
	c.Header("Last-Modified", r.CreatedAt.UTC().Format(http.TimeFormat))
	s.writeRaw(c, http.StatusOK, body)
	return nil
}

// updateDiagnosticReport stores a new version (preliminary then final, an
// amendment) and queues it for QUBS, which keeps only the latest
// submission. If-Match guards against lost updates.
func (s *Server) updateDiagnosticReport(c *gin.Context) error {
	ctx, domain, id := c.Request.Context(), domainOf(c), c.Param("id")
	ifMatch, err := parseIfMatch(c.GetHeader("If-Match"))
	if err != nil {
		return err
	}
	rd, err := s.readStreamed(c, "DiagnosticReport", "presentedForm", false)
	if err != nil {
		return err
	}
	var head struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(rd.view, &head)
	if head.ID != id {
		return &fhir.Error{Status: http.StatusBadRequest, Issues: []fhir.Issue{{Severity: "error", Code: "invalid",
			Expression: []string{"DiagnosticReport.id"}, Diagnostics: "the resource id must equal the id in the URL"}}}
	}
	in, issues := mapping.ReportFromJSONInline(rd.view, rd.inline())
	if err := mappingError(issues); err != nil {
		return err
	}
	current, err := s.cfg.Store.Report(ctx, domain, id)
	if errors.Is(err, store.ErrNotFound) {
		return fhir.Errorf(http.StatusNotFound, "not-found", "DiagnosticReport/%s is not known; create reports with POST", id)
	}
	if err != nil {
		return err
	}
	resource, inline, err := s.storedReport(c, id, in, rd)
	if err != nil {
		return err
	}
	// A retried PUT of what is already the current version changes
	// nothing: it gets that version back, whatever If-Match it carried
	// (the retry of a PUT that succeeded names the version before it).
	// This is what makes PUT idempotent; an Idempotency-Key adds nothing.
	if !current.Purged && bytes.Equal(current.Resource, resource) {
		return s.respondReport(c, http.StatusOK, current, "no change")
	}
	if k := c.GetHeader("Idempotency-Key"); k != "" && qubs.ValidateIdempotencyKey(k) != nil {
		return fhir.Errorf(http.StatusBadRequest, "value", "Idempotency-Key must be 1 to 128 printable ASCII characters")
	}
	if ifMatch > 0 && ifMatch != current.Version {
		return fhir.Errorf(http.StatusPreconditionFailed, "conflict", "If-Match names version %d but the current version is %d", ifMatch, current.Version)
	}
	if in.AppointmentID != current.AppointmentID {
		return &fhir.Error{Status: http.StatusUnprocessableEntity, Issues: []fhir.Issue{{Severity: "error", Code: "business-rule",
			Expression: []string{"DiagnosticReport.basedOn"}, Diagnostics: "a report cannot move to another ServiceRequest"}}}
	}
	if submittedStatus(current) == qubs.ReportFinal && in.Submission.ReportStatus == qubs.ReportPreliminary {
		return &fhir.Error{Status: http.StatusUnprocessableEntity, Issues: []fhir.Issue{{Severity: "error", Code: "business-rule",
			Expression: []string{"DiagnosticReport.status"}, Diagnostics: "a final report cannot become preliminary again; send an amended or corrected final"}}}
	}
	r, err := s.buildReport(c, id, in, resource, inline)
	if err != nil {
		return err
	}
	r.Domain, r.ID = domain, id
	err = s.storeAudited(c, r, http.StatusOK, func(r *store.Report) error { return s.cfg.Store.UpdateReport(ctx, r, current.Version) })
	if err != nil {
		if errors.Is(err, store.ErrPrecondition) {
			if ifMatch > 0 {
				return fhir.Errorf(http.StatusPreconditionFailed, "conflict", "the report changed while this update was processed; read it and try again")
			}
			return fhir.Errorf(http.StatusConflict, "conflict", "another update of this report was stored at the same time; read it and try again")
		}
		return fmt.Errorf("storing report version: %w", err)
	}
	s.accepted(r)
	return s.respondReport(c, http.StatusOK, r, "new version accepted; delivery to QUBS is under way")
}

// submittedStatus is the QUBS report status of a stored version.
func submittedStatus(r *store.Report) string {
	var sub struct {
		ReportStatus string `json:"reportStatus"`
	}
	_ = json.Unmarshal(r.Submission, &sub)
	return strings.ToLower(sub.ReportStatus)
}

func (s *Server) searchDiagnosticReports(c *gin.Context) error {
	ctx, domain := c.Request.Context(), domainOf(c)
	values := c.Request.URL.Query()
	q, err := fhir.ParseSearch(values, c.GetHeader("Prefer"), diagnosticReportSearch, defaultCount, maxCount)
	if err != nil {
		return err
	}
	f, err := reportFilter(q)
	if err != nil {
		return err
	}
	f.Limit = q.Count
	res, err := parseResults(q, "_lastUpdated")
	if err != nil {
		return err
	}
	switch res.sort {
	case "_lastUpdated":
		f.Order = store.ReportsByUpdate
	case "-_lastUpdated":
		f.Order = store.ReportsByUpdateDesc
	}
	binding := searchBinding(domain, "DiagnosticReport", q)
	after, err := s.openCursor(q, binding)
	if err != nil {
		return err
	}
	f.After = string(after)
	bundle, base := s.searchBundle(c, "DiagnosticReport", q)
	if res.total {
		n, err := s.cfg.Store.CountReports(ctx, domain, f)
		if err != nil {
			return fmt.Errorf("counting reports: %w", err)
		}
		bundle.SetTotal(n)
		if res.countOnly {
			s.write(c, http.StatusOK, bundle)
			return nil
		}
	}
	reports, next, err := s.cfg.Store.SearchReports(ctx, domain, f)
	if err != nil {
		return fmt.Errorf("searching reports: %w", err)
	}
	if next != "" {
		bundle.SetLink("next", pageURL(base+"/DiagnosticReport", q.Used(), s.cursors.Seal(binding, []byte(next))))
	}
	for _, r := range reports {
		body, err := reportBody(r, base)
		if err != nil {
			var fe *fhir.Error
			if errors.As(err, &fe) && fe.Status == http.StatusGone {
				continue
			}
			// One report the bridge cannot serve must not hide the others.
			s.log.Error("search: skipping a report that cannot be served", "correlation_id", correlationIDOf(c), "report", r.ID, "error", err.Error())
			bundle.AddOutcome(fhir.OutcomeJSON(fhir.Issue{Severity: "error", Code: "exception",
				Diagnostics: "DiagnosticReport/" + r.ID + " could not be served and is left out"}))
			continue
		}
		disclose(c, "DiagnosticReport/"+r.ID, r.PatientRef)
		bundle.AddMatch(base+"/DiagnosticReport/"+r.ID, body)
	}
	s.write(c, http.StatusOK, bundle)
	return nil
}

// reportFilter turns DiagnosticReport search parameters into a store filter.
func reportFilter(q *fhir.Query) (store.ReportFilter, error) {
	var f store.ReportFilter
	srIDs, err := referenceIDs(q, "ServiceRequest", "based-on")
	if err != nil {
		return f, err
	}
	for _, id := range srIDs {
		appt, ok := appointmentID(id)
		if !ok {
			return f, fhir.Errorf(http.StatusBadRequest, "value", "based-on must reference a ServiceRequest of this server")
		}
		f.AppointmentIDs = append(f.AppointmentIDs, appt)
	}
	patients, err := referenceIDs(q, "Patient", "patient", "subject")
	if err != nil {
		return f, err
	}
	for _, id := range patients {
		f.PatientRefs = append(f.PatientRefs, "Patient/"+id)
	}
	for _, v := range q.Params["status"] {
		for _, st := range fhir.SplitValues(v) {
			f.Statuses = append(f.Statuses, fhir.ParseToken(st).Code)
		}
	}
	return f, nil
}

// pageURL is a search URL with the cursor replaced.
func pageURL(path string, values url.Values, cursor string) string {
	v := url.Values{}
	for k, vs := range values {
		if k != cursorParam {
			v[k] = vs
		}
	}
	v.Set(cursorParam, cursor)
	return path + "?" + v.Encode()
}
