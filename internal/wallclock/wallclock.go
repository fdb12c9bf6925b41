// Package wallclock turns a site-local wall clock into an instant, the
// one way every part of the bridge reads one: the mapping when it dates an
// appointment from QUBS's local date and time, and date searches when they
// read a value without an offset. Were they to choose differently for a
// wall clock that happens twice or never, a search for a study's own local
// time would miss it (time.Date leaves that choice open, and makes it
// differently east and west of UTC).
package wallclock

import "time"

// Offset resolves a site-local wall clock to an instant, returning
// the UTC offset (seconds east) to print next to the wall clock.
//
// QUBS sends local dates and times without an offset, and two wall clocks a
// year are not one instant:
//   - ambiguous (clocks go back; Sydney 2025-04-06 02:30 happens at +11:00
//     and again at +10:00): the earlier instant, the offset in force before
//     the change. This is java.time's and RFC 5545's choice, and for an
//     appointment the first occurrence is the one the clinic meant.
//   - nonexistent (clocks go forward; Sydney 2025-10-05 02:30): the offset
//     in force before the gap, i.e. the instant the clock would show
//     03:30 +11:00, as java.time does. The wall clock printed stays 02:30
//     (with +10:00), so the QUBS value is still readable in the output.
//
// The wall clock is always printed as QUBS sent it, with the offset chosen
// here: "2025-10-05T02:30:00+10:00" names the right instant and keeps
// "02:30". A historical offset that is not whole minutes (local mean time,
// before 1895 in Sydney) is truncated to minutes, as FHIR offsets have no
// seconds.
func Offset(loc *time.Location, y int, mo time.Month, d, h, mi, s int) (offset int) {
	wall := time.Date(y, mo, d, h, mi, s, 0, time.UTC).Unix()
	guess := time.Date(y, mo, d, h, mi, s, 0, loc)
	_, o0 := guess.Zone()
	start, end := guess.ZoneBounds()
	if g := guess.Unix(); (start.IsZero() || g-start.Unix() > 2*86400) && (end.IsZero() || end.Unix()-g > 2*86400) {
		// Days from any change of offset (offsets differ by less than a
		// day): o0 is the only offset that fits, as the search below
		// would find. Nearly every appointment takes this way.
		return o0
	}
	return offsetBySearch(loc, wall, guess)
}

// offsetBySearch is Offset's answer the long way: every offset in
// force around the guessed instant is tried against the wall clock.
func offsetBySearch(loc *time.Location, wall int64, guess time.Time) int {
	_, o0 := guess.Zone()
	start, end := guess.ZoneBounds()
	candidates := [3]int{o0, o0, o0}
	if !start.IsZero() {
		_, candidates[1] = start.Add(-time.Second).In(loc).Zone()
	}
	if !end.IsZero() {
		_, candidates[2] = end.In(loc).Zone()
	}
	best, found := 0, false
	lowest := candidates[0]
	for _, o := range candidates {
		lowest = min(lowest, o)
		if _, got := time.Unix(wall-int64(o), 0).In(loc).Zone(); got != o {
			continue
		}
		if !found || o > best {
			// A larger offset is an earlier instant for the same wall clock.
			best, found = o, true
		}
	}
	if !found {
		// In a gap the offset before the change is the smaller one.
		best = lowest
	}
	return best
}

// Time is the instant of the wall clock y-mo-d h:mi:s.ns in loc, as
// Offset resolves it. Out-of-range fields are normalised as time.Date
// does (the 32nd of a month is the next month's 1st).
func Time(loc *time.Location, y int, mo time.Month, d, h, mi, s, ns int) time.Time {
	wall := time.Date(y, mo, d, h, mi, s, ns, time.UTC)
	y, mo, d = wall.Date()
	h, mi, s = wall.Clock()
	off := Offset(loc, y, mo, d, h, mi, s)
	return wall.Add(-time.Duration(off) * time.Second).In(loc)
}
