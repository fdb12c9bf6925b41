package subs

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// srCT is a ServiceRequest as mapping.FromAppointment writes one.
const srCT = `{"resourceType":"ServiceRequest","id":"sr1","status":"active","intent":"order","priority":"stat",
"code":{"coding":[{"system":"https://qubs-fhir-bridge.github.io/fhir/CodeSystem/service-item","code":"56001","display":"CT brain"}],"text":"CT Brain"},
"orderDetail":[{"coding":[{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"CT","display":"Computed Tomography"}],"text":"CT"}],
"identifier":[{"system":"https://qubs-fhir-bridge.github.io/fhir/NamingSystem/appointment-id","value":"A-1"},{"system":"urn:dicom:uid","value":"urn:oid:1.2.3"}],
"subject":{"reference":"Patient/p1"},"requester":{"reference":"Practitioner/d1"},"performer":[{"reference":"Practitioner/r1"}],
"occurrenceDateTime":"2026-12-02T10:30:00+11:00"}`

const srMR = `{"resourceType":"ServiceRequest","id":"sr2","status":"active","intent":"order","priority":"routine",
"orderDetail":[{"text":"MRI"},{"coding":[{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"MR"}]}],
"subject":{"reference":"Patient/p2"},"occurrencePeriod":{"start":"2026-11-30T09:00:00Z"}}`

func TestCriteriaMatch(t *testing.T) {
	ct := &store.Event{Seq: 1, Topic: store.EventTopicWorklist, FocusType: "ServiceRequest", FocusID: "sr1", Resource: []byte(srCT)}
	mr := &store.Event{Seq: 2, Topic: store.EventTopicWorklist, FocusType: "ServiceRequest", FocusID: "sr2", Resource: []byte(srMR)}
	gone := &store.Event{Seq: 3, Topic: store.EventTopicWorklist, FocusType: "ServiceRequest", FocusID: "sr3"}
	cases := []struct {
		criteria     string
		ct, mr, gone bool
	}{
		{"ServiceRequest?", true, true, true},
		{"ServiceRequest?modality=CT", true, false, false},
		{"ServiceRequest?modality=ct,MR", true, true, false},
		{"ServiceRequest?modality=http://dicom.nema.org/resources/ontology/DCM|MR", false, true, false},
		{"ServiceRequest?modality=other|CT", false, false, false},
		{"ServiceRequest?modality:not=CT", false, true, false},
		{"ServiceRequest?modality=CT&priority=stat", true, false, false},
		{"ServiceRequest?modality=CT&priority=routine", false, false, false},
		{"ServiceRequest?priority=stat,routine", true, true, false},
		{"ServiceRequest?status=active", true, true, false},
		{"ServiceRequest?code=56001", true, false, false},
		{"ServiceRequest?code:text=brain", true, false, false},
		{"ServiceRequest?identifier=urn:dicom:uid|urn:oid:1.2.3", true, false, false},
		{"ServiceRequest?identifier=A-1", true, false, false},
		{"ServiceRequest?patient=Patient/p2", false, true, false},
		{"ServiceRequest?subject=p1", true, false, false},
		{"ServiceRequest?performer=Practitioner/r1", true, false, false},
		{"ServiceRequest?performer:missing=true", false, true, false},
		{"ServiceRequest?requester=d1", true, false, false},
		{"ServiceRequest?_id=sr2", false, true, false},
		{"ServiceRequest?occurrence=2026-12-01", true, false, false}, // 10:30 +11:00 is Dec 1 in UTC
		{"ServiceRequest?occurrence=ge2026-12-01&occurrence=lt2026-12-02", true, false, false},
		{"ServiceRequest?occurrence=le2026-11-30", false, true, false},
	}
	m := NewMatcher()
	for _, tc := range cases {
		t.Run(tc.criteria, func(t *testing.T) {
			_, err := ParseCriteria(store.EventTopicWorklist, tc.criteria)
			require.NoError(t, err)
			sub := &store.Subscription{Topic: store.EventTopicWorklist, Criteria: []string{tc.criteria}}
			assert.Equal(t, tc.ct, m.Match(ct, sub), "CT study")
			assert.Equal(t, tc.mr, m.Match(mr, sub), "MR study")
			assert.Equal(t, tc.gone, m.Match(gone, sub), "event without a resource")
		})
	}
}

func TestCriteriaOtherTopics(t *testing.T) {
	ev := &store.Event{Topic: store.EventTopicReportDelivery, FocusType: "DiagnosticReport", FocusID: "r1", AppointmentID: "A-1"}
	m := NewMatcher()
	sub := func(c string) *store.Subscription {
		_, err := ParseCriteria(store.EventTopicReportDelivery, c)
		require.NoError(t, err)
		return &store.Subscription{Topic: store.EventTopicReportDelivery, Criteria: []string{c}}
	}
	assert.True(t, m.Match(ev, sub("DiagnosticReport?based-on=ServiceRequest/A-1")))
	assert.False(t, m.Match(ev, sub("DiagnosticReport?based-on=ServiceRequest/A-2")))
}

func TestCriteriaRefused(t *testing.T) {
	for _, tc := range []struct{ topic, criteria string }{
		{store.EventTopicWorklist, "Patient?name=x"},
		{store.EventTopicWorklist, "ServiceRequest?unknown=1"},
		{store.EventTopicWorklist, "ServiceRequest?modality:exact=CT"},
		{store.EventTopicWorklist, "ServiceRequest?occurrence=yesterday"},
		{store.EventTopicWorklist, "ServiceRequest?occurrence=ne2026-12-01"},
		{store.EventTopicWorklist, "ServiceRequest?performer:missing=maybe"},
		{store.EventTopicWorklist, "ServiceRequest?modality="},
		{store.EventTopicWorklist, "ServiceRequest?modality=%zz"},
		{store.EventTopicReportDelivery, "DiagnosticReport?status=final"},
		{store.EventTopicComments, "ServiceRequest?modality=CT"},
	} {
		_, err := ParseCriteria(tc.topic, tc.criteria)
		assert.Error(t, err, tc.criteria)
	}
}
