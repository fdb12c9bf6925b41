package worklist

import (
	"fmt"
	"strings"
	"time"
)

// Intervals are the walk interval of each domain: a default and
// per-domain overrides.
type Intervals struct {
	Default   time.Duration
	PerDomain map[string]time.Duration
}

// For is domain's interval.
func (iv Intervals) For(domain string) time.Duration {
	if d, ok := iv.PerDomain[domain]; ok {
		return d
	}
	if iv.Default > 0 {
		return iv.Default
	}
	return DefaultInterval
}

// minInterval keeps a typo ("30ms") from walking QUBS in a tight loop.
const minInterval = time.Second

// ParseIntervals reads BRIDGE_WORKLIST_SYNC_INTERVAL: a Go duration for
// every domain, then optional "domain=duration" overrides, all separated
// by ';' in the style of BRIDGE_SITE_TIMEZONES: "30s;acme=10s;coastal=2m".
// An override alone ("acme=10s") keeps the default for the others.
func ParseIntervals(v string) (Intervals, error) {
	iv := Intervals{Default: DefaultInterval, PerDomain: map[string]time.Duration{}}
	for _, part := range strings.Split(v, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		domain, dur, isOverride := strings.Cut(part, "=")
		if !isOverride {
			dur, domain = domain, ""
		}
		d, err := time.ParseDuration(strings.TrimSpace(dur))
		if err != nil || d < minInterval {
			return iv, fmt.Errorf("interval %q: want a duration of at least %s", strings.TrimSpace(dur), minInterval)
		}
		if !isOverride {
			iv.Default = d
			continue
		}
		domain = strings.TrimSpace(domain)
		if domain == "" {
			return iv, fmt.Errorf("%q: the domain is empty", part)
		}
		iv.PerDomain[domain] = d
	}
	return iv, nil
}
