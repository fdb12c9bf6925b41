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
	// names are the configured spellings by their lower-cased keys (the
	// first, if a site is configured twice in two cases).
	names map[string]string
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
	z := &Zones{def: def, exact: map[string]*time.Location{}, fold: map[string]*time.Location{}, names: map[string]string{}}
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
		if _, ok := z.names[key]; !ok {
			z.names[key] = site
		}
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

// SiteName returns site as BRIDGE_SITE_TIMEZONES spells it when For
// finds its zone there (after trimming, in another case), else site
// trimmed: the worklist index keeps a study's site so, one spelling per
// configured site.
func (z *Zones) SiteName(site string) string {
	site = strings.TrimSpace(site)
	if z == nil {
		return site
	}
	if _, ok := z.exact[site]; ok {
		return site
	}
	if name, ok := z.names[strings.ToLower(site)]; ok {
		return name
	}
	return site
}

var defaultLocation = func() *time.Location {
	loc, err := time.LoadLocation(DefaultZone)
	if err != nil {
		panic(err) // time/tzdata is embedded: cannot happen
	}
	return loc
}()

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
