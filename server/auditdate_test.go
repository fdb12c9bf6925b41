package server_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAuditEventDates: a date is a whole local day, repeats are ANDed
// into a range, and what cannot be honoured is refused, not ignored.
func TestAuditEventDates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withStore(t))
	_, srID := firstPending(t, e.sim, 0)
	for range 3 {
		require.Equal(t, http.StatusOK, get(t, e.base+"/ServiceRequest/"+srID).status)
	}
	syd, _ := time.LoadLocation("Australia/Sydney")
	today := time.Now().In(syd)
	day := func(d time.Time) string { return d.Format("2006-01-02") }
	count := func(q string) int {
		t.Helper()
		// Only the reads: the searches of the audit trail are audited too.
		r := get(t, e.base+"/AuditEvent?action=R&"+q)
		require.Equal(t, http.StatusOK, r.status, "%s: %s", q, r.body)
		return len(entries(r.json(t), "match"))
	}
	assert.Equal(t, 3, count("date="+day(today)), "today, a whole local day, no prefix")
	assert.Equal(t, 0, count("date="+day(today.AddDate(0, 0, -1))))
	assert.Equal(t, 3, count("date=ge"+day(today.AddDate(0, 0, -1))+"&date=le"+day(today)), "a range by repeating")
	assert.Equal(t, 0, count("date=ge"+day(today.AddDate(0, 0, -7))+"&date=lt"+day(today)))
	assert.Equal(t, 3, count("date="+url.QueryEscape(today.Format("2006-01"))), "this month")
	for _, bad := range []string{"date=ne" + day(today), "date=2026-13-01", "date=yesterday"} {
		r := get(t, e.base+"/AuditEvent?"+bad)
		assert.Equal(t, http.StatusBadRequest, r.status, bad)
		outcome(t, r)
	}
	r := get(t, e.base+"/AuditEvent?agent=a&agent=b")
	assert.Equal(t, http.StatusBadRequest, r.status, "a parameter that cannot be ANDed is refused when repeated")
}

// TestAuditHostileParameterNames: a search whose parameter names hold a
// NUL or bytes that are not UTF-8, which PostgreSQL's text refuses, is
// refused (400) and audited like any other, and the audit trail goes on:
// its record once failed its batch for ever, so that the buffer filled
// and every answer became a 503.
func TestAuditHostileParameterNames(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withPostgres(t))
	for _, q := range []string{"%00=1", "%FF%FE=1", "a%00b=1"} {
		assert.Equal(t, http.StatusBadRequest, get(t, e.base+"/ServiceRequest?"+q+"&_count=1").status, q)
	}
	// An AuditEvent search waits until every record before it is
	// committed: it times out if the writer is stuck.
	r := get(t, e.base+"/AuditEvent?action=E&_count=50")
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	assert.Len(t, entries(r.json(t), "match"), 3, "the three refused searches, recorded")
	_, srID := firstPending(t, e.sim, 0)
	assert.Equal(t, http.StatusOK, get(t, e.base+"/ServiceRequest/"+srID).status)
}
