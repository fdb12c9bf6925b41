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
		{"bundle", `{"resourceType":"Bundle","type":"searchset","entry":[{"fullUrl":"http://x/Patient/p1","resource":{"resourceType":"Patient","id":"p1"},"search":{"mode":"match"}}]}`, true},
		{"bundle with a bad entry", `{"resourceType":"Bundle","type":"searchset","entry":[{"resource":{"resourceType":"Patient","id":"p1"}},{"resource":{"resourceType":"Patient","id":"p2","gender":"F"}}]}`, false},
		// The same valid entry again, in a bundle whose own fields are not.
		{"bundle with a bad type", `{"resourceType":"Bundle","type":"pile","entry":[{"resource":{"resourceType":"Patient","id":"p1"}}]}`, false},
		{"bundle with a bad search mode", `{"resourceType":"Bundle","type":"searchset","entry":[{"resource":{"resourceType":"Patient","id":"p1"},"search":{"mode":"hit"}}]}`, false},
		{"bundle with an unknown resource", `{"resourceType":"Bundle","type":"searchset","entry":[{"resource":{"resourceType":"Spaceship","id":"s1"}}]}`, false},
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
