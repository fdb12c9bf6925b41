package mapping

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/fhir/fhirtest"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs/qubssim"
)

func TestImagingStudyAndTaskTable(t *testing.T) {
	t.Parallel()
	z := testZones(t)
	due := time.Date(2025, 1, 13, 2, 0, 0, 0, time.UTC)
	full := loadCase(t, "typical_ct")
	full.ReportNeededBy = &due
	m := func(t *testing.T) Mapped {
		m, err := Map(&full, z)
		require.NoError(t, err)
		return m
	}
	tests := []struct {
		name   string
		edit   func(a *qubs.Appointment)
		check  func(t *testing.T, is fhir.ImagingStudy, raw []byte)
		checkT func(t *testing.T, task fhir.Task)
	}{
		{name: "typical", edit: func(*qubs.Appointment) {},
			check: func(t *testing.T, is fhir.ImagingStudy, raw []byte) {
				assert.Equal(t, fhir.ImagingStudyStatusAvailable, is.Status)
				require.Len(t, is.Identifier, 2)
				assert.Equal(t, SystemDICOMUID, val(is.Identifier[1].System))
				assert.Equal(t, "urn:oid:"+full.StudyInstanceUID, val(is.Identifier[1].Value))
				require.Len(t, is.Modality, 1)
				assert.Equal(t, SystemDICOM, val(is.Modality[0].System))
				assert.Equal(t, "CT", val(is.Modality[0].Code))
				assert.NotContains(t, string(raw), ExtModality, "the DCM code itself needs no extension")
				assert.Equal(t, "ServiceRequest/"+m(t).ID, val(is.BasedOn[0].Reference))
				require.NotNil(t, is.Referrer)
				require.Len(t, is.Interpreter, 1)
				assert.Equal(t, full.StudyDescription, val(is.Description))
				assert.Equal(t, "2025-01-12T13:45:00+11:00", val(is.Started))
			},
			checkT: func(t *testing.T, task fhir.Task) {
				assert.Equal(t, fhir.TaskStatusRequested, task.Status)
				assert.Equal(t, "order", task.Intent)
				require.NotNil(t, task.Owner)
				require.NotNil(t, task.Restriction)
				assert.Equal(t, "2025-01-13T02:00:00Z", val(task.Restriction.Period.End))
				require.NotNil(t, task.Priority)
				assert.Equal(t, fhir.RequestPriorityRoutine, *task.Priority)
			}},
		{name: "no UID, alias modality", edit: func(a *qubs.Appointment) { a.StudyInstanceUID, a.Modality = "", "MRI" },
			check: func(t *testing.T, is fhir.ImagingStudy, raw []byte) {
				assert.Equal(t, fhir.ImagingStudyStatusRegistered, is.Status)
				assert.Len(t, is.Identifier, 1)
				assert.Equal(t, "MR", val(is.Modality[0].Code))
				assert.Contains(t, string(raw), `{"url":"`+ExtModality+`","valueString":"MRI"}`)
			}},
		{name: "unknown modality", edit: func(a *qubs.Appointment) { a.Modality = "Tomosynthesis" },
			check: func(t *testing.T, is fhir.ImagingStudy, raw []byte) {
				assert.Empty(t, is.Modality)
				assert.Contains(t, string(raw), `"valueString":"Tomosynthesis"`)
			}},
		{name: "no patient, no radiologist, no doctor, a date alone", edit: func(a *qubs.Appointment) {
			a.PatientID, a.PatientName, a.FirstName, a.LastName, a.DateOfBirth, a.Gender = "", "", "", "", nil, ""
			a.RadiologistUser, a.DoctorName, a.StartTime, a.EndTime, a.Priority = nil, "", nil, nil, "Semi-urgent"
		},
			check: func(t *testing.T, is fhir.ImagingStudy, raw []byte) {
				assert.Contains(t, string(raw), `"subject":{"extension":[{"url":"`+ExtDataAbsentReason)
				assert.Nil(t, is.Referrer)
				assert.Empty(t, is.Interpreter)
				assert.Equal(t, "2025-01-12", val(is.Started))
			},
			checkT: func(t *testing.T, task fhir.Task) {
				assert.Nil(t, task.For)
				assert.Nil(t, task.Owner)
				assert.Nil(t, task.Priority, "a priority FHIR has no code for is left out")
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := full
			tt.edit(&a)
			m, err := Map(&a, z)
			require.NoError(t, err)
			raw := m.AppendImagingStudy(nil)
			fhirtest.RequireValidR4(t, raw)
			var is fhir.ImagingStudy
			require.NoError(t, json.Unmarshal(raw, &is))
			assert.Equal(t, m.ID, val(is.Id))
			tt.check(t, is, raw)

			for _, st := range []TaskState{{Status: TaskRequested}, {Status: TaskInProgress, LastUpdated: due}, {Status: TaskCompleted, LastUpdated: due}} {
				raw := m.AppendTask(nil, st)
				fhirtest.RequireValidR4(t, raw)
				var task fhir.Task
				require.NoError(t, json.Unmarshal(raw, &task))
				assert.Equal(t, st.Status, task.Status.Code())
				assert.Equal(t, "ServiceRequest/"+m.ID, val(task.Focus.Reference))
				if st.LastUpdated.IsZero() {
					assert.Nil(t, task.Meta)
				} else {
					assert.Equal(t, "2025-01-13T02:00:00Z", val(task.Meta.LastUpdated))
				}
				if tt.checkT != nil && st.Status == TaskRequested {
					tt.checkT(t, task)
				}
			}
		})
	}
}

func TestTaskStateOf(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2025, 1, 10, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		delivered []DeliveredReport
		want      TaskState
	}{
		{"nothing delivered", nil, TaskState{Status: TaskRequested}},
		{"a preliminary", []DeliveredReport{{"preliminary", t0}}, TaskState{TaskInProgress, t0}},
		{"partial is preliminary", []DeliveredReport{{"partial", t0}}, TaskState{TaskInProgress, t0}},
		{"a final after a preliminary", []DeliveredReport{{"preliminary", t0}, {"final", t0.Add(time.Hour)}}, TaskState{TaskCompleted, t0.Add(time.Hour)}},
		{"amended is final", []DeliveredReport{{"amended", t0}}, TaskState{TaskCompleted, t0}},
		{"QUBS holds the latest: a preliminary after a final", []DeliveredReport{{"final", t0}, {"preliminary", t0.Add(time.Minute)}}, TaskState{TaskInProgress, t0.Add(time.Minute)}},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, TaskStateOf(tt.delivered), tt.name)
	}
}

// TestStudyViewsOverTheSeed validates the ImagingStudy and Task of every
// appointment of a seeded simulator (the corpus the other encoders are
// held to) against strict R4.
func TestStudyViewsOverTheSeed(t *testing.T) {
	t.Parallel()
	z := testZones(t)
	sim := qubssim.New(qubssim.Options{Seed: 1, Appointments: 300})
	for _, domain := range sim.Domains() {
		for _, id := range sim.AppointmentIDs(domain) {
			a, ok := sim.Appointment(domain, id)
			require.True(t, ok)
			m, err := Map(&a, z)
			require.NoError(t, err)
			fhirtest.RequireValidR4(t, m.AppendImagingStudy(nil))
			fhirtest.RequireValidR4(t, m.AppendTask(nil, TaskState{Status: TaskCompleted, LastUpdated: time.Now()}))
		}
	}
}

// BenchmarkStudyViews is what a page of ImagingStudy or Task costs per
// appointment: mapping and encoding the entry.
func BenchmarkStudyViews(b *testing.B) {
	a := loadCase(b, "typical_ct")
	z := testZones(b)
	buf := make([]byte, 0, 8192)
	b.Run("ImagingStudy", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m, err := Map(&a, z)
			if err != nil {
				b.Fatal(err)
			}
			buf = m.AppendImagingStudy(buf[:0])
		}
	})
	b.Run("Task", func(b *testing.B) {
		b.ReportAllocs()
		st := TaskState{Status: TaskInProgress, LastUpdated: time.Now()}
		for b.Loop() {
			m, err := Map(&a, z)
			if err != nil {
				b.Fatal(err)
			}
			buf = m.AppendTask(buf[:0], st)
		}
	})
}
