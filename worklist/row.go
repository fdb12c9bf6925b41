package worklist

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/mapping"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// srView is the part of a ServiceRequest the index columns come from.
// Reading them back from the mapped JSON, rather than from the
// appointment, keeps search semantics exactly FHIR's on the resource a
// client (or a Subscription filter) sees.
type srView struct {
	ID         string `json:"id"`
	Status     string `json:"status"`
	Priority   string `json:"priority"`
	Identifier []struct {
		System string `json:"system"`
		Value  string `json:"value"`
	} `json:"identifier"`
	Code        *concept  `json:"code"`
	OrderDetail []concept `json:"orderDetail"`
	Subject     struct {
		Reference string `json:"reference"`
	} `json:"subject"`
	Requester *struct {
		Reference string `json:"reference"`
	} `json:"requester"`
	Performer []struct {
		Reference string `json:"reference"`
	} `json:"performer"`
	occurrenceView
	LocationCode []struct {
		Text string `json:"text"`
	} `json:"locationCode"`
	Extension []struct {
		URL           string `json:"url"`
		ValueDateTime string `json:"valueDateTime"`
	} `json:"extension"`
}

// occurrenceView is the part of a ServiceRequest the date columns come
// from (Dates).
type occurrenceView struct {
	OccurrenceDateTime string            `json:"occurrenceDateTime"`
	OccurrencePeriod   *occurrencePeriod `json:"occurrencePeriod"`
}

type occurrencePeriod struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

type concept struct {
	Coding []struct {
		System string `json:"system"`
		Code   string `json:"code"`
	} `json:"coding"`
}

// Row builds the index row of appointment a of domain, its ServiceRequest
// stamped with meta.lastUpdated = now (kept only when the store finds the
// content new or changed).
func Row(domain string, a *qubs.Appointment, z *mapping.Zones, now time.Time) (store.WorklistRow, error) {
	m, err := mapping.Map(a, z)
	if err != nil {
		return store.WorklistRow{}, err
	}
	appt, err := json.Marshal(a)
	if err != nil {
		return store.WorklistRow{}, fmt.Errorf("encoding appointment: %w", err)
	}
	plain := m.AppendServiceRequest(nil)
	var v srView
	if err := json.Unmarshal(plain, &v); err != nil {
		return store.WorklistRow{}, fmt.Errorf("reading the mapped ServiceRequest: %w", err)
	}
	sum := sha256.New()
	sum.Write(appt)
	sum.Write([]byte{0})
	sum.Write(plain)
	r := store.WorklistRow{
		Domain: domain, AppointmentID: a.AppointmentID, ID: v.ID,
		Patient: v.Subject.Reference, Status: v.Status, Priority: v.Priority,
		PriorityRank: store.WorklistPriorityRank(v.Priority),
		Appointment:  appt, Resource: WithLastUpdated(plain, v.ID, now),
		Digest: hex.EncodeToString(sum.Sum(nil)),
	}
	if v.Requester != nil {
		r.Requester = v.Requester.Reference
	}
	if len(v.Performer) > 0 {
		r.Performer = v.Performer[0].Reference
	}
	if len(v.LocationCode) > 0 {
		// As BRIDGE_SITE_TIMEZONES spells it, when it names the site in
		// another case: one spelling per configured site.
		r.Site = z.SiteName(v.LocationCode[0].Text)
	}
	loc := m.Zone()
	setDates(&r, &v.occurrenceView, &m)
	for _, e := range v.Extension {
		if e.URL == mapping.ExtReportNeededBy && e.ValueDateTime != "" {
			if d, err := fhir.ParseDateParam(e.ValueDateTime, loc); err == nil {
				r.NeededBy = &d.Lo
			}
		}
	}
	for _, id := range v.Identifier {
		r.Tokens = append(r.Tokens, store.WorklistToken{Param: "identifier", System: id.System, Code: id.Value})
	}
	if v.Code != nil {
		r.Tokens = appendCodings(r.Tokens, "code", *v.Code)
	}
	for _, od := range v.OrderDetail {
		r.Tokens = appendCodings(r.Tokens, "modality", od)
	}
	return r, nil
}

// Dates returns the date columns of m's index row, as Row writes them
// (occurrence and started, as instants and as the site's wall clock): a
// search that walks QUBS compares them as the index query does, on the
// appointments it maps anyway, without encoding them (server's
// walkDates).
func Dates(m *mapping.Mapped) store.WorklistRow {
	var v occurrenceView
	dt, start, end := m.Occurrence()
	v.OccurrenceDateTime = dt
	if start != "" || end != "" {
		v.OccurrencePeriod = &occurrencePeriod{Start: start, End: end}
	}
	var r store.WorklistRow
	setDates(&r, &v, m)
	return r
}

// setDates sets r's date columns from the mapped ServiceRequest's
// occurrence (v) and m's started, in the site's zone.
func setDates(r *store.WorklistRow, v *occurrenceView, m *mapping.Mapped) {
	loc := m.Zone()
	r.OccurrenceStart, r.OccurrenceEnd = occurrenceRange(v, loc)
	r.OccurrenceLocalStart, r.OccurrenceLocalEnd = wallClock(r.OccurrenceStart, loc, false), wallClock(r.OccurrenceEnd, loc, true)
	if lo, hi, ok := m.Started(); ok {
		r.StartedStart, r.StartedEnd = &lo, &hi
		r.StartedLocalStart, r.StartedLocalEnd = wallClock(&lo, loc, false), wallClock(&hi, loc, true)
	}
}

func appendCodings(dst []store.WorklistToken, param string, c concept) []store.WorklistToken {
	for _, cd := range c.Coding {
		if cd.Code != "" {
			dst = append(dst, store.WorklistToken{Param: param, System: cd.System, Code: cd.Code})
		}
	}
	return dst
}

// occurrenceRange is the range occurrence[x] stands for, end exclusive: a
// date is the whole site-local day (R4 search.html#date: a value without
// a zone is in the server's, here the site's), a period runs from the
// start of its start to the end of its end (an end missing: the start's
// own precision; a start missing: no start, open into the past). Nil when
// there is none or it cannot be read.
func occurrenceRange(v *occurrenceView, loc *time.Location) (lo, hi *time.Time) {
	parse := func(s string) (fhir.DateParam, bool) {
		if s == "" || strings.HasPrefix(s, "-") {
			return fhir.DateParam{}, false
		}
		d, err := fhir.ParseDateParam(s, loc)
		return d, err == nil
	}
	switch {
	case v.OccurrenceDateTime != "":
		if d, ok := parse(v.OccurrenceDateTime); ok {
			return &d.Lo, &d.Hi
		}
	case v.OccurrencePeriod != nil:
		s, okS := parse(v.OccurrencePeriod.Start)
		e, okE := parse(v.OccurrencePeriod.End)
		switch {
		case okS && okE:
			return &s.Lo, &e.Hi
		case okS:
			return &s.Lo, &s.Hi
		case okE:
			// No start: open into the past, as FHIR reads a Period whose
			// start is missing; the searches read the NULL start so
			// (server's dateAlternatives).
			return nil, &e.Hi
		}
	}
	return nil, nil
}

// wallClock is t as the site's wall clock (store.WorklistLocalText), ""
// for none; an exclusive end (end) is rounded up to the second, so that
// no part of its range falls out. The mapping wrote the study's instants
// from QUBS's local date and times in loc, so this is QUBS's wall clock
// again, whatever zone BRIDGE_SITE_TIMEZONES gives the site (but for a
// time QUBS gives in a spring-forward gap, which the mapping reads with
// the offset before the gap: an hour later here): a search value without
// a time is compared with it (server's siteDateAlt).
func wallClock(t *time.Time, loc *time.Location, end bool) string {
	if t == nil {
		return ""
	}
	at := t.In(loc)
	if s := at.Truncate(time.Second); end && !s.Equal(at) {
		at = s.Add(time.Second)
	}
	return store.WorklistLocalText(at)
}

// WithLastUpdated returns the ServiceRequest JSON sr (as the mapping
// encoders write it: `{"id":"<id>",...`) with meta.lastUpdated = at
// after its id.
func WithLastUpdated(sr []byte, id string, at time.Time) []byte {
	head := len(`{"id":""`) + len(id)
	if len(sr) < head || string(sr[:head]) != `{"id":"`+id+`"` {
		return sr
	}
	out := make([]byte, 0, len(sr)+48)
	out = append(out, sr[:head]...)
	out = append(out, `,"meta":{"lastUpdated":"`...)
	out = at.UTC().AppendFormat(out, "2006-01-02T15:04:05.000000Z07:00")
	out = append(out, `"}`...)
	return append(out, sr[head:]...)
}
