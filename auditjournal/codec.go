package auditjournal

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// A segment is a header, then frames. A frame is the payload's length
// (4 bytes, big-endian), its CRC-32C (4 bytes), then the payload: one
// record. A frame is written with one write(2), so a crash of the process
// leaves whole frames in the kernel; a frame cut short or damaged (a crash
// of the machine) ends what is read of its segment.
const (
	segmentMagic = "QBAJ\x00\x01\n\x00" // QUBS bridge audit journal, format 1
	frameHeader  = 8
	// maxFrame bounds a payload read back, so a damaged length cannot ask
	// for gigabytes. A record names at most a page's references (a
	// search's page is bounded by the bridge's _count limit), far less.
	maxFrame = 16 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errDamaged ends the reading of a segment.
var errDamaged = errors.New("damaged frame")

// appendFrame appends rec's frame to b.
func appendFrame(b []byte, rec *store.AuditRecord) []byte {
	start := len(b)
	b = append(b, make([]byte, frameHeader)...)
	b = appendRecord(b, rec)
	payload := b[start+frameHeader:]
	binary.BigEndian.PutUint32(b[start:], uint32(len(payload)))
	binary.BigEndian.PutUint32(b[start+4:], crc32.Checksum(payload, castagnoli))
	return b
}

// appendRecord encodes every field of rec, in the order of the struct:
// strings as a length and the bytes, Recorded as Unix nanoseconds (zero
// time as 0; the int64's bits, as any other number), lists as a count and their strings. TestCodecCoversEveryField
// fails when a field is added to store.AuditRecord and not here.
func appendRecord(b []byte, r *store.AuditRecord) []byte {
	b = appendString(b, r.ID)
	b = appendString(b, r.Domain)
	var at int64
	if !r.Recorded.IsZero() {
		at = r.Recorded.UnixNano()
	}
	b = binary.AppendUvarint(b, uint64(at))
	for _, s := range [...]string{r.Action, r.Interaction, r.Outcome, r.OutcomeDesc, r.AgentID, r.AgentMethod, r.TokenID, r.NetworkAddr} {
		b = appendString(b, s)
	}
	b = appendStrings(b, r.PatientRefs)
	b = appendStrings(b, r.EntityRefs)
	for _, s := range [...]string{r.Query, r.CorrelationID, r.RequestPath} {
		b = appendString(b, s)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

// decodeRecord reverses appendRecord.
func decodeRecord(p []byte) (*store.AuditRecord, error) {
	d := decoder{p: p}
	r := &store.AuditRecord{}
	r.ID = d.string()
	r.Domain = d.string()
	if at := int64(d.uvarint()); at != 0 {
		r.Recorded = time.Unix(0, at).UTC()
	}
	for _, f := range [...]*string{&r.Action, &r.Interaction, &r.Outcome, &r.OutcomeDesc, &r.AgentID, &r.AgentMethod, &r.TokenID, &r.NetworkAddr} {
		*f = d.string()
	}
	r.PatientRefs = d.strings()
	r.EntityRefs = d.strings()
	for _, f := range [...]*string{&r.Query, &r.CorrelationID, &r.RequestPath} {
		*f = d.string()
	}
	if d.err != nil || len(d.p) != 0 {
		return nil, errDamaged
	}
	return r, nil
}

// decoder reads appendRecord's encoding; the first error sticks.
type decoder struct {
	p   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.p)
	if n <= 0 {
		d.err, d.p = errDamaged, nil
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.p)) {
		d.err, d.p = errDamaged, nil
		return ""
	}
	s := string(d.p[:n])
	d.p = d.p[n:]
	return s
}

func (d *decoder) strings() []string {
	n := d.uvarint()
	if n == 0 || n > uint64(len(d.p)) { // each string takes a byte at least
		if n != 0 {
			d.err, d.p = errDamaged, nil
		}
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = d.string()
	}
	return ss
}

// readFrames decodes the frames of a segment's body (after its header),
// up to the first frame cut short or damaged; rest is how many bytes were
// left unread there (0 when the body ended with a whole frame).
func readFrames(body []byte) (recs []*store.AuditRecord, rest int) {
	for len(body) > 0 {
		if len(body) < frameHeader {
			return recs, len(body)
		}
		n := binary.BigEndian.Uint32(body)
		sum := binary.BigEndian.Uint32(body[4:])
		if n > maxFrame || uint64(n) > uint64(len(body)-frameHeader) {
			return recs, len(body)
		}
		payload := body[frameHeader : frameHeader+int(n)]
		if crc32.Checksum(payload, castagnoli) != sum {
			return recs, len(body)
		}
		rec, err := decodeRecord(payload)
		if err != nil {
			return recs, len(body)
		}
		recs = append(recs, rec)
		body = body[frameHeader+int(n):]
	}
	return recs, 0
}
