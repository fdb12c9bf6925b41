package fhir_test

import (
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
