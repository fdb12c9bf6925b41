package fhir_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
)

func TestDateParam(t *testing.T) {
	syd, err := time.LoadLocation("Australia/Sydney")
	require.NoError(t, err)
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		require.NoError(t, err)
		return v
	}
	for _, tc := range []struct {
		in             string
		prefix, lo, hi string
	}{
		{"2026-12-02", "eq", "2026-12-02T00:00:00+11:00", "2026-12-03T00:00:00+11:00"},
		{"ge2026-12", "ge", "2026-12-01T00:00:00+11:00", "2027-01-01T00:00:00+11:00"},
		{"lt2026", "lt", "2026-01-01T00:00:00+11:00", "2027-01-01T00:00:00+11:00"},
		{"le2026-12-02T10:15", "le", "2026-12-02T10:15:00+11:00", "2026-12-02T10:16:00+11:00"},
		{"2026-12-02T10:15:30Z", "eq", "2026-12-02T10:15:30Z", "2026-12-02T10:15:31Z"},
		{"gt2026-12-02T10:15:30.25+08:00", "gt", "2026-12-02T10:15:30.25+08:00", "2026-12-02T10:15:30.26+08:00"},
		// Leading zeros are decimal (08 and 09 are not octal).
		{"2026-08-09T09:08", "eq", "2026-08-09T09:08:00+10:00", "2026-08-09T09:09:00+10:00"},
		// The day clocks go forward in Sydney has 23 hours.
		{"2026-10-04", "eq", "2026-10-04T00:00:00+10:00", "2026-10-05T00:00:00+11:00"},
	} {
		d, err := fhir.ParseDateParam(tc.in, syd)
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.prefix, d.Prefix, tc.in)
		assert.True(t, at(tc.lo).Equal(d.Lo), "%s: lo %s", tc.in, d.Lo)
		assert.True(t, at(tc.hi).Equal(d.Hi), "%s: hi %s", tc.in, d.Hi)
	}
	for _, bad := range []string{"", "2026-13-01", "2026-02-30", "xx2026", "2026-12-02T25:00", "2026/12/02", "2026-12-02T10", "eq"} {
		_, err := fhir.ParseDateParam(bad, syd)
		assert.Error(t, err, bad)
	}

	var since, until time.Time
	for _, v := range []string{"ge2026-12-01", "le2026-12-02", "2026-12-02"} {
		d, err := fhir.ParseDateParam(v, syd)
		require.NoError(t, err)
		require.NoError(t, d.Narrow(&since, &until))
	}
	assert.True(t, at("2026-12-02T00:00:00+11:00").Equal(since), "ANDed: the tightest start")
	assert.True(t, at("2026-12-03T00:00:00+11:00").Equal(until), "and end")
	d, _ := fhir.ParseDateParam("ne2026", syd)
	assert.Error(t, d.Narrow(&since, &until))
}

// TestDateParamDaylightSaving: a local time without an offset that
// happens twice is its first occurrence, and one in the gap of clocks
// going forward takes the offset before the gap, east and west of UTC
// alike (time.Date picks differently by hemisphere), as the mapping
// reads QUBS's local times.
func TestDateParamDaylightSaving(t *testing.T) {
	for _, tc := range []struct {
		zone, in, lo string
	}{
		{"Europe/Berlin", "2031-10-26T02:30", "2031-10-26T02:30:00+02:00"},
		{"Europe/Berlin", "2031-03-30T02:30", "2031-03-30T02:30:00+01:00"},
		{"America/New_York", "2031-11-02T01:30", "2031-11-02T01:30:00-04:00"},
		{"America/New_York", "2031-03-09T02:30", "2031-03-09T02:30:00-05:00"},
		{"Australia/Sydney", "2025-04-06T02:30:15", "2025-04-06T02:30:15+11:00"},
		{"Australia/Sydney", "2025-10-05T02:30", "2025-10-05T02:30:00+10:00"},
		// Where clocks go forward at midnight the day begins at 01:00.
		{"America/Santiago", "2025-09-07", "2025-09-07T01:00:00-03:00"},
	} {
		loc, err := time.LoadLocation(tc.zone)
		require.NoError(t, err)
		d, err := fhir.ParseDateParam(tc.in, loc)
		require.NoError(t, err, tc.in)
		want, err := time.Parse(time.RFC3339, tc.lo)
		require.NoError(t, err)
		assert.True(t, want.Equal(d.Lo), "%s %s: lo %s, want %s", tc.zone, tc.in, d.Lo, want)
	}
}

// TestDateParamIn: a value without a time is a calendar date, read in the
// zone In is given; a value with a time is an instant already.
func TestDateParamIn(t *testing.T) {
	syd, err := time.LoadLocation("Australia/Sydney")
	require.NoError(t, err)
	perth, err := time.LoadLocation("Australia/Perth")
	require.NoError(t, err)
	for _, tc := range []struct {
		in, lo, hi string
	}{
		{"2031-03-05", "2031-03-05T00:00:00+08:00", "2031-03-06T00:00:00+08:00"},
		{"ge2031-03", "2031-03-01T00:00:00+08:00", "2031-04-01T00:00:00+08:00"},
		{"2031", "2031-01-01T00:00:00+08:00", "2032-01-01T00:00:00+08:00"},
		{"2031-12-31", "2031-12-31T00:00:00+08:00", "2032-01-01T00:00:00+08:00"},
		{"2031-03-05T10:00", "2031-03-05T10:00:00+11:00", "2031-03-05T10:01:00+11:00"},
		{"2031-03-05T10:00:00Z", "2031-03-05T10:00:00Z", "2031-03-05T10:00:01Z"},
	} {
		d, err := fhir.ParseDateParam(tc.in, syd)
		require.NoError(t, err, tc.in)
		p := d.In(perth)
		assert.Equal(t, !strings.Contains(tc.in, "T"), d.Calendar, tc.in)
		assert.Equal(t, d.Prefix, p.Prefix, tc.in)
		lo, _ := time.Parse(time.RFC3339, tc.lo)
		hi, _ := time.Parse(time.RFC3339, tc.hi)
		assert.True(t, lo.Equal(p.Lo), "%s: lo %s", tc.in, p.Lo)
		assert.True(t, hi.Equal(p.Hi), "%s: hi %s", tc.in, p.Hi)
	}
}
