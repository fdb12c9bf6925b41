package qubssim_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// TestAdminAddComment: POST /_sim/comments adds a comment as a QUBS user
// would (not through the integration API): the comments list shows it,
// with its times, and an edit moves lastModifiedDateTime on; bad bodies
// are 400, an unknown appointment 404.
func TestAdminAddComment(t *testing.T) {
	t.Parallel()
	srv, _ := startFake(t)
	domain := srv.Domains()[0]
	id := srv.PendingIDs(domain)[0]
	post := func(body string) (int, []byte) {
		res, err := http.Post(srv.URL+"/_sim/comments", "application/json", bytes.NewBufferString(body))
		require.NoError(t, err)
		defer res.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(res.Body)
		return res.StatusCode, b.Bytes()
	}
	code, body := post(`{"domain":"` + domain + `","appointmentId":"` + id + `","commentText":"Wheelchair","isAlert":true}`)
	require.Equal(t, http.StatusCreated, code, "%s", body)
	var added qubs.Comment
	require.NoError(t, json.Unmarshal(body, &added))
	assert.Equal(t, qubs.CommentAppointmentAlert, added.CommentType)
	assert.Empty(t, srv.CreatedComments(domain, id), "not created through the API")

	list := func() []qubs.Comment {
		res, b := get(t, srv, token(t, srv), apiPath(domain, "/"+id+"/comments"))
		require.Equal(t, http.StatusOK, res.StatusCode, "%s", b)
		var cs []qubs.Comment
		require.NoError(t, json.Unmarshal(b, &cs))
		return cs
	}
	find := func() *qubs.Comment {
		for _, c := range list() {
			if c.GUID == added.GUID {
				return &c
			}
		}
		return nil
	}
	got := find()
	require.NotNil(t, got)
	require.NotNil(t, got.LastModifiedDateTime)
	first := *got.LastModifiedDateTime

	require.True(t, srv.EditComment(domain, added.GUID, "Wheelchair, hoist"))
	got = find()
	require.NotNil(t, got)
	assert.Equal(t, "Wheelchair, hoist", got.CommentText)
	assert.True(t, got.LastModifiedDateTime.After(first), "an edit is later")
	assert.False(t, srv.EditComment(domain, "no-such-guid", "x"))

	for _, bad := range []string{`{"domain":"` + domain + `","commentText":"x"}`, `{"domain":"` + domain + `","appointmentId":"` + id + `"}`, `{"x":1}`} {
		code, _ := post(bad)
		assert.Equal(t, http.StatusBadRequest, code, bad)
	}
	code, _ = post(`{"domain":"` + domain + `","appointmentId":"nope","commentText":"x"}`)
	assert.Equal(t, http.StatusNotFound, code)
}
