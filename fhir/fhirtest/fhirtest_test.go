package fhirtest

import "testing"

// fakeTB records a failure instead of stopping the test, so the helper's
// refusal can itself be checked.
type fakeTB struct {
	testing.TB
	failed bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Fatalf(string, ...any) { f.failed = true }

func TestRequireValidR4(t *testing.T) {
	cases := []struct {
		name  string
		body  string
		valid bool
	}{
		{"minimal patient", `{"resourceType":"Patient","id":"p1","gender":"female"}`, true},
		{"bad gender code", `{"resourceType":"Patient","id":"p1","gender":"F"}`, false},
		{"bad date", `{"resourceType":"Patient","birthDate":"03/03/1988"}`, false},
		{"service request missing intent", `{"resourceType":"ServiceRequest","status":"active","subject":{"reference":"Patient/1"}}`, false},
		{"not json", `{`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeTB{TB: t}
			RequireValidR4(f, []byte(tc.body))
			if f.failed == tc.valid {
				t.Errorf("valid=%v but helper failed=%v", tc.valid, f.failed)
			}
		})
	}
}
