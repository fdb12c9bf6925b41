package fhir_test

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir/fhirtest"
)

var cursorKey = []byte("0123456789abcdef0123456789abcdef")

const binding = "acme|ServiceRequest|100|status=active"

func TestCursors(t *testing.T) {
	c := fhir.NewCursors(cursorKey)
	payload := []byte(`{"t":"DDB_NEXT_TOKEN","s":3}`)
	sealed := c.Seal(binding, payload)
	raw, err := base64.RawURLEncoding.DecodeString(sealed)
	require.NoError(t, err)

	flip := func(i int) string {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x01
		return base64.RawURLEncoding.EncodeToString(b)
	}
	cases := []struct {
		name    string
		cursors *fhir.Cursors
		binding string
		cursor  string
		wantOK  bool
	}{
		{name: "round trip", cursors: c, binding: binding, cursor: sealed, wantOK: true},
		{name: "same key, new Cursors", cursors: fhir.NewCursors(cursorKey), binding: binding, cursor: sealed, wantOK: true},
		{name: "version byte tampered", cursors: c, binding: binding, cursor: flip(0)},
		{name: "payload tampered", cursors: c, binding: binding, cursor: flip(5)},
		{name: "mac tampered", cursors: c, binding: binding, cursor: flip(len(raw) - 1)},
		{name: "truncated", cursors: c, binding: binding, cursor: sealed[:len(sealed)-4]},
		{name: "other search", cursors: c, binding: "acme|ServiceRequest|100|status=completed", cursor: sealed},
		{name: "other domain", cursors: c, binding: "other|ServiceRequest|100|status=active", cursor: sealed},
		{name: "binding and payload boundary moved", cursors: c, binding: binding + `{`, cursor: c.Seal(binding, payload[1:])},
		{name: "other key", cursors: fhir.NewCursors([]byte("another key")), binding: binding, cursor: sealed},
		{name: "random key differs", cursors: fhir.NewCursors(nil), binding: binding, cursor: sealed},
		{name: "not base64", cursors: c, binding: binding, cursor: "***"},
		{name: "padded base64", cursors: c, binding: binding, cursor: sealed + "="},
		{name: "empty", cursors: c, binding: binding, cursor: ""},
		{name: "huge", cursors: c, binding: binding, cursor: strings.Repeat("A", 10000)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cursors.Open(tc.binding, tc.cursor)
			if tc.wantOK {
				require.NoError(t, err)
				assert.Equal(t, payload, got)
				return
			}
			assert.Nil(t, got)
			var fe *fhir.Error
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, http.StatusBadRequest, fe.Status)
			assert.Equal(t, "invalid", fe.Issues[0].Code)
			fhirtest.RequireValidR4(t, fhir.OutcomeJSON(fe.Issues...))
		})
	}

	t.Run("empty payload round trips", func(t *testing.T) {
		got, err := c.Open(binding, c.Seal(binding, nil))
		require.NoError(t, err)
		assert.Empty(t, got)
	})
	t.Run("cursor is url safe", func(t *testing.T) {
		s := c.Seal(binding, []byte("\xff\xfe?&=/+ payload"))
		assert.NotContains(t, s, "+")
		assert.NotContains(t, s, "/")
		assert.NotContains(t, s, "=")
	})
	t.Run("key is copied", func(t *testing.T) {
		key := append([]byte(nil), cursorKey...)
		c := fhir.NewCursors(key)
		s := c.Seal(binding, payload)
		key[0] ^= 0xff
		_, err := c.Open(binding, s)
		assert.NoError(t, err)
	})
}

func FuzzCursorsOpen(f *testing.F) {
	c := fhir.NewCursors(cursorKey)
	f.Add(binding, c.Seal(binding, []byte(`{"t":"x","s":1}`)))
	f.Add(binding, "")
	f.Add("", "AQ")
	f.Add("b", strings.Repeat("_", 60))
	f.Fuzz(func(t *testing.T, b, cursor string) {
		payload, err := c.Open(b, cursor)
		if err != nil {
			require.Nil(t, payload)
			var fe *fhir.Error
			require.ErrorAs(t, err, &fe)
			require.Equal(t, http.StatusBadRequest, fe.Status)
			return
		}
		// Whatever opens must be exactly what sealing it again gives: a
		// forgery would have to have found the MAC.
		require.Equal(t, cursor, c.Seal(b, payload))
	})
}
