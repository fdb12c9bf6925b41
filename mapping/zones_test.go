package mapping

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewZones(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, def, sites string
		want             map[string]string // site -> zone name For must give
		wantErr          string
	}{
		{name: "defaults", want: map[string]string{"Anywhere": "Australia/Sydney"}},
		{name: "blank default is Sydney", def: "  ", want: map[string]string{"Anywhere": "Australia/Sydney"}},
		{
			name: "sites with spaces, trimmed around ; and =", def: "Australia/Melbourne",
			sites: " Site A=Australia/Perth ;Site B =  Australia/Brisbane;;  ",
			want: map[string]string{
				"Site A": "Australia/Perth", "Site B": "Australia/Brisbane", " Site A ": "Australia/Perth",
				"site a": "Australia/Perth", "SITE B": "Australia/Brisbane", "Site C": "Australia/Melbourne",
			},
		},
		{name: "same site twice with one zone", sites: "A=Australia/Perth;a=Australia/Perth", want: map[string]string{"A": "Australia/Perth"}},
		{name: "UTC is a zone", def: "UTC", want: map[string]string{"x": "UTC"}},
		{name: "bad default", def: "Australia/Nowhere", wantErr: `default time zone: unknown time zone "Australia/Nowhere"`},
		{name: "Local refused", def: "Local", wantErr: "Local"},
		{name: "bad site zone", sites: "A=Australia/Perth;B=Mars/Olympus", wantErr: `entry 2 ("B"): unknown time zone "Mars/Olympus"`},
		{name: "no equals", sites: "Site A Australia/Perth", wantErr: "entry 1"},
		{name: "empty site", sites: " = Australia/Perth", wantErr: "entry 1"},
		{name: "empty zone", sites: "A=Australia/Perth;B= ", wantErr: "entry 2"},
		{name: "site given two zones", sites: "A=Australia/Perth;a=Australia/Sydney", wantErr: "two zones"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z, err := NewZones(tt.def, tt.sites)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			for site, zone := range tt.want {
				assert.Equal(t, zone, z.For(site).String(), "site %q", site)
			}
		})
	}
	t.Run("nil Zones is Sydney", func(t *testing.T) {
		var z *Zones
		assert.Equal(t, "Australia/Sydney", z.For("Perth Imaging").String())
	})
}

// TestSiteName: a site For places by its configured entry is spelled as
// there; any other is only trimmed.
func TestSiteName(t *testing.T) {
	t.Parallel()
	z, err := NewZones("Australia/Sydney", "Perth Imaging=Australia/Perth;Coast=Australia/Brisbane;COAST=Australia/Brisbane")
	require.NoError(t, err)
	for in, want := range map[string]string{
		"Perth Imaging": "Perth Imaging", " perth IMAGING ": "Perth Imaging", "coast": "Coast", "COAST": "COAST",
		" Nowhere ": "Nowhere", "": "",
	} {
		assert.Equal(t, want, z.SiteName(in), "%q", in)
	}
	var none *Zones
	assert.Equal(t, "Perth", none.SiteName(" Perth "))
}

func TestLocalDateTime(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, zone, date, clock, want string
	}{
		{"Sydney summer is +11:00", "Australia/Sydney", "2025-01-12", "13:45:00", "2025-01-12T13:45:00+11:00"},
		{"Sydney winter is +10:00", "Australia/Sydney", "2025-07-15", "13:45:00", "2025-07-15T13:45:00+10:00"},
		{"Sydney fall back: last minute of daylight time", "Australia/Sydney", "2025-04-06", "01:59:59", "2025-04-06T01:59:59+11:00"},
		{"Sydney fall back: 02:00 ambiguous, first occurrence", "Australia/Sydney", "2025-04-06", "02:00:00", "2025-04-06T02:00:00+11:00"},
		{"Sydney fall back: 02:30 ambiguous, first occurrence", "Australia/Sydney", "2025-04-06", "02:30:00", "2025-04-06T02:30:00+11:00"},
		{"Sydney fall back: 03:00 is standard time", "Australia/Sydney", "2025-04-06", "03:00:00", "2025-04-06T03:00:00+10:00"},
		{"Sydney spring forward: 01:59:59 standard", "Australia/Sydney", "2025-10-05", "01:59:59", "2025-10-05T01:59:59+10:00"},
		{"Sydney spring forward: 02:00 does not exist, offset before the gap", "Australia/Sydney", "2025-10-05", "02:00:00", "2025-10-05T02:00:00+10:00"},
		{"Sydney spring forward: 02:30 does not exist, offset before the gap", "Australia/Sydney", "2025-10-05", "02:30:00", "2025-10-05T02:30:00+10:00"},
		{"Sydney spring forward: 03:00 daylight", "Australia/Sydney", "2025-10-05", "03:00:00", "2025-10-05T03:00:00+11:00"},
		{"Perth has no daylight saving (January)", "Australia/Perth", "2025-01-20", "08:00:00", "2025-01-20T08:00:00+08:00"},
		{"Perth has no daylight saving (July)", "Australia/Perth", "2025-07-20", "08:00:00", "2025-07-20T08:00:00+08:00"},
		{"Brisbane is +10:00 in summer", "Australia/Brisbane", "2025-01-20", "08:00:00", "2025-01-20T08:00:00+10:00"},
		{"Adelaide half hour", "Australia/Adelaide", "2025-01-20", "08:00:00", "2025-01-20T08:00:00+10:30"},
		{"Lord Howe half-hour daylight saving, ambiguous", "Australia/Lord_Howe", "2025-04-06", "01:45:00", "2025-04-06T01:45:00+11:00"},
		{"Lord Howe half-hour gap", "Australia/Lord_Howe", "2025-10-05", "02:15:00", "2025-10-05T02:15:00+10:30"},
		{"west of UTC", "America/New_York", "2025-03-09", "02:30:00", "2025-03-09T02:30:00-05:00"},
		{"UTC", "UTC", "2025-03-09", "02:30:00", "2025-03-09T02:30:00+00:00"},
		{"local mean time is truncated to minutes", "Australia/Sydney", "1890-01-01", "12:00:00", "1890-01-01T12:00:00+10:04"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loc, err := time.LoadLocation(tt.zone)
			require.NoError(t, err)
			d, ok := parseDate(&tt.date)
			require.True(t, ok)
			c, ok := parseClock(&tt.clock)
			require.True(t, ok)
			assert.Equal(t, tt.want, localDateTime(loc, d, c))
		})
	}
}

// TestLocalDateTimeSweep checks every quarter hour of 2025 in zones with
// whole-hour, half-hour and no daylight saving: each printed dateTime keeps
// the wall clock, and its offset is the zone's at that instant (or, in a
// gap, the one before the gap).
func TestLocalDateTimeSweep(t *testing.T) {
	t.Parallel()
	for _, zone := range []string{"Australia/Sydney", "Australia/Lord_Howe", "Australia/Perth", "America/Santiago", "Europe/London"} {
		t.Run(zone, func(t *testing.T) {
			loc, err := time.LoadLocation(zone)
			require.NoError(t, err)
			day := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
			for ; day.Year() == 2025; day = day.AddDate(0, 0, 1) {
				for clock := 0; clock < 24*3600; clock += 15 * 60 {
					s := localDateTime(loc, day, clock)
					want := time.Date(2025, day.Month(), day.Day(), clock/3600, clock/60%60, 0, 0, time.UTC).Format("2006-01-02T15:04:05")
					if s[:19] != want {
						t.Fatalf("%s: wall clock %s printed as %s", zone, want, s)
					}
					requireLocalOffset(t, s, loc)
				}
			}
		})
	}
}

func TestParseClockAndDate(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"00:00:00", "23:59:59", "13:45:00"} {
		_, ok := parseClock(&s)
		assert.True(t, ok, s)
	}
	for _, s := range []string{"", "24:00:00", "1:45:00", "13:45", "13:60:00", "13:45:60", "+1:45:00", "-1:45:00", "13:4 :00", "1:45 PM", "13:45:00Z"} {
		_, ok := parseClock(&s)
		assert.False(t, ok, s)
	}
	for _, s := range []string{"2025-01-12", "0001-01-01", "9999-12-31", "2024-02-29"} {
		_, ok := parseDate(&s)
		assert.True(t, ok, s)
	}
	for _, s := range []string{"", "0000-01-01", "2025-02-29", "2025-1-12", "12/01/2025", "2025-01-12T00:00:00Z", "20250112"} {
		_, ok := parseDate(&s)
		assert.False(t, ok, s)
	}
	_, ok := parseDate(nil)
	assert.False(t, ok)
	_, ok = parseClock(nil)
	assert.False(t, ok)
}
