package qubs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

// checkDecode holds the fast path to encoding/json on one body: when it
// takes the body, encoding/json must succeed with a deeply equal value
// (nil and empty slices told apart), also once the body's bytes are
// overwritten (decodeJSON reuses its buffer). It reports whether it took
// it.
func checkDecode[T any, P interface {
	*T
	qubs.FastDecoder
}](t testing.TB, b []byte) bool {
	t.Helper()
	var want, got T
	errWant := json.Unmarshal(b, &want)
	reused := bytes.Clone(b)
	if !qubs.DecodeFast(reused, P(&got)) {
		var zero T
		if !reflect.DeepEqual(got, zero) {
			t.Fatalf("the fast path left %s half-decoded", b)
		}
		return false
	}
	if errWant != nil {
		t.Fatalf("fast path took %q, which encoding/json refuses: %v", b, errWant)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("fast path differs from encoding/json on %q:\n got %#v\nwant %#v", b, got, want)
	}
	for i := range reused {
		reused[i] = 'X'
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the fast path's result refers to the body it read: %q", b)
	}
	return true
}

// TestAppointmentDecodeGolden: the golden corpus of the mapping, every
// file taken by the fast path and decoded as encoding/json decodes it.
func TestAppointmentDecodeGolden(t *testing.T) {
	files, err := filepath.Glob("../mapping/testdata/*.qubs.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			require.NoError(t, err)
			assert.True(t, checkDecode[qubs.Appointment](t, b), "the fast path takes it")
			page := append(append([]byte(`{"items":[`), b...), `,`...)
			page = append(append(page, b...), `],"nextToken":"t1"}`...)
			assert.True(t, checkDecode[qubs.AppointmentPage](t, page), "the fast path takes it in a page")
		})
	}
}

// TestAppointmentDecodeSimulator: every page and appointment the seeded
// simulator serves, read over HTTP as the client reads them.
func TestAppointmentDecodeSimulator(t *testing.T) {
	sim, err := qubssim.Start("127.0.0.1:0", qubssim.Options{Seed: 1})
	require.NoError(t, err)
	t.Cleanup(func() { sim.Close() })
	cc := clientcredentials.Config{ClientID: qubssim.DefaultClientID, ClientSecret: qubssim.DefaultClientSecret,
		TokenURL: sim.TokenURL(), AuthStyle: oauth2.AuthStyleInParams}
	hc := cc.Client(context.Background())
	get := func(u string) []byte {
		resp, err := hc.Get(u)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
		return b
	}
	pages, items := 0, 0
	for _, dom := range sim.Domains() {
		base := sim.URL + "/integrations/v1/" + dom + "/reporting/appointments/"
		token := ""
		for {
			u := base + "pending?pageSize=37"
			if token != "" {
				u += "&nextToken=" + url.QueryEscape(token)
			}
			b := get(u)
			require.True(t, checkDecode[qubs.AppointmentPage](t, b), "the fast path takes every page")
			var p qubs.AppointmentPage
			require.NoError(t, json.Unmarshal(b, &p))
			pages++
			items += len(p.Items)
			if !p.More() {
				break
			}
			token = *p.NextToken
		}
		for i, id := range sim.PendingIDs(dom) {
			if i%5 != 0 { // a fifth of them: the pages had them all
				continue
			}
			require.True(t, checkDecode[qubs.Appointment](t, get(base+url.PathEscape(id))), id)
		}
	}
	t.Logf("%d pages, %d appointments", pages, items)
	assert.Greater(t, items, 100)
}

// FuzzAppointmentDecode: whatever the fast path takes, it decodes as
// encoding/json does; what encoding/json refuses, it never takes.
func FuzzAppointmentDecode(f *testing.F) {
	files, _ := filepath.Glob("../mapping/testdata/*.qubs.json")
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		`{"items":[],"nextToken":null}`,
		`{"items":null}`,
		`{"items":[{"appointmentId":"1","serviceItems":[]}],"nextToken":""}`,
		`{"items":[{"serviceItems":[{"code":"55028","x":[1,2.5e-3,{"y":null}]}, "a" ,7]}]}`,
		`{"items":[{"radiologistUser":{"username":"u","extra":true},"radiologistUser":null}]}`,
		`{"ITEMS":[]}`,
		`{"items":[{"Domain":"x"}]}`,
		`{"items":[{"domain":"a\u00e9"}]}`,
		`{"items":[{"reportNeededBy":"2025-06-02T10:00:00Z","dateOfBirth":"1950-01-01"}]}`,
		`{"items":[{"reportNeededBy":"not a time"}]}`,
		`{"items":[{"domain":5}]}`,
		`{"items":[null]}`,
		`{"unknown":[{"a":"\ud800"}, -0.0e+1, true, false, null]} `,
		`{"items":[]} x`,
		`{"items":[{"domain":"caf` + "\xc3\xa9" + `","priority":"` + "\xff" + `"}]}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode[qubs.AppointmentPage](t, b)
		checkDecode[qubs.Appointment](t, b)
	})
}
