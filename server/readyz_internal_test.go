package server

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/qubs"
)

// answeringQUBS answers every get as QUBS does for an appointment it does
// not know, unless the caller's context has ended.
type answeringQUBS struct{ QUBS }

func (answeringQUBS) GetPending(ctx context.Context, _, _ string) (*qubs.Appointment, error) {
	if err := ctx.Err(); err != nil {
		return nil, &qubs.Error{Kind: qubs.KindTransient, Op: "qubs.GetPending", Err: err}
	}
	return nil, &qubs.Error{Kind: qubs.KindNotFound, Op: "qubs.GetPending", Err: errors.New("404")}
}

// TestReadyzNotPoisonedByAnAbortedProbe: the QUBS check's answer is shared
// for an interval, so a probe whose client hung up must not make the
// replica unready for everyone (a review found it could).
func TestReadyzNotPoisonedByAnAbortedProbe(t *testing.T) {
	t.Parallel()
	s := New(Config{QUBS: answeringQUBS{}, CursorKey: []byte("k")})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the client went away
	s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/readyz", nil).WithContext(ctx))
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	assert.Equal(t, http.StatusOK, rec.Code, "%s", rec.Body)
}
