// Package retention removes stored PHI once it is no longer needed: report
// content, artifact bytes, binaries and comment resources older than the
// retention window are purged by the store, which keeps the non-PHI
// skeleton (ids, versions, delivery state, hashes) so that ids still
// answer (410 Gone) and nothing is delivered twice.
package retention

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// DefaultKeep is BRIDGE_RETENTION's default: long enough to resubmit or
// amend a week's reports, short enough that the bridge is no archive.
const DefaultKeep = 7 * 24 * time.Hour

// ParseDuration reads a retention window: a Go duration ("36h") or whole
// days ("7d").
func ParseDuration(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 1 || n > 36500 {
			return 0, fmt.Errorf("retention %q: want whole days from 1d, or a duration such as 36h", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Hour {
		return 0, fmt.Errorf("retention %q: want a duration of at least 1h, or days such as 7d", s)
	}
	return d, nil
}

// Purge removes what is older than keep, as of now.
func Purge(ctx context.Context, p store.Purger, keep time.Duration, now time.Time) (int, error) {
	n, err := p.PurgeBefore(ctx, now.Add(-keep))
	if err != nil {
		return 0, fmt.Errorf("purging before %s: %w", now.Add(-keep).Format(time.RFC3339), err)
	}
	return n, nil
}

// DefaultKeepAudit is BRIDGE_AUDIT_RETENTION's default. Audit records
// hold no PHI and are evidence of who saw what; seven years matches the
// commonest Australian retention period for adults' medical records.
const DefaultKeepAudit = 7 * 365 * 24 * time.Hour

// Purgers is what Run purges: PHI content, and audit records on their own,
// longer window.
type Purgers interface {
	store.Purger
	PurgeAuditBefore(ctx context.Context, cutoff time.Time) (int, error)
}

// Run purges at once and then every interval until ctx is done. Several
// replicas may run it: purging is idempotent.
func Run(ctx context.Context, p Purgers, keep, keepAudit, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		now := time.Now()
		n, err := Purge(ctx, p, keep, now)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("retention: purge failed", "error", err.Error())
		case n > 0:
			log.Info("retention: purged", "records", n, "keep", keep.String())
		}
		if n, err := p.PurgeAuditBefore(ctx, now.Add(-keepAudit)); err != nil && ctx.Err() == nil {
			log.Warn("retention: audit purge failed", "error", err.Error())
		} else if n > 0 {
			log.Info("retention: purged audit records", "records", n, "keep", keepAudit.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
