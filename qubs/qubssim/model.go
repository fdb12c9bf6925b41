package qubssim

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// domainData is everything the simulator holds for one domain. It is
// guarded by Sim.mu.
type domainData struct {
	name  string
	appts map[string]*apptState
	// order holds every appointment (any status) in paging order: by a
	// keyed hash of the id, so the order is neither chronological nor
	// guessable, yet stable while a walk is under way.
	order []*apptState
	// patientComments are the PC/PA comments, by patient id; they are
	// listed on every appointment of the patient.
	patientComments map[string][]*qubs.Comment
}

type apptState struct {
	a           qubs.Appointment
	key         uint64
	attachments []*attachment
	comments    []*qubs.Comment // appointment-level (AC/AA)
	reportGUID  string          // stable per appointment once the first report arrives
	reports     []ReportRecord
	created     []CommentRecord
	uploads     []*upload
}

// attachment is one attachment of an appointment. Seeded content is
// generated on first download so seeding stays fast.
type attachment struct {
	meta    qubs.Attachment // URL fields are filled per request
	content []byte
	genText string  // text of the generated document when content is nil
	upload  *upload // report artifact: listed with a URL only once uploaded
}

type upload struct {
	rec    UploadRecord
	domain string
	apptID string
}

// less orders appointments for paging.
func (a *apptState) less(key uint64, id string) bool {
	if a.key != key {
		return a.key < key
	}
	return a.a.AppointmentID < id
}

func (s *Sim) orderKeyOf(domain, id string) uint64 {
	m := hmac.New(sha256.New, s.orderKey)
	m.Write([]byte(domain))
	m.Write([]byte{0})
	m.Write([]byte(id))
	return binary.BigEndian.Uint64(m.Sum(nil))
}

// domain returns the domain's data, creating it when needed. Callers hold
// s.mu.
func (s *Sim) domain(name string) *domainData {
	dd := s.domains[name]
	if dd == nil {
		dd = &domainData{name: name, appts: map[string]*apptState{}, patientComments: map[string][]*qubs.Comment{}}
		s.domains[name] = dd
	}
	return dd
}

// appt returns an appointment with any status, or nil. Callers hold s.mu.
func (s *Sim) appt(domain, id string) *apptState {
	dd := s.domains[domain]
	if dd == nil {
		return nil
	}
	return dd.appts[id]
}

// pendingAppt returns the appointment when it is PENDING REPORTING, the only
// ones the reporting operations see. Callers hold s.mu.
func (s *Sim) pendingAppt(domain, id string) *apptState {
	a := s.appt(domain, id)
	if a == nil || a.a.Status != qubs.StatusPendingReporting {
		return nil
	}
	return a
}

// add inserts a new appointment in paging order.
func (dd *domainData) add(s *Sim, a *apptState) {
	a.a.Domain = dd.name
	a.key = s.orderKeyOf(dd.name, a.a.AppointmentID)
	dd.appts[a.a.AppointmentID] = a
	i := sort.Search(len(dd.order), func(i int) bool { return !dd.order[i].less(a.key, a.a.AppointmentID) })
	dd.order = append(dd.order, nil)
	copy(dd.order[i+1:], dd.order[i:])
	dd.order[i] = a
}

// sortOrder sorts the paging order after bulk seeding.
func (dd *domainData) sortOrder() {
	sort.Slice(dd.order, func(i, j int) bool {
		return dd.order[i].less(dd.order[j].key, dd.order[j].a.AppointmentID)
	})
}

// comments returns the appointment's comments followed by its patient's,
// in creation order within each group.
func (dd *domainData) comments(a *apptState) []*qubs.Comment {
	out := append([]*qubs.Comment(nil), a.comments...)
	if a.a.PatientID != "" {
		out = append(out, dd.patientComments[a.a.PatientID]...)
	}
	return out
}

// contentOf returns an attachment's bytes and content type.
func (at *attachment) contentOf() ([]byte, string) {
	ct := ""
	var b []byte
	switch {
	case at.upload != nil:
		b, ct = at.upload.rec.Bytes, at.upload.rec.ContentType
	case at.content != nil:
		b = at.content
	default:
		b = generateDocument(at.meta.FileName, at.genText)
	}
	if ct == "" {
		ct = contentTypeFor(at.meta.FileName)
	}
	return b, ct
}

// contentTypeFor derives a content type from a file name: QUBS attachments
// carry none, so a downloader learns it only from the presigned URL's
// answer, which the simulator derives the same way.
func contentTypeFor(name string) string {
	switch strings.ToLower(path.Ext(name)) {
	case ".pdf":
		return qubs.ContentTypePDF
	case ".dcm":
		return qubs.ContentTypeDICOM
	}
	return "application/octet-stream"
}

// generateDocument builds the bytes of a seeded attachment.
func generateDocument(name, text string) []byte {
	switch contentTypeFor(name) {
	case qubs.ContentTypePDF:
		return minimalPDF(text)
	case qubs.ContentTypeDICOM:
		// A DICOM Part 10 preamble and magic, enough for sniffers.
		b := make([]byte, 132, 132+len(text))
		copy(b[128:], "DICM")
		return append(b, text...)
	}
	return []byte(text)
}

// minimalPDF returns a small valid PDF 1.4 document showing one line of
// text (ASCII; anything else becomes '?').
func minimalPDF(text string) []byte {
	var esc strings.Builder
	for _, r := range text {
		switch {
		case r == '(' || r == ')' || r == '\\':
			esc.WriteByte('\\')
			esc.WriteRune(r)
		case r < 0x20 || r > 0x7e:
			esc.WriteByte('?')
		default:
			esc.WriteRune(r)
		}
	}
	stream := "BT /F1 12 Tf 72 770 Td (" + esc.String() + ") Tj ET"
	objs := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%s\nendstream", len(stream), stream),
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
	}
	var b strings.Builder
	b.WriteString("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
	offsets := make([]int, len(objs))
	for i, o := range objs {
		offsets[i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objs)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objs)+1, xref)
	return []byte(b.String())
}

// newGUID returns a random (version 4) UUID from the simulator's seeded
// generator. Callers hold s.mu.
func (s *Sim) newGUID() string {
	return uuidFrom(s.rng.Uint64(), s.rng.Uint64())
}

func uuidFrom(hi, lo uint64) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
