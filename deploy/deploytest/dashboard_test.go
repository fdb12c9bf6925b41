package deploytest

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metricsql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// root is the repository root, seen from this package's directory.
const root = "../.."

// documentedMetrics reads the metric names of the table in docs/metrics.md:
// the first cell of each row, in backticks, mapped to the row's text (which
// says whether it is a histogram). A name ending in "*" is a prefix (the
// go_* and process_* collectors).
func documentedMetrics(t *testing.T) (names map[string]string, prefixes []string) {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "docs", "metrics.md"))
	require.NoError(t, err)
	defer f.Close()
	names = map[string]string{}
	firstCell := regexp.MustCompile("^\\|\\s*`([A-Za-z_:][A-Za-z0-9_:]*\\*?)`\\s*\\|")
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := firstCell.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if p, ok := strings.CutSuffix(m[1], "*"); ok {
			prefixes = append(prefixes, p)
		} else {
			names[m[1]] = strings.ToLower(sc.Text())
		}
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, names, "docs/metrics.md has no table of metric names")
	return names, prefixes
}

// grafanaVars are the Grafana macros PromQL cannot parse, with a value of
// the right type.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

// metricNames returns the metric names a PromQL expression selects.
func metricNames(expr string) ([]string, error) {
	e, err := metricsql.Parse(grafanaVars.Replace(expr))
	if err != nil {
		return nil, err
	}
	var out []string
	metricsql.VisitAll(e, func(e metricsql.Expr) {
		me, ok := e.(*metricsql.MetricExpr)
		if !ok {
			return
		}
		for _, lfs := range me.LabelFilterss {
			for _, lf := range lfs {
				if lf.Label == "__name__" && !lf.IsRegexp && !lf.IsNegative && !slices.Contains(out, lf.Value) {
					out = append(out, lf.Value)
				}
			}
		}
	})
	return out, nil
}

// documented reports whether name is in the table, directly, through a
// prefix row, or as a histogram's _bucket, _sum or _count series (a row
// that calls itself a counter or gauge has none).
func documented(name string, names map[string]string, prefixes []string) bool {
	if _, ok := names[name]; ok {
		return true
	}
	for _, p := range prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		row, listed := names[base]
		if !ok || !listed {
			continue
		}
		histogram := strings.Contains(row, "histogram") || strings.Contains(row, "summary")
		if histogram || !strings.Contains(row, "counter") && !strings.Contains(row, "gauge") {
			return true
		}
	}
	return false
}

// dashboardQueries returns every PromQL expression of the dashboard: panel
// targets, rows' nested panels, and template variables' label_values.
func dashboardQueries(t *testing.T, raw []byte) map[string]string {
	t.Helper()
	var d struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal(raw, &d))
	out := map[string]string{}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out[p.Title+"/"+tg.RefID] = tg.Expr
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.*),\s*[A-Za-z_]+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		require.NoError(t, json.Unmarshal(v.Query, &q), "variable %s", v.Name)
		m := labelValues.FindStringSubmatch(q.Query)
		require.NotNil(t, m, "variable %s: want label_values(selector, label), got %q", v.Name, q.Query)
		out["variable "+v.Name] = m[1]
	}
	return out
}

type panel struct {
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func TestDashboardIsValidJSON(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "qubs-fhir-bridge.json"))
	require.NoError(t, err)
	require.True(t, json.Valid(raw), "deploy/grafana/qubs-fhir-bridge.json is not valid JSON")
	var d struct {
		UID        string  `json:"uid"`
		Title      string  `json:"title"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name, Type string
				Query      json.RawMessage
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal(raw, &d))
	assert.NotEmpty(t, d.UID)
	assert.NotEmpty(t, d.Title)
	// The datasource is a variable, so the dashboard imports into any
	// Grafana whatever its Prometheus is called.
	require.NotEmpty(t, d.Templating.List)
	assert.Equal(t, "datasource", d.Templating.List[0].Name)
	assert.Equal(t, "datasource", d.Templating.List[0].Type)
	assert.JSONEq(t, `"prometheus"`, string(d.Templating.List[0].Query))
	targets := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		require.NotNil(t, p.Datasource, "panel %q has no datasource", p.Title)
		assert.Equal(t, "${datasource}", p.Datasource.UID, "panel %q", p.Title)
		assert.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		targets += len(p.Targets)
	}
	assert.Greater(t, targets, 20)
}

// TestDashboardMetricsDocumented fails when a query of the dashboard names
// a metric that docs/metrics.md does not list: a renamed or missing metric
// would otherwise be an empty panel nobody notices.
func TestDashboardMetricsDocumented(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "qubs-fhir-bridge.json"))
	require.NoError(t, err)
	names, prefixes := documentedMetrics(t)
	used := map[string]bool{}
	for where, expr := range dashboardQueries(t, raw) {
		got, err := metricNames(expr)
		require.NoError(t, err, "%s: %q does not parse", where, expr)
		require.NotEmpty(t, got, "%s: %q names no metric", where, expr)
		for _, n := range got {
			used[n] = true
			assert.True(t, documented(n, names, prefixes), "%s: metric %s is not in docs/metrics.md", where, n)
		}
	}
	// Every agreed bridge_ metric is on the dashboard.
	for n := range names {
		if !strings.HasPrefix(n, "bridge_") {
			continue
		}
		seen := used[n]
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			seen = seen || used[n+s]
		}
		assert.True(t, seen, "docs/metrics.md lists %s, which no panel shows", n)
	}
}

// TestMetricNames checks the extraction the dashboard test relies on,
// including that it would catch a name missing from the table.
func TestMetricNames(t *testing.T) {
	t.Parallel()
	names := map[string]string{
		"bridge_http_request_duration_seconds": "| `bridge_http_request_duration_seconds` | histogram | route |",
		"bridge_http_requests_total":           "| `bridge_http_requests_total` | counter | route |",
	}
	prefixes := []string{"go_"}
	for _, tc := range []struct {
		name, expr string
		want       []string
		ok         bool
	}{
		{"histogram quantile", `histogram_quantile(0.95, sum by (le, route) (rate(bridge_http_request_duration_seconds_bucket{job=~"$job"}[$__rate_interval])))`,
			[]string{"bridge_http_request_duration_seconds_bucket"}, true},
		{"ratio of two", `sum(rate(bridge_http_requests_total{code="5xx"}[5m])) / clamp_min(sum(rate(bridge_http_requests_total[5m])), 1e-9)`,
			[]string{"bridge_http_requests_total"}, true},
		{"prefix row", `go_goroutines{instance=~"$instance"}`, []string{"go_goroutines"}, true},
		{"counter is not a histogram", `rate(bridge_http_requests_total_count[5m])`, []string{"bridge_http_requests_total_count"}, false},
		{"missing", `rate(bridge_http_requests_totl[5m])`, []string{"bridge_http_requests_totl"}, false},
		{"name as a label", `{__name__="bridge_nope", route="x"}`, []string{"bridge_nope"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := metricNames(tc.expr)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			ok := true
			for _, n := range got {
				ok = ok && documented(n, names, prefixes)
			}
			assert.Equal(t, tc.ok, ok)
		})
	}
}

// TestRunbookMetricsDocumented holds docs/operations.md to the same rule as
// the dashboard: its alert expressions (```promql blocks, one per line)
// parse and name documented metrics, and so do the metric names its tables
// start rows with.
func TestRunbookMetricsDocumented(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	require.NoError(t, err)
	names, prefixes := documentedMetrics(t)
	rowMetric := regexp.MustCompile("^\\| `((?:bridge|go|process)_[a-z0-9_]+)")
	inPromQL, exprs, rows := false, 0, 0
	for i, line := range strings.Split(string(raw), "\n") {
		switch {
		case strings.HasPrefix(line, "```promql"):
			inPromQL = true
		case strings.HasPrefix(line, "```"):
			inPromQL = false
		case inPromQL && strings.TrimSpace(line) != "":
			exprs++
			got, err := metricNames(line)
			require.NoError(t, err, "docs/operations.md:%d: %q does not parse", i+1, line)
			require.NotEmpty(t, got, "docs/operations.md:%d names no metric", i+1)
			for _, n := range got {
				assert.True(t, documented(n, names, prefixes), "docs/operations.md:%d: metric %s is not in docs/metrics.md", i+1, n)
			}
		default:
			if m := rowMetric.FindStringSubmatch(line); m != nil {
				rows++
				assert.True(t, documented(m[1], names, prefixes), "docs/operations.md:%d: metric %s is not in docs/metrics.md", i+1, m[1])
			}
		}
	}
	assert.NotZero(t, exprs, "no ```promql block in docs/operations.md")
	assert.NotZero(t, rows, "no metric table in docs/operations.md")
}
