package mapping

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultZone is the zone used when none is configured.
const DefaultZone = "Australia/Sydney"

// Zones maps QUBS scheduled sites to the IANA time zone their local dates
// and times are in. QUBS has a per-site time zone (SiteSettings.timeZone)
// but does not expose it to partners, so it is configuration:
// BRIDGE_DEFAULT_TIMEZONE and BRIDGE_SITE_TIMEZONES.
//
// A Zones is immutable and safe for concurrent use. A nil *Zones behaves
// as one holding only DefaultZone.
type Zones struct {
	def   *time.Location
	exact map[string]*time.Location // site name as configured, trimmed
	fold  map[string]*time.Location // lower-cased, for a QUBS spelling that differs in case only
}

// NewZones builds the zone table. defaultZone is an IANA name ("" means
// DefaultZone). siteZones is "Site A=Australia/Perth;Site B=Australia/Brisbane":
// site names may contain spaces, spaces around ';' and '=' are trimmed,
// empty entries (a trailing ';') are ignored. It fails on an unknown zone
// name, an entry without '=' or with an empty side, and a site named twice
// (case-insensitively) with different zones. "Local" is refused: a
// mapping must not depend on the host it runs on.
func NewZones(defaultZone, siteZones string) (*Zones, error) {
	defaultZone = strings.TrimSpace(defaultZone)
	if defaultZone == "" {
		defaultZone = DefaultZone
	}
	def, err := loadZone(defaultZone)
	if err != nil {
		return nil, fmt.Errorf("default time zone: %w", err)
	}
	z := &Zones{def: def, exact: map[string]*time.Location{}, fold: map[string]*time.Location{}}
	for i, entry := range strings.Split(siteZones, ";") {
		if strings.TrimSpace(entry) == "" {
			continue
		}
		site, zone, ok := strings.Cut(entry, "=")
		site, zone = strings.TrimSpace(site), strings.TrimSpace(zone)
		if !ok || site == "" || zone == "" {
			return nil, fmt.Errorf("site time zones: entry %d: want \"Site name=Area/City\", got %q", i+1, strings.TrimSpace(entry))
		}
		loc, err := loadZone(zone)
		if err != nil {
			return nil, fmt.Errorf("site time zones: entry %d (%q): %w", i+1, site, err)
		}
		key := strings.ToLower(site)
		if prev, dup := z.fold[key]; dup && prev.String() != loc.String() {
			return nil, fmt.Errorf("site time zones: site %q is given two zones, %s and %s", site, prev, loc)
		}
		z.exact[site] = loc
		z.fold[key] = loc
	}
	return z, nil
}

func loadZone(name string) (*time.Location, error) {
	if name == "Local" {
		return nil, errors.New(`"Local" is not allowed: name an IANA zone such as Australia/Sydney`)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q", name)
	}
	return loc, nil
}

// Default returns the zone of sites not configured, which is also the
// zone of dates given without one (BRIDGE_DEFAULT_TIMEZONE).
func (z *Zones) Default() *time.Location {
	if z == nil {
		return defaultLocation
	}
	return z.def
}

// For returns the zone of a scheduled site: the configured one (matched
// exactly after trimming, else case-insensitively), else the default.
func (z *Zones) For(site string) *time.Location {
	if z == nil {
		return defaultLocation
	}
	site = strings.TrimSpace(site)
	if loc, ok := z.exact[site]; ok {
		return loc
	}
	if len(z.fold) > 0 {
		var buf [64]byte
		if loc, ok := z.fold[string(appendLower(buf[:0], site))]; ok {
			return loc
		}
	}
	return z.def
}

var defaultLocation = func() *time.Location {
	loc, err := time.LoadLocation(DefaultZone)
	if err != nil {
		panic(err) // time/tzdata is embedded: cannot happen
	}
	return loc
}()

// localInstant resolves a site-local wall clock to an instant, returning
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
func localInstant(loc *time.Location, y int, mo time.Month, d, h, mi, s int) (offset int) {
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

// offsetBySearch is localInstant's answer the long way: every offset in
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

// formatOffset prints a UTC offset as FHIR wants it: ±hh:mm.
func formatOffset(b []byte, offset int) []byte {
	sign := byte('+')
	if offset < 0 {
		sign, offset = '-', -offset
	}
	offset /= 60
	return append(b, sign, byte('0'+offset/600), byte('0'+offset/60%10), ':', byte('0'+offset%60/10), byte('0'+offset%10))
}

// appendLower appends strings.ToLower(s), without allocating for the
// ASCII site names every worklist entry looks up.
func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return append(dst, strings.ToLower(s)...)
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}
