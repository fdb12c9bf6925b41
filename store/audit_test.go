package store_test

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

func TestAuditQuery(t *testing.T) {
	tests := []struct {
		name   string
		typ    string
		params url.Values
		want   string
	}{
		{"no parameters", "ServiceRequest", nil, "ServiceRequest"},
		{"names sorted, values dropped", "ServiceRequest",
			url.Values{"status": {"active"}, "patient": {"Patient/1"}, "_count": {"5", "6"}},
			"ServiceRequest?_count&patient&status"},
		{"modifiers kept", "Patient", url.Values{"name:exact": {"Citizen"}, "birthdate": {"1970-01-01"}},
			"Patient?birthdate&name:exact"},
		{"separators in names escaped", "Patient", url.Values{"a=b&c": {"x"}}, "Patient?a%3Db%26c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := store.AuditQuery(tt.typ, tt.params)
			assert.Equal(t, tt.want, got)
			assert.NotContains(t, got, "=", "no values")
			for _, vs := range tt.params {
				for _, v := range vs {
					assert.NotContains(t, got, v)
				}
			}
		})
	}
}

// TestNewAuditIDTimeOrdered: ids made one after the other sort in that
// order, as strings (the tables' key), and start with the time in
// milliseconds; the rest stays random enough that two processes do not
// meet.
func TestNewAuditIDTimeOrdered(t *testing.T) {
	before := time.Now().UnixMilli()
	ids := make([]string, 10_000)
	for i := range ids {
		ids[i] = store.NewAuditID()
	}
	after := time.Now().UnixMilli()
	assert.True(t, slices.IsSorted(ids), "ids sort in the order they were made")
	assert.Len(t, slices.Compact(slices.Clone(ids)), len(ids), "no id twice")
	// Made faster than one each 256 ns, ids run ahead of the clock (uuid
	// keeps them increasing): the last may be up to that much ahead.
	ahead := int64(len(ids))*256/int64(time.Millisecond) + 1
	for _, id := range []string{ids[0], ids[len(ids)-1]} {
		require.Len(t, id, 32)
		require.Regexp(t, `^[0-9a-f]{32}$`, id)
		assert.Equal(t, strings.ToLower(id), id)
		ms, err := strconv.ParseInt(id[:12], 16, 64)
		require.NoError(t, err)
		assert.True(t, before <= ms && ms <= after+ahead, "%s: time %d not in [%d, %d+%d]", id, ms, before, after, ahead)
		assert.Equal(t, byte('7'), id[12], "a version 7 UUID")
	}
	// The random part differs between ids made in the same millisecond.
	assert.NotEqual(t, ids[0][16:], ids[1][16:])
}
