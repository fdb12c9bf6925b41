// Package observetest reads metrics back in tests: over HTTP from a
// metrics listener, or straight from a registry.
package observetest

import (
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// Families are metric families by name, as a scrape returns them.
type Families map[string]*dto.MetricFamily

// Scrape GETs a /metrics URL and parses the Prometheus text format.
func Scrape(t testing.TB, url string) Families {
	t.Helper()
	res, err := http.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	require.NoError(t, err)
	return fams
}

// Gather reads a registry.
func Gather(t testing.TB, reg prometheus.Gatherer) Families {
	t.Helper()
	list, err := reg.Gather()
	require.NoError(t, err)
	fams := Families{}
	for _, f := range list {
		fams[f.GetName()] = f
	}
	return fams
}

// Value is the value of the series of name with exactly labels (a
// counter's or gauge's value, a histogram's count); -1 when there is no
// such series.
func (f Families) Value(name string, labels map[string]string) float64 {
	v, n := f.add(name, labels, true)
	if n == 0 {
		return -1
	}
	return v
}

// Sum adds the series of name whose labels include labels.
func (f Families) Sum(name string, labels map[string]string) float64 {
	v, _ := f.add(name, labels, false)
	return v
}

func (f Families) add(name string, labels map[string]string, exact bool) (total float64, n int) {
	fam := f[name]
	if fam == nil {
		return 0, 0
	}
	for _, m := range fam.Metric {
		if exact && len(m.Label) != len(labels) || !matches(m, labels) {
			continue
		}
		n++
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	return total, n
}

func matches(m *dto.Metric, labels map[string]string) bool {
	found := 0
	for _, l := range m.Label {
		if v, ok := labels[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			found++
		}
	}
	return found == len(labels)
}
