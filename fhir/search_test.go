package fhir_test

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir/fhirtest"
)

var srSpec = fhir.SearchSpec{
	Resource: "ServiceRequest",
	Params: []fhir.ParamSpec{
		{Name: "_id", Type: "token"},
		{Name: "identifier", Type: "token"},
		{Name: "patient", Type: "reference"},
		{Name: "status", Type: "token"},
		{Name: "_cursor", Type: "special"},
	},
	Includes: []string{"ServiceRequest:subject", "ServiceRequest:requester"},
}

func TestParseSearch(t *testing.T) {
	cases := []struct {
		name     string
		query    string
		prefer   string
		want     *fhir.Query // Values is filled in from query
		wantCode string      // issue code of a 400; "" for success
	}{
		{
			name:  "defaults",
			query: "",
			want:  &fhir.Query{Count: 100, Params: map[string][]string{}},
		},
		{
			name:  "count and params",
			query: "_count=20&patient=Patient/p1&status=active,on-hold",
			want:  &fhir.Query{Count: 20, Params: map[string][]string{"patient": {"Patient/p1"}, "status": {"active,on-hold"}}},
		},
		{
			name:  "count clamped to max",
			query: "_count=100000",
			want:  &fhir.Query{Count: 500, Params: map[string][]string{}},
		},
		{
			name:  "format and pretty are the server's",
			query: "_format=json&_pretty=true",
			want:  &fhir.Query{Count: 100, Params: map[string][]string{}},
		},
		{
			name:  "includes kept in order without duplicates",
			query: "_include=ServiceRequest:requester&_include=ServiceRequest:subject&_include=ServiceRequest:requester",
			want: &fhir.Query{Count: 100, Params: map[string][]string{},
				Includes: []string{"ServiceRequest:requester", "ServiceRequest:subject"}},
		},
		{
			name:  "lenient ignores unknown params",
			query: "_sort=-date&foo=1&_summary=true&status=active&foo:exact=2",
			want: &fhir.Query{Count: 100, Params: map[string][]string{"status": {"active"}},
				Ignored: []string{"_sort", "_summary", "foo", "foo:exact"}},
		},
		{
			name:  "lenient ignores unknown include",
			query: "_include=ServiceRequest:performer&_include=ServiceRequest:subject&_include=*",
			want: &fhir.Query{Count: 100, Params: map[string][]string{}, Includes: []string{"ServiceRequest:subject"},
				Ignored: []string{"_include=*", "_include=ServiceRequest:performer"}},
		},
		{
			name:   "explicit lenient",
			query:  "foo=1",
			prefer: "handling=lenient",
			want:   &fhir.Query{Count: 100, Params: map[string][]string{}, Ignored: []string{"foo"}},
		},
		{
			name:  "empty values skipped",
			query: "status=&_count=&patient=Patient/p1",
			want:  &fhir.Query{Count: 100, Params: map[string][]string{"patient": {"Patient/p1"}}},
		},
		{
			name:   "strict accepts known params",
			query:  "status=active&_include=ServiceRequest:subject&_format=json",
			prefer: "handling=strict",
			want: &fhir.Query{Count: 100, Params: map[string][]string{"status": {"active"}},
				Includes: []string{"ServiceRequest:subject"}},
		},
		{
			name:  "type modifier on reference",
			query: "patient:Patient=p1",
			want:  &fhir.Query{Count: 100, Params: map[string][]string{"patient": {"Patient/p1"}}},
		},
		{
			name:  "type modifier with alternatives and full references",
			query: "patient:Patient=p1,Patient/p2",
			want:  &fhir.Query{Count: 100, Params: map[string][]string{"patient": {"Patient/p1,Patient/p2"}}},
		},
		{name: "type modifier contradicting value", query: "patient:Patient=Group/g1", wantCode: "value"},
		{name: "type modifier on token", query: "status:Patient=active", wantCode: "not-supported"},
		{name: "modifier and plain form repeat", query: "patient=Patient/p1&patient:Patient=p2", wantCode: "not-supported"},
		{name: "strict refuses unknown param", query: "foo=1", prefer: "handling=strict", wantCode: "not-supported"},
		{name: "strict among other preferences", query: "_sort=date", prefer: `return=minimal, handling="strict"`, wantCode: "not-supported"},
		{name: "strict refuses unknown include", query: "_include=Patient:organization", prefer: "HANDLING=STRICT", wantCode: "not-supported"},
		{name: "count not a number", query: "_count=ten", wantCode: "value"},
		{name: "count negative", query: "_count=-1", wantCode: "value"},
		{name: "count zero", query: "_count=0", wantCode: "not-supported"},
		{name: "count repeated", query: "_count=1&_count=2", wantCode: "not-supported"},
		{name: "param repeated", query: "patient=p1&patient=p2", wantCode: "not-supported"},
		{name: "modifier exact", query: "identifier:exact=123", wantCode: "not-supported"},
		{name: "modifier missing", query: "patient:missing=true", wantCode: "not-supported"},
		{name: "modifier not even when lenient", query: "status:not=active", prefer: "handling=lenient", wantCode: "not-supported"},
		{name: "include iterate", query: "_include:iterate=ServiceRequest:subject", wantCode: "not-supported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			values, err := url.ParseQuery(tc.query)
			require.NoError(t, err)
			q, err := fhir.ParseSearch(values, tc.prefer, srSpec, 100, 500)
			if tc.wantCode != "" {
				var fe *fhir.Error
				require.True(t, errors.As(err, &fe), "want *fhir.Error, got %v", err)
				assert.Equal(t, http.StatusBadRequest, fe.Status)
				require.Len(t, fe.Issues, 1)
				assert.Equal(t, tc.wantCode, fe.Issues[0].Code)
				assert.NotEmpty(t, fe.Issues[0].Diagnostics)
				fhirtest.RequireValidR4(t, fhir.OutcomeJSON(fe.Issues...))
				return
			}
			require.NoError(t, err)
			tc.want.Values = values
			assert.Equal(t, tc.want, q)
		})
	}
}

func TestStrictHandling(t *testing.T) {
	cases := []struct {
		prefer string
		want   bool
	}{
		{"", false},
		{"handling=strict", true},
		{"handling=lenient", false},
		{"return=representation; handling=strict", true},
		{" handling = strict ", true},
		{`handling="strict"`, true},
		{"handling=strictly", false},
	}
	for _, tc := range cases {
		t.Run(tc.prefer, func(t *testing.T) {
			assert.Equal(t, tc.want, fhir.StrictHandling(tc.prefer))
		})
	}
}

func TestSplitValues(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want []string
	}{
		{"single", "active", []string{"active"}},
		{"alternatives", "active,on-hold", []string{"active", "on-hold"}},
		{"escaped comma", `a\,b,c`, []string{"a,b", "c"}},
		{"other escapes kept", `sys\|x|code,d`, []string{`sys\|x|code`, "d"}},
		{"escaped backslash before comma", `a\\,b`, []string{`a\\`, "b"}},
		{"empty alternatives", ",", []string{"", ""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, fhir.SplitValues(tc.in))
		})
	}
}

func TestParseToken(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want fhir.Token
	}{
		{"code only", "active", fhir.Token{Code: "active"}},
		{"system and code", "http://loinc.org|24627-2", fhir.Token{System: "http://loinc.org", Code: "24627-2", HasSystem: true}},
		{"no system", "|123", fhir.Token{Code: "123", HasSystem: true}},
		{"system only", "urn:dicom:uid|", fhir.Token{System: "urn:dicom:uid", HasSystem: true}},
		{"code with second pipe", "s|a|b", fhir.Token{System: "s", Code: "a|b", HasSystem: true}},
		{"escaped pipe in code", `a\|b`, fhir.Token{Code: "a|b"}},
		{"escaped pipe in system", `s\|1|c`, fhir.Token{System: "s|1", Code: "c", HasSystem: true}},
		{"escaped backslash then pipe", `s\\|c`, fhir.Token{System: `s\`, Code: "c", HasSystem: true}},
		{"escaped comma and dollar", `a\,b\$c`, fhir.Token{Code: "a,b$c"}},
		{"empty", "", fhir.Token{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, fhir.ParseToken(tc.in))
		})
	}
}

func TestParseReference(t *testing.T) {
	cases := []struct {
		name       string
		in         string
		defaultTyp string
		wantType   string
		wantID     string
		wantErr    bool
	}{
		{name: "type and id", in: "Patient/123", defaultTyp: "Patient", wantType: "Patient", wantID: "123"},
		{name: "bare id takes default", in: "123", defaultTyp: "Patient", wantType: "Patient", wantID: "123"},
		{name: "other type kept", in: "Group/g-1", defaultTyp: "Patient", wantType: "Group", wantID: "g-1"},
		{name: "absolute url", in: "https://fhir.example.org/fhir/acme/Patient/p.1", defaultTyp: "Patient", wantType: "Patient", wantID: "p.1"},
		{name: "history dropped", in: "Patient/123/_history/2", defaultTyp: "", wantType: "Patient", wantID: "123"},
		{name: "absolute url with history", in: "http://x/fhir/Patient/9/_history/1", defaultTyp: "", wantType: "Patient", wantID: "9"},
		{name: "bare id without default", in: "123", defaultTyp: "", wantErr: true},
		{name: "empty", in: "", defaultTyp: "Patient", wantErr: true},
		{name: "id too long", in: "Patient/" + string(make([]byte, 65)), defaultTyp: "Patient", wantErr: true},
		{name: "bad id characters", in: "Patient/a b", defaultTyp: "Patient", wantErr: true},
		{name: "lower case type", in: "patient/1", defaultTyp: "Patient", wantErr: true},
		{name: "relative path too long", in: "fhir/acme/Patient/1", defaultTyp: "Patient", wantErr: true},
		{name: "urn", in: "urn:uuid:6f1c2a8e-0d5b-4f3e-9a51-2f6b7c1d9e40", defaultTyp: "Patient", wantErr: true},
		{name: "trailing slash", in: "Patient/", defaultTyp: "Patient", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			typ, id, err := fhir.ParseReference(tc.in, tc.defaultTyp)
			if tc.wantErr {
				var fe *fhir.Error
				require.ErrorAs(t, err, &fe)
				assert.Equal(t, http.StatusBadRequest, fe.Status)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantType, typ)
			assert.Equal(t, tc.wantID, id)
		})
	}
}

// TestParseSearchBoundsValues: past MaxSearchValues values, counted over
// repeats and comma-separated alternatives, a search is refused as too
// costly; at the bound it is served.
func TestParseSearchBoundsValues(t *testing.T) {
	list := func(n int) string {
		s := make([]string, n)
		for i := range s {
			s[i] = "x" + strconv.Itoa(i)
		}
		return strings.Join(s, ",")
	}
	for _, tc := range []struct {
		query string
		ok    bool
	}{
		{"identifier=" + list(fhir.MaxSearchValues), true},
		{"identifier=" + list(fhir.MaxSearchValues+1), false},
		{"identifier=" + list(60) + "&status=" + list(41), false},
		{"identifier=" + list(60) + "&status=" + list(40), true},
	} {
		v, err := url.ParseQuery(tc.query)
		require.NoError(t, err)
		_, err = fhir.ParseSearch(v, "", srSpec, 100, 500)
		if tc.ok {
			assert.NoError(t, err)
			continue
		}
		var fe *fhir.Error
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, http.StatusBadRequest, fe.Status)
		require.NotEmpty(t, fe.Issues)
		assert.Equal(t, "too-costly", fe.Issues[0].Code)
	}
}
