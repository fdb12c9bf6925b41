package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

var documentReferenceSearch = fhir.SearchSpec{
	Resource: "DocumentReference",
	Params: []fhir.ParamSpec{
		{Name: "related", Type: "reference", Documentation: "ServiceRequest/{id}: the study's referrals, worksheets and report artifacts."},
		{Name: "patient", Type: "reference", Documentation: "Patient/{id}: documents of every pending study of the patient."},
		{Name: "subject", Type: "reference", Documentation: "Patient/{id}."},
	},
}

// pendingOf returns the appointment behind a ServiceRequest id, nil when
// QUBS no longer has it pending (or never had it).
func (s *Server) pendingOf(c *gin.Context, srID string) (*qubs.Appointment, error) {
	appt, ok := appointmentID(srID)
	if !ok {
		return nil, nil
	}
	a, err := s.cfg.QUBS.GetPending(c.Request.Context(), domainOf(c), appt)
	if qubs.KindOf(err) == qubs.KindNotFound {
		return nil, nil
	}
	return a, err
}

// appointmentsOf walks the worklist for the patient's pending
// appointments: QUBS cannot filter by patient.
func (s *Server) appointmentsOf(c *gin.Context, patientID string) ([]qubs.Appointment, error) {
	var out []qubs.Appointment
	for a, err := range s.cfg.QUBS.Pending(c.Request.Context(), domainOf(c), maxQUBSPageSize) {
		if err != nil {
			return nil, err
		}
		if mapping.PatientID(&a) == patientID {
			out = append(out, a)
		}
	}
	return out, nil
}

// searchAppointments resolves the study criteria shared by DocumentReference,
// Communication and Flag searches: a ServiceRequest reference (named by
// srParam) and/or a patient. One of them is required: a search over every
// appointment's records would cost a QUBS call per appointment.
func (s *Server) searchAppointments(c *gin.Context, q *fhir.Query, resource, srParam string) ([]qubs.Appointment, error) {
	srIDs, err := referenceIDs(q, "ServiceRequest", srParam)
	if err != nil {
		return nil, err
	}
	patients, err := referenceIDs(q, "Patient", "patient", "subject")
	if err != nil {
		return nil, err
	}
	if len(srIDs) == 0 && len(patients) == 0 {
		by := "patient"
		if srParam != "" {
			by = srParam + " or patient"
		}
		return nil, fhir.Errorf(http.StatusBadRequest, "too-costly", "search %s by %s", resource, by)
	}
	var out []qubs.Appointment
	seen := map[string]bool{}
	add := func(a qubs.Appointment) {
		if !seen[a.AppointmentID] {
			seen[a.AppointmentID] = true
			out = append(out, a)
		}
	}
	for _, id := range srIDs {
		a, err := s.pendingOf(c, id)
		if err != nil {
			return nil, err
		}
		if a != nil {
			add(*a)
		}
	}
	if len(srIDs) > 0 && len(patients) > 0 {
		// Both given: the studies, of those patients only.
		kept := out[:0]
		for _, a := range out {
			for _, p := range patients {
				if mapping.PatientID(&a) == p {
					kept = append(kept, a)
					break
				}
			}
		}
		return kept, nil
	}
	for _, p := range patients {
		as, err := s.appointmentsOf(c, p)
		if err != nil {
			return nil, err
		}
		for _, a := range as {
			add(a)
		}
	}
	return out, nil
}

func (s *Server) searchDocumentReferences(c *gin.Context) error {
	q, err := fhir.ParseSearch(c.Request.URL.Query(), c.GetHeader("Prefer"), documentReferenceSearch, defaultCount, maxCount)
	if err != nil {
		return err
	}
	appts, err := s.searchAppointments(c, q, "DocumentReference", "related")
	if err != nil {
		return err
	}
	bundle, base := s.searchBundle(c, "DocumentReference", q)
	skipped := 0
	for _, a := range appts {
		atts, err := s.cfg.QUBS.ListAttachments(c.Request.Context(), domainOf(c), a.AppointmentID, qubs.AttachmentOptions{})
		if qubs.KindOf(err) == qubs.KindNotFound {
			continue // left the worklist since
		}
		if err != nil {
			return err
		}
		for _, att := range atts {
			doc, id, err := s.documentReference(c, &a, att)
			if unrepresentable(err) {
				skipped++
				continue
			}
			if err != nil {
				return err
			}
			bundle.AddMatch(base+"/DocumentReference/"+id, doc)
		}
	}
	s.noteSkipped(c, bundle, skipped, "attachments")
	s.write(c, http.StatusOK, bundle)
	return nil
}

func (s *Server) documentReference(c *gin.Context, a *qubs.Appointment, att qubs.Attachment) (json.RawMessage, string, error) {
	base := fhir.BaseURL(c.Request, s.cfg.PublicURL, domainOf(c))
	binID, err := mapping.BinaryID(a.AppointmentID, att.GUID)
	if err != nil {
		return nil, "", fmt.Errorf("attachment id: %w", err)
	}
	doc, err := mapping.DocumentReferenceFromAttachment(a.AppointmentID, mapping.PatientID(a), att, base+"/Binary/"+binID)
	if err != nil {
		return nil, "", fmt.Errorf("mapping attachment: %w", err)
	}
	b, err := encode(doc)
	if err != nil {
		return nil, "", fmt.Errorf("encoding DocumentReference: %w", err)
	}
	// Search, read and create all answer with what this makes.
	disclose(c, "DocumentReference/"+deref(doc.Id), patientRefOf(a))
	return b, deref(doc.Id), nil
}

func (s *Server) readDocumentReference(c *gin.Context) error {
	id := c.Param("id")
	appt, guid, err := mapping.ParseDocumentReferenceID(id)
	if err != nil {
		return fhir.Errorf(http.StatusNotFound, "not-found", "DocumentReference/%s is not known", id)
	}
	a, att, err := s.attachment(c, appt, guid)
	if err != nil {
		return err
	}
	if a == nil {
		return fhir.Errorf(http.StatusNotFound, "not-found", "DocumentReference/%s is not known, or its study is no longer pending reporting", id)
	}
	body, _, err := s.documentReference(c, a, *att)
	if err != nil {
		return err
	}
	s.writeRaw(c, http.StatusOK, body)
	return nil
}

// attachment fetches an appointment and one of its attachments; nil when
// either is unknown to QUBS.
func (s *Server) attachment(c *gin.Context, apptID, guid string) (*qubs.Appointment, *qubs.Attachment, error) {
	ctx, domain := c.Request.Context(), domainOf(c)
	a, err := s.cfg.QUBS.GetPending(ctx, domain, apptID)
	if qubs.KindOf(err) == qubs.KindNotFound {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	att, err := s.cfg.QUBS.GetAttachment(ctx, domain, apptID, guid, qubs.AttachmentOptions{})
	if qubs.KindOf(err) == qubs.KindNotFound {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return a, att, nil
}

// readBinary serves an attachment's bytes, streamed from QUBS's presigned
// URL without holding the file, in its own media type; or, when the client
// asks for FHIR JSON, a Binary resource with the bytes in base64 (FHIR R4
// binary.html#rest).
func (s *Server) readBinary(c *gin.Context) error {
	id := c.Param("id")
	wantsJSON := binaryAsJSON(c.GetHeader("Accept"), c.Query("_format"))
	if appt, guid, err := mapping.ParseBinaryID(id); err == nil {
		a, att, err := s.attachment(c, appt, guid)
		if err != nil {
			return err
		}
		if att == nil {
			return fhir.Errorf(http.StatusNotFound, "not-found", "Binary/%s is not known", id)
		}
		// The bytes are no FHIR JSON the audit could read the patient off.
		disclose(c, "Binary/"+id, "Patient/"+mapping.PatientID(a))
		if att.URL == nil || *att.URL == "" {
			return fhir.Errorf(http.StatusNotFound, "not-found", "Binary/%s has no content in QUBS yet", id)
		}
		dl, err := s.cfg.QUBS.Download(c.Request.Context(), *att.URL)
		if err != nil {
			return err
		}
		defer dl.Body.Close()
		ct := dl.ContentType
		if ct == "" || ct == "application/octet-stream" {
			ct = mapping.ContentTypeForFileName(att.FileName)
		}
		if wantsJSON {
			data, err := io.ReadAll(io.LimitReader(dl.Body, maxBinaryJSON+1))
			if err != nil {
				return fmt.Errorf("reading attachment: %w", err)
			}
			if len(data) > maxBinaryJSON {
				return fhir.Errorf(http.StatusRequestEntityTooLarge, "too-costly", "Binary/%s is too large to send as JSON; ask for its own media type", id)
			}
			return s.binaryJSON(c, id, ct, data)
		}
		safeFileHeaders(c, ct, att.FileName)
		c.DataFromReader(http.StatusOK, dl.ContentLength, ct, dl.Body, nil)
		return nil
	}
	if s.cfg.Store != nil && isArtifactBinary(id) {
		// A report artifact: its bytes in the store, the report's patient
		// for the audit.
		rb, err := s.cfg.Store.ArtifactBinary(c.Request.Context(), domainOf(c), id)
		if errors.Is(err, store.ErrNotFound) {
			return fhir.Errorf(http.StatusNotFound, "not-found", "Binary/%s is not known", id)
		}
		if err != nil {
			return err
		}
		disclose(c, "Binary/"+id, rb.PatientRef)
		if rb.Purged || rb.Artifact.Data == nil {
			return fhir.Errorf(http.StatusGone, "deleted", "Binary/%s was removed under the retention policy", id)
		}
		return s.serveStoredBinary(c, id, rb.Artifact.ContentType, rb.Artifact.FileName, rb.Artifact.SHA256, rb.Artifact.Data, wantsJSON)
	}
	if s.cfg.Store != nil {
		b, err := s.cfg.Store.Binary(c.Request.Context(), domainOf(c), id)
		if err == nil {
			disclose(c, "Binary/"+id, "")
		}
		if err == nil && b.Purged {
			return fhir.Errorf(http.StatusGone, "deleted", "Binary/%s was removed under the retention policy", id)
		}
		if err == nil {
			return s.serveStoredBinary(c, id, b.ContentType, "", b.SHA256, b.Data, wantsJSON)
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return fhir.Errorf(http.StatusNotFound, "not-found", "Binary/%s is not known", id)
}

// serveStoredBinary answers a Binary read from the store: the bytes in
// their own media type with Content-Length and an ETag of their SHA-256
// (the bytes of a Binary id never change, so a client's cached copy stays
// good: If-None-Match answers 304), or the FHIR resource when asked for.
func (s *Server) serveStoredBinary(c *gin.Context, id, ct, fileName, sha string, data []byte, wantsJSON bool) error {
	if wantsJSON {
		return s.binaryJSON(c, id, ct, data)
	}
	tag := `"` + sha + `"`
	c.Header("ETag", tag)
	safeFileHeaders(c, ct, fileName)
	if inm := c.GetHeader("If-None-Match"); sha != "" && inm != "" && (inm == "*" || strings.Contains(inm, tag)) {
		c.Status(http.StatusNotModified)
		return nil
	}
	c.DataFromReader(http.StatusOK, int64(len(data)), ct, bytes.NewReader(data), nil)
	return nil
}

// binaryAsJSON reports whether a Binary read asked for the FHIR resource
// rather than the raw content: only an explicit FHIR JSON type counts,
// because browsers and download tools send */*.
func binaryAsJSON(accept, format string) bool {
	if format != "" {
		return strings.Contains(format, "json")
	}
	for _, part := range strings.Split(accept, ",") {
		mt, _, _ := mime.ParseMediaType(strings.TrimSpace(part))
		if mt == fhir.ContentTypeFHIRJSON {
			return true
		}
	}
	return false
}

// maxBinaryJSON bounds a Binary read as a FHIR resource (base64 in JSON).
const maxBinaryJSON = 32 << 20

// safeFileHeaders serves QUBS's files from the FHIR origin without letting
// one act as a page of it: no sniffing, a sandbox for anything rendered,
// and only PDFs and images displayed inline; everything else downloads.
func safeFileHeaders(c *gin.Context, ct, fileName string) {
	c.Header("X-Content-Type-Options", "nosniff")
	c.Header("Content-Security-Policy", "sandbox; default-src 'none'; frame-ancestors 'none'")
	kind := "attachment"
	if ct == "application/pdf" || strings.HasPrefix(ct, "image/") {
		kind = "inline"
	}
	if fileName == "" {
		c.Header("Content-Disposition", kind)
		return
	}
	c.Header("Content-Disposition", mime.FormatMediaType(kind, map[string]string{"filename": fileName}))
}

func (s *Server) binaryJSON(c *gin.Context, id, ct string, data []byte) error {
	setContentType(c, fhir.ContentTypeFHIRJSON+"; charset=utf-8")
	s.write(c, http.StatusOK, models.Binary{Id: &id, ContentType: ct, Data: ptr(base64.StdEncoding.EncodeToString(data))})
	return nil
}

func ptr[T any](v T) *T { return &v }

// createBinary keeps a client's file so a DiagnosticReport or
// DocumentReference can reference it by url. It takes a FHIR Binary
// resource, or the raw bytes of a PDF or DICOM file. The id is derived
// from the content, so sending the same file twice yields one Binary.
func (s *Server) createBinary(c *gin.Context) error {
	domain := domainOf(c)
	var ct string
	var data []byte
	reqCT, _, _ := mime.ParseMediaType(c.GetHeader("Content-Type"))
	switch reqCT {
	case qubs.ContentTypePDF, qubs.ContentTypeDICOM:
		b, err := io.ReadAll(io.LimitReader(c.Request.Body, qubs.MaxUploadBytes+1))
		if err != nil {
			return fhir.Errorf(http.StatusBadRequest, "structure", "reading the request body failed")
		}
		ct, data = reqCT, b
	default:
		if c.GetHeader("If-None-Exist") != "" {
			return fhir.Errorf(http.StatusBadRequest, "not-supported",
				"conditional create (If-None-Exist) is offered for DiagnosticReport and Subscription only; use Idempotency-Key")
		}
		// The file is decoded as the body is read: never held as base64.
		rd, err := s.readStreamed(c, "Binary", "", false)
		if err != nil {
			return err
		}
		var b models.Binary
		if err := decodeResource(rd.view, &b, "Binary"); err != nil {
			return err
		}
		var d *fhir.InlineData
		if len(rd.sp.Inline) > 0 {
			d = rd.sp.Inline[0]
		}
		switch {
		case d == nil:
			return &fhir.Error{Status: http.StatusUnprocessableEntity, Issues: []fhir.Issue{{Severity: "error", Code: "required",
				Expression: []string{"Binary.data"}, Diagnostics: "the Binary has no data"}}}
		case d.TooBig:
			return fhir.Errorf(http.StatusRequestEntityTooLarge, "too-costly", "the file is over the %d bytes QUBS accepts", qubs.MaxUploadBytes)
		case d.Invalid:
			return &fhir.Error{Status: http.StatusBadRequest, Issues: []fhir.Issue{{Severity: "error", Code: "value",
				Expression: []string{"Binary.data"}, Diagnostics: "data is not base64"}}}
		}
		ct, data = b.ContentType, d.Data
		if mt, _, err := mime.ParseMediaType(ct); err == nil {
			ct = mt
		}
	}
	if ct != qubs.ContentTypePDF && ct != qubs.ContentTypeDICOM {
		return &fhir.Error{Status: http.StatusUnprocessableEntity, Issues: []fhir.Issue{{Severity: "error", Code: "not-supported",
			Expression: []string{"Binary.contentType"}, Diagnostics: "QUBS accepts report artifacts as application/pdf or application/dicom only"}}}
	}
	if len(data) > qubs.MaxUploadBytes {
		return fhir.Errorf(http.StatusRequestEntityTooLarge, "too-costly", "the file is over the %d bytes QUBS accepts", qubs.MaxUploadBytes)
	}
	if len(data) == 0 {
		return fhir.Errorf(http.StatusUnprocessableEntity, "required", "the file is empty")
	}
	id := "bin-" + hashHex([]byte(domain), []byte(ct), data)[:40]
	b := &store.Binary{Domain: domain, ID: id, ContentType: ct, Data: data}
	err := s.cfg.Store.CreateBinary(c.Request.Context(), b)
	status := http.StatusCreated
	if errors.Is(err, store.ErrConflict) {
		status = http.StatusOK
		if prev, err := s.cfg.Store.Binary(c.Request.Context(), domain, id); err == nil && prev.Purged {
			// The id is the content's: a purged file cannot come back
			// under it, and a report must not point at nothing.
			return fhir.Errorf(http.StatusGone, "deleted", "this file was sent before and removed under the retention policy; it cannot be stored again")
		}
	} else if err != nil {
		return fmt.Errorf("storing binary: %w", err)
	}
	base := fhir.BaseURL(c.Request, s.cfg.PublicURL, domain)
	body, err := encode(models.Binary{Id: &id, ContentType: ct})
	if err != nil {
		return err
	}
	setContentType(c, fhir.ContentTypeFHIRJSON+"; charset=utf-8")
	disclose(c, "Binary/"+id, "")
	s.respondWrite(c, status, base+"/Binary/"+id, 0, b.CreatedAt, body, "binary stored")
	return nil
}

// createDocumentReference uploads one report artifact to QUBS at once
// (create upload URL, PUT) and answers with the attachment as QUBS now
// lists it. The QUBS Idempotency-Key follows from the client's key, so a
// retried create within QUBS's 15 minutes returns the same attachment; a
// store, when configured, remembers it for longer.
func (s *Server) createDocumentReference(c *gin.Context) error {
	ctx, domain := c.Request.Context(), domainOf(c)
	body, d, err := readInbound[models.DocumentReference](s, c, "DocumentReference")
	if err != nil {
		return err
	}
	in, issues := mapping.DocumentFromFHIR(d)
	if err := mappingError(issues); err != nil {
		return err
	}
	k, err := idempotencyKey(c, body)
	if err != nil {
		return err
	}
	// QUBS replays an upload-URL request for 15 minutes; the store
	// remembers a create for longer, with the request's hash, so a retry
	// gets the same document and a reused key with another body is a 422.
	scope, key, reqHash := "DocumentReference:create", k.kind+":"+k.key, hashHex(body)
	if s.cfg.Store != nil {
		prev, err := s.cfg.Store.LookupIdempotency(ctx, domain, scope, key)
		switch {
		case err == nil && prev.RequestHash != reqHash:
			return fhir.Errorf(http.StatusUnprocessableEntity, "business-rule", "this Idempotency-Key was used with a different DocumentReference")
		case err == nil:
			appt, guid, perr := mapping.ParseDocumentReferenceID(prev.ResourceID)
			if perr == nil {
				return s.respondDocumentReference(c, http.StatusCreated, appt, guid)
			}
		case !errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("looking up idempotency key: %w", err)
		}
	}
	appt, err := s.writeTarget(c, in.AppointmentID, in.PatientID, "DocumentReference.context.related", mapping.DocumentReferenceID)
	if err != nil {
		return err
	}
	patientRef := ""
	if appt != nil {
		patientRef = "Patient/" + mapping.PatientID(appt)
	}
	arts, err := s.loadArtifacts(c, "", patientRef, []mapping.ArtifactInput{in.Artifact}, nil, "DocumentReference.content")
	if err != nil {
		return err
	}
	art := arts[0]
	ct := art.ContentType
	urls, err := s.cfg.QUBS.CreateUploadURLs(ctx, domain, in.AppointmentID,
		qubs.UploadRequest{Items: []qubs.UploadItem{{FileName: art.FileName, ContentType: &ct}}},
		qubsKey("qfb-docref", domain, k))
	if qubs.KindOf(err) == qubs.KindNotFound {
		return appointmentGone("DocumentReference.context.related")
	}
	if err != nil {
		return err
	}
	if len(urls.Items) != 1 {
		return fmt.Errorf("QUBS answered %d upload URLs for one artifact", len(urls.Items))
	}
	up := urls.Items[0]
	err = s.cfg.QUBS.Upload(ctx, up, ct, int64(len(art.Data)), bytes.NewReader(art.Data))
	if err != nil && qubs.KindOf(err) != qubs.KindConflict { // conflict: an earlier attempt's PUT succeeded
		return err
	}
	if s.cfg.Store != nil {
		docID, err := mapping.DocumentReferenceID(in.AppointmentID, up.GUID)
		if err != nil {
			return unservable("DocumentReference.context.related")
		}
		// Recorded after the upload: a create that failed leaves no claim.
		if _, err := s.cfg.Store.ClaimIdempotency(ctx, &store.IdempotencyRecord{
			Domain: domain, Scope: scope, Key: key, RequestHash: reqHash,
			ResourceType: "DocumentReference", ResourceID: docID,
		}); err != nil {
			s.log.Warn("recording idempotency key failed", "correlation_id", correlationIDOf(c), "error", err.Error())
		}
	}
	return s.respondDocumentReference(c, http.StatusCreated, in.AppointmentID, up.GUID)
}

func (s *Server) respondDocumentReference(c *gin.Context, status int, apptID, guid string) error {
	a, att, err := s.attachment(c, apptID, guid)
	if err != nil {
		return err
	}
	if a == nil {
		return fhir.Errorf(http.StatusBadGateway, "processing", "QUBS does not list the uploaded attachment")
	}
	body, id, err := s.documentReference(c, a, *att)
	if err != nil {
		return err
	}
	base := fhir.BaseURL(c.Request, s.cfg.PublicURL, domainOf(c))
	s.respondWrite(c, status, base+"/DocumentReference/"+id, 0, timeOr(att.LastModifiedDateTime), body, "artifact uploaded to QUBS")
	return nil
}

// probeGUID has the shape of the GUIDs QUBS gives attachments and
// comments, to check before a write that what it creates can be served.
const probeGUID = "00000000-0000-0000-0000-000000000000"

// unservable refuses a write whose result the bridge could not serve back:
// the study's QUBS id is too long to fit, with a record GUID, in a FHIR id.
func unservable(expr string) error {
	return &fhir.Error{Status: http.StatusUnprocessableEntity, Issues: []fhir.Issue{{Severity: "error", Code: "too-long",
		Expression: []string{expr}, Diagnostics: "this study's QUBS id is too long for the bridge to serve what would be created"}}}
}

// timeOr is the time, or the zero time for nil.
func timeOr(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}
