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
		if err != nil || n < 1 || n > 3650 {
			return 0, fmt.Errorf("retention %q: want whole days from 1d to 3650d, or a duration such as 36h", s)
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

// Run purges at once and then every interval until ctx is done. Several
// replicas may run it: purging is idempotent.
func Run(ctx context.Context, p store.Purger, keep, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		n, err := Purge(ctx, p, keep, time.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("retention: purge failed", "error", err.Error())
		case n > 0:
			log.Info("retention: purged", "records", n, "keep", keep.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
