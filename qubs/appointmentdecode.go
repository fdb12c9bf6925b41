package qubs

import (
	"bytes"
	"encoding/json"
	"time"
	"unicode/utf8"
)

// A hand-written decoder for the two answers the worklist reads most:
// AppointmentPage (list pending) and Appointment (get). encoding/json spends
// about 3,500 allocations on a page of 100 (reflection, one string per
// field); this one makes one string of the whole body and slices every
// field out of it, and keeps serviceItems as slices of one copy of theirs.
//
// It is a fast path, not a second JSON implementation: it takes only input
// whose meaning it is sure of and says "not mine" for anything else, which
// encoding/json then decodes, so results and errors are encoding/json's by
// construction. Not taken: syntax errors, a value of another JSON type than
// the field's, a key with an escape or one that matches a field only
// case-insensitively (encoding/json folds case), a key twice in one object
// (encoding/json merges), a string with an escape, a null page or null array
// element. Unknown fields are skipped, after checking their syntax as
// encoding/json does; null leaves a field at its zero value (nil for
// pointers and slices), and an empty array is an empty, non-nil slice, as
// with encoding/json. FuzzAppointmentDecode holds it to that.

// fastDecoder is what decodeJSON tries before encoding/json.
type fastDecoder interface {
	// decodeFast decodes b, reporting false (and leaving the receiver
	// untouched) when b is not for the fast path.
	decodeFast(b []byte) bool
}

func (p *AppointmentPage) decodeFast(b []byte) bool {
	d := decoder{b: b, s: string(b)}
	var out AppointmentPage
	if !d.page(&out) || !d.end() {
		return false
	}
	*p = out
	return true
}

func (a *Appointment) decodeFast(b []byte) bool {
	d := decoder{b: b, s: string(b)}
	var out Appointment
	d.ws()
	if !d.appointment(&out) || !d.end() {
		return false
	}
	*a = out
	return true
}

// decoder reads b; s is b as one string, which every decoded string is a
// slice of (one allocation per body instead of one per field). Nothing
// decoded refers to b itself, which the caller reuses: service items are
// copied into items, and pointer fields point into strs and times, chunks
// shared by many fields (a few allocations per page instead of one per
// field; a chunk lives as long as any field in it).
type decoder struct {
	b     []byte
	s     string
	pos   int
	items []byte
	strs  []string
	times []time.Time
}

// slabChunk is how many pointer fields of a kind share one allocation; a
// decoder's first chunk is smaller, since a single appointment has a few.
const slabChunk, firstSlabChunk = 64, 8

func chunkSize(n int) int {
	if n == 0 {
		return firstSlabChunk
	}
	return slabChunk
}

func (d *decoder) newString(v string) *string {
	if len(d.strs) == cap(d.strs) {
		d.strs = make([]string, 0, chunkSize(cap(d.strs)))
	}
	d.strs = append(d.strs, v)
	return &d.strs[len(d.strs)-1]
}

func (d *decoder) newTime() *time.Time {
	if len(d.times) == cap(d.times) {
		d.times = make([]time.Time, 0, chunkSize(cap(d.times)))
	}
	d.times = d.times[:len(d.times)+1]
	return &d.times[len(d.times)-1]
}

// item copies b[start:end] into the items arena. When the arena grows,
// the items already handed out keep the old array, which stays valid.
func (d *decoder) item(start, end int) ServiceItem {
	off := len(d.items)
	d.items = append(d.items, d.b[start:end]...)
	return ServiceItem(d.items[off:len(d.items):len(d.items)])
}

func (d *decoder) ws() {
	for d.pos < len(d.b) {
		switch d.b[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// end reports whether only whitespace is left.
func (d *decoder) end() bool {
	d.ws()
	return d.pos == len(d.b)
}

func (d *decoder) peek() byte {
	if d.pos < len(d.b) {
		return d.b[d.pos]
	}
	return 0
}

// lit consumes the literal word at pos.
func (d *decoder) lit(word string) bool {
	if len(d.b)-d.pos >= len(word) && d.s[d.pos:d.pos+len(word)] == word {
		d.pos += len(word)
		return true
	}
	return false
}

// null consumes a null at pos, if there is one.
func (d *decoder) null() bool { return d.peek() == 'n' && d.lit("null") }

// str reads a string at pos; false if there is none. A string without
// escapes and in valid UTF-8 (nearly all) is a slice of s; any other is
// decoded by encoding/json itself, so that escapes, surrogates and invalid
// UTF-8 come out exactly as it makes them.
func (d *decoder) str() (string, bool) {
	if d.peek() != '"' {
		return "", false
	}
	start := d.pos + 1
	ascii := true
	for i := start; i < len(d.b); i++ {
		c := d.b[i]
		switch {
		case c == '"':
			if !ascii && !utf8.Valid(d.b[start:i]) {
				return d.slowStr()
			}
			d.pos = i + 1
			return d.s[start:i], true
		case c == '\\':
			return d.slowStr()
		case c < 0x20:
			return "", false
		case c >= 0x80:
			ascii = false
		}
	}
	return "", false
}

func (d *decoder) slowStr() (string, bool) {
	start := d.pos
	if !d.skipString() {
		return "", false
	}
	var v string
	if json.Unmarshal(d.b[start:d.pos], &v) != nil {
		return "", false
	}
	return v, true
}

// object reads an object at pos, calling field for each key (without
// escapes) with pos at its value. field reports false to stop.
func (d *decoder) object(field func(key string) bool) bool {
	if d.peek() != '{' {
		return false
	}
	d.pos++
	d.ws()
	if d.peek() == '}' {
		d.pos++
		return true
	}
	for {
		d.ws()
		key, ok := d.str()
		if !ok {
			return false
		}
		d.ws()
		if d.peek() != ':' {
			return false
		}
		d.pos++
		d.ws()
		if !field(key) {
			return false
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.pos++
		case '}':
			d.pos++
			return true
		default:
			return false
		}
	}
}

// array reads an array at pos, calling elem with pos at each element.
func (d *decoder) array(elem func() bool) bool {
	if d.peek() != '[' {
		return false
	}
	d.pos++
	d.ws()
	if d.peek() == ']' {
		d.pos++
		return true
	}
	for {
		d.ws()
		if !elem() {
			return false
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.pos++
		case ']':
			d.pos++
			return true
		default:
			return false
		}
	}
}

// unknown handles a key that is not a field: its value is skipped, unless
// encoding/json would take it for a field by folding case.
func (d *decoder) unknown(key string, fields []string) bool {
	for i := 0; i < len(key); i++ {
		if key[i] >= 0x80 {
			return false // Unicode folding (K, ſ): leave it to encoding/json
		}
	}
	for _, f := range fields {
		if len(f) == len(key) && bytes.EqualFold([]byte(f), []byte(key)) {
			return false
		}
	}
	return d.skip(0)
}

// maxDepth bounds the nesting skip follows; deeper input goes to
// encoding/json, which has its own limit.
const maxDepth = 1000

// skip checks and steps over any JSON value at pos.
func (d *decoder) skip(depth int) bool {
	if depth > maxDepth {
		return false
	}
	switch c := d.peek(); {
	case c == '{':
		return d.object(func(string) bool { return d.skip(depth + 1) })
	case c == '[':
		return d.array(func() bool { return d.skip(depth + 1) })
	case c == '"':
		return d.skipString()
	case c == 't':
		return d.lit("true")
	case c == 'f':
		return d.lit("false")
	case c == 'n':
		return d.lit("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	}
	return false
}

// skipString steps over a string, escapes included, checking them as
// encoding/json does (invalid UTF-8 is accepted there, and so here).
func (d *decoder) skipString() bool {
	i := d.pos + 1
	for i < len(d.b) {
		c := d.b[i]
		switch {
		case c == '"':
			d.pos = i + 1
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if i+1 >= len(d.b) {
				return false
			}
			switch d.b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(d.b) {
					return false
				}
				for _, h := range d.b[i+2 : i+6] {
					if !isHex(h) {
						return false
					}
				}
				i += 6
			default:
				return false
			}
		default:
			i++
		}
	}
	return false
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// number steps over a number of RFC 8259's grammar.
func (d *decoder) number() bool {
	i := d.pos
	digits := func() int {
		n := 0
		for i < len(d.b) && d.b[i] >= '0' && d.b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(d.b) && d.b[i] == '-' {
		i++
	}
	if i < len(d.b) && d.b[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(d.b) && d.b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(d.b) && (d.b[i] == 'e' || d.b[i] == 'E') {
		i++
		if i < len(d.b) && (d.b[i] == '+' || d.b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	d.pos = i
	return true
}

// strField reads a string field: null leaves it alone.
func (d *decoder) strField(dst *string) bool {
	if d.null() {
		return true
	}
	v, ok := d.str()
	*dst = v
	return ok
}

// strPtr reads a *string field: null is nil.
func (d *decoder) strPtr(dst **string) bool {
	if d.null() {
		*dst = nil
		return true
	}
	v, ok := d.str()
	if !ok {
		return false
	}
	*dst = d.newString(v)
	return true
}

// timePtr reads a *time.Time field with time.Time's own UnmarshalJSON, as
// encoding/json does: null is nil.
func (d *decoder) timePtr(dst **time.Time) bool {
	if d.null() {
		*dst = nil
		return true
	}
	start := d.pos
	if _, ok := d.str(); !ok {
		return false
	}
	var t time.Time
	if t.UnmarshalJSON(d.b[start:d.pos]) != nil {
		return false
	}
	p := d.newTime()
	*p = t
	*dst = p
	return true
}

// seen tracks the fields of one object, so that a repeated key (which
// encoding/json merges) leaves the fast path.
type seen uint32

func (s *seen) first(i int) bool {
	if *s&(1<<i) != 0 {
		return false
	}
	*s |= 1 << i
	return true
}

var pageFields = []string{"items", "nextToken"}

func (d *decoder) page(p *AppointmentPage) bool {
	d.ws()
	var s seen
	return d.object(func(key string) bool {
		switch key {
		case "items":
			if !s.first(0) {
				return false
			}
			if d.null() {
				p.Items = nil
				return true
			}
			p.Items = make([]Appointment, 0, 100)
			return d.array(func() bool {
				p.Items = append(p.Items, Appointment{})
				return d.appointment(&p.Items[len(p.Items)-1])
			})
		case "nextToken":
			return s.first(1) && d.strPtr(&p.NextToken)
		}
		return d.unknown(key, pageFields)
	})
}

var appointmentFields = []string{"domain", "appointmentId", "status", "scheduledSite", "appointmentDate",
	"startTime", "endTime", "patientId", "patientName", "firstName", "lastName", "dateOfBirth", "gender",
	"modality", "studyDescription", "clinicalInfo", "doctorName", "clinicName", "priority", "reportNeededBy",
	"studyInstanceUid", "radiologistUser", "serviceItems"}

func (d *decoder) appointment(a *Appointment) bool {
	var s seen
	return d.object(func(key string) bool {
		var i int
		var ok bool
		switch key {
		case "domain":
			i, ok = 0, d.strField(&a.Domain)
		case "appointmentId":
			i, ok = 1, d.strField(&a.AppointmentID)
		case "status":
			i, ok = 2, d.strField((*string)(&a.Status))
		case "scheduledSite":
			i, ok = 3, d.strField(&a.ScheduledSite)
		case "appointmentDate":
			i, ok = 4, d.strPtr(&a.AppointmentDate)
		case "startTime":
			i, ok = 5, d.strPtr(&a.StartTime)
		case "endTime":
			i, ok = 6, d.strPtr(&a.EndTime)
		case "patientId":
			i, ok = 7, d.strField(&a.PatientID)
		case "patientName":
			i, ok = 8, d.strField(&a.PatientName)
		case "firstName":
			i, ok = 9, d.strField(&a.FirstName)
		case "lastName":
			i, ok = 10, d.strField(&a.LastName)
		case "dateOfBirth":
			i, ok = 11, d.strPtr(&a.DateOfBirth)
		case "gender":
			i, ok = 12, d.strField(&a.Gender)
		case "modality":
			i, ok = 13, d.strField(&a.Modality)
		case "studyDescription":
			i, ok = 14, d.strField(&a.StudyDescription)
		case "clinicalInfo":
			i, ok = 15, d.strField(&a.ClinicalInfo)
		case "doctorName":
			i, ok = 16, d.strField(&a.DoctorName)
		case "clinicName":
			i, ok = 17, d.strField(&a.ClinicName)
		case "priority":
			i, ok = 18, d.strField(&a.Priority)
		case "reportNeededBy":
			i, ok = 19, d.timePtr(&a.ReportNeededBy)
		case "studyInstanceUid":
			i, ok = 20, d.strField(&a.StudyInstanceUID)
		case "radiologistUser":
			i, ok = 21, d.user(&a.RadiologistUser)
		case "serviceItems":
			i, ok = 22, d.serviceItems(&a.ServiceItems)
		default:
			return d.unknown(key, appointmentFields)
		}
		return ok && s.first(i)
	})
}

var userFields = []string{"username", "firstName", "initials", "lastName", "role"}

func (d *decoder) user(dst **UserSummary) bool {
	if d.null() {
		*dst = nil
		return true
	}
	u := new(UserSummary)
	var s seen
	ok := d.object(func(key string) bool {
		var i int
		var ok bool
		switch key {
		case "username":
			i, ok = 0, d.strField(&u.Username)
		case "firstName":
			i, ok = 1, d.strField(&u.FirstName)
		case "initials":
			i, ok = 2, d.strField(&u.Initials)
		case "lastName":
			i, ok = 3, d.strField(&u.LastName)
		case "role":
			i, ok = 4, d.strField(&u.Role)
		default:
			return d.unknown(key, userFields)
		}
		return ok && s.first(i)
	})
	*dst = u
	return ok
}

// serviceItems keeps each item's exact bytes, as ServiceItem.UnmarshalJSON
// does, as a slice of the items arena (capacity capped, so appending
// copies).
func (d *decoder) serviceItems(dst *[]ServiceItem) bool {
	if d.null() {
		*dst = nil
		return true
	}
	items := []ServiceItem{}
	ok := d.array(func() bool {
		start := d.pos
		if !d.skip(1) { // null too: encoding/json hands it to UnmarshalJSON
			return false
		}
		items = append(items, d.item(start, d.pos))
		return true
	})
	*dst = items
	return ok
}

// Compile-time checks: the answers decodeJSON takes the fast path for.
var (
	_ fastDecoder = (*AppointmentPage)(nil)
	_ fastDecoder = (*Appointment)(nil)
)
