package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store/postgres/pgtest"
)

// TestArtifactCopy: artifacts are written with a binary COPY, their bytes
// streamed in pieces: bytes of every value, odd file names and empty data
// come back as they went in, and the purge still blanks them.
func TestArtifactCopy(t *testing.T) {
	ctx := context.Background()
	s := pgtest.Open(t)
	data := make([]byte, 600<<10+7) // several COPY messages
	for i := range data {
		data[i] = byte(i * 7)
	}
	name := "a\tb\\c\nd\r.pdf"
	created := time.Now().Add(-48 * time.Hour)
	r := &store.Report{Domain: "acme", ID: "cp", AppointmentID: "A1", Resource: []byte(`{}`), Submission: []byte(`{}`),
		CreatedAt: created, Artifacts: []store.Artifact{
			{FileName: name, ContentType: "application/pdf", Data: data, BinaryID: "dra-cp"},
			{FileName: "empty.pdf", ContentType: "application/pdf", Data: []byte{}},
		}}
	require.NoError(t, s.CreateReport(ctx, r))

	a, err := s.ReportArtifact(ctx, "acme", "cp", 1, 0)
	require.NoError(t, err)
	assert.Equal(t, data, a.Data)
	assert.Equal(t, name, a.FileName)
	assert.Equal(t, "dra-cp", a.BinaryID)
	assert.Equal(t, r.Artifacts[0].SHA256, a.SHA256)
	e, err := s.ReportArtifact(ctx, "acme", "cp", 1, 1)
	require.NoError(t, err)
	assert.NotNil(t, e.Data)
	assert.Empty(t, e.Data)
	job, err := s.ClaimDelivery(ctx, "w", time.Minute, time.Now())
	require.NoError(t, err)
	assert.Equal(t, data, job.Artifacts[0].Data)
	require.NoError(t, s.CompleteDelivery(ctx, "w", "acme", "cp", 1, "guid", time.Now()))

	n, err := s.PurgeBefore(ctx, time.Now().Add(-24*time.Hour))
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	b, err := s.ArtifactBinary(ctx, "acme", "dra-cp")
	require.NoError(t, err)
	assert.True(t, b.Purged)
	assert.Nil(t, b.Artifact.Data)
}
