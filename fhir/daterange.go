package fhir

import (
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/internal/wallclock"
)

// DateParam is one value of a date search parameter (R4
// search.html#date): its prefix and the range [Lo, Hi) the value stands
// for at its precision. 2026-12-02 is the whole day, 2026-12 the whole
// month, 2026-12-02T10:00 the whole minute.
//
// A value with a time and no offset is in the zone ParseDateParam is
// given, the server's (R4: "Where both search parameters and resource
// element date times do not have time zones, the servers local time zone
// should be assumed"). A value without a time is a calendar date (R4:
// "Dates do not have time zones, and time zones should not be
// considered"): Calendar is set, and In reads it in another zone (in UTC,
// its span prints as the calendar's wall clock, which the worklist index
// compares with each study's own).
type DateParam struct {
	Prefix string
	Lo, Hi time.Time
	// Calendar is set for a year, month or day without a time.
	Calendar bool
	// year, month and day are a calendar value's fields; unit how many of
	// them it gives (1 a year, 2 a month, 3 a day).
	year, month, day, unit int
}

var dateParamRE = regexp.MustCompile(`^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$`)

// ParseDateParam parses "[prefix]value"; loc is the zone of values given
// without one. A local time that happens twice (clocks going back) is its
// first occurrence, one that never happens (clocks going forward) is read
// with the offset before the gap: as the mapping reads QUBS's local times
// (wallclock.Offset), so that searching for a study's own local time
// finds it.
func ParseDateParam(v string, loc *time.Location) (DateParam, error) {
	d := DateParam{Prefix: "eq"}
	if len(v) > 2 && v[0] >= 'a' && v[0] <= 'z' && v[1] >= 'a' && v[1] <= 'z' {
		d.Prefix, v = v[:2], v[2:]
	}
	switch d.Prefix {
	case "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap":
	default:
		return d, Errorf(http.StatusBadRequest, "value", "date prefix %q is not one of eq, ne, gt, lt, ge, le, sa, eb, ap", d.Prefix)
	}
	m := dateParamRE.FindStringSubmatch(v)
	if m == nil {
		return d, Errorf(http.StatusBadRequest, "value", "date %q is not a FHIR date or dateTime (YYYY, YYYY-MM, YYYY-MM-DD, or YYYY-MM-DDThh:mm[:ss[.fff]][Z|+hh:mm])", v)
	}
	zone := loc
	if m[8] != "" {
		t, err := time.Parse("Z07:00", m[8])
		if err != nil {
			return d, Errorf(http.StatusBadRequest, "value", "date %q has an invalid time zone", v)
		}
		zone = t.Location()
	}
	num := func(s string, def int) int {
		if s == "" {
			return def
		}
		// Atoi, not fmt.Sscan: Sscan reads a leading 0 as octal, so
		// "08" and "09" (August, 9 o'clock) came out as 0.
		n, _ := strconv.Atoi(s)
		return n
	}
	year, month, day := num(m[1], 0), num(m[2], 1), num(m[3], 1)
	hour, minute, sec := num(m[4], 0), num(m[5], 0), num(m[6], 0)
	var nsec int
	if m[7] != "" {
		frac := (m[7][1:] + "000000000")[:9]
		nsec = num(frac, 0)
	}
	if month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || sec > 59 {
		return d, Errorf(http.StatusBadRequest, "value", "date %q is out of range", v)
	}
	if _, _, dd := time.Date(year, time.Month(month), day, 0, 0, 0, 0, time.UTC).Date(); dd != day {
		return d, Errorf(http.StatusBadRequest, "value", "date %q does not exist", v)
	}
	if m[4] == "" {
		d.Calendar = true
		d.year, d.month, d.day = year, month, day
		switch {
		case m[2] == "":
			d.unit = 1
		case m[3] == "":
			d.unit = 2
		default:
			d.unit = 3
		}
		return d.In(zone), nil
	}
	d.Lo = wallclock.Time(zone, year, time.Month(month), day, hour, minute, sec, nsec)
	switch {
	case m[6] == "":
		d.Hi = d.Lo.Add(time.Minute)
	case m[7] == "":
		d.Hi = d.Lo.Add(time.Second)
	default:
		d.Hi = d.Lo.Add(time.Duration(pow10(9 - (len(m[7]) - 1))))
	}
	return d, nil
}

// In is d read in loc: for a calendar value, the range of that year,
// month or day in loc (a local day has 23 or 25 hours across a change of
// offset); any other value is an instant's range already, the same in
// every zone.
func (d DateParam) In(loc *time.Location) DateParam {
	if !d.Calendar {
		return d
	}
	y, mo, day := d.year, time.Month(d.month), d.day
	d.Lo = wallclock.Time(loc, y, mo, day, 0, 0, 0, 0)
	switch d.unit {
	case 1:
		d.Hi = wallclock.Time(loc, y+1, mo, day, 0, 0, 0, 0)
	case 2:
		d.Hi = wallclock.Time(loc, y, mo+1, day, 0, 0, 0, 0)
	default:
		d.Hi = wallclock.Time(loc, y, mo, day+1, 0, 0, 0, 0)
	}
	return d
}

func pow10(n int) int {
	p := 1
	for range n {
		p *= 10
	}
	return p
}

// Narrow applies the parameter to the half-open range [since, until) of
// point-in-time values (a zero bound is open). R4's rules for a point in
// time: eq is within the value's range, ge and gt at or after its start or
// end, le and lt before its end or start. ne, sa, eb and ap are refused:
// the bridge offers none.
func (d DateParam) Narrow(since, until *time.Time) error {
	later := func(b *time.Time, t time.Time) {
		if b.IsZero() || t.After(*b) {
			*b = t
		}
	}
	earlier := func(b *time.Time, t time.Time) {
		if b.IsZero() || t.Before(*b) {
			*b = t
		}
	}
	switch d.Prefix {
	case "eq":
		later(since, d.Lo)
		earlier(until, d.Hi)
	case "ge":
		later(since, d.Lo)
	case "gt":
		later(since, d.Hi)
	case "le":
		earlier(until, d.Hi)
	case "lt":
		earlier(until, d.Lo)
	default:
		return Errorf(http.StatusBadRequest, "not-supported", "date prefix %s is not supported here; use eq, ge, gt, le or lt", d.Prefix)
	}
	return nil
}
