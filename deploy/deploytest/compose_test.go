package deploytest

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// readYAML decodes a YAML file into plain maps and slices, the shape a
// JSON schema validator expects.
func readYAML(t *testing.T, path string) any {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	var doc any
	require.NoError(t, yaml.Unmarshal(raw, &doc), path)
	// A round trip through JSON turns YAML's map[string]any and ints into
	// what the validator handles (and fails on keys that are not strings).
	j, err := json.Marshal(doc)
	require.NoError(t, err, path)
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	require.NoError(t, err, path)
	return out
}

// TestComposeFile validates deploy/compose.yaml against the Compose
// Specification's own JSON schema (testdata/compose-spec.json, from
// github.com/compose-spec/compose-spec at 170098ba, Apache-2.0): no
// container engine or compose plugin runs here, and this is the schema
// docker compose itself validates with. Then it checks what the schema
// cannot: that the profile holds the monitoring, that every file mounted
// exists, and that Prometheus scrapes the port the bridge serves metrics on.
func TestComposeFile(t *testing.T) {
	t.Parallel()
	c := jsonschema.NewCompiler()
	schema, err := c.Compile("testdata/compose-spec.json")
	require.NoError(t, err)
	doc := readYAML(t, filepath.Join(root, "deploy", "compose.yaml"))
	require.NoError(t, schema.Validate(doc), "deploy/compose.yaml")

	var compose struct {
		Services map[string]struct {
			Build *struct {
				Context, Dockerfile string
			} `yaml:"build"`
			Profiles    []string          `yaml:"profiles"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
			Secrets     []struct{ Source, Target string }
		} `yaml:"services"`
		Secrets map[string]struct{ File string } `yaml:"secrets"`
	}
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "compose.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(raw, &compose))

	bridge, ok := compose.Services["bridge"]
	require.True(t, ok, "no bridge service")
	require.NotNil(t, bridge.Build)
	assert.FileExists(t, filepath.Join(root, "deploy", bridge.Build.Context, bridge.Build.Dockerfile))
	assert.Empty(t, bridge.Profiles, "the bridge runs without a profile")
	assert.True(t, strings.HasPrefix(bridge.Environment["BRIDGE_STORE"], "postgres://"), "the bridge uses the PostgreSQL service")
	assert.Empty(t, compose.Services["postgres"].Profiles)
	for _, name := range []string{"prometheus", "grafana"} {
		assert.Equal(t, []string{"monitoring"}, compose.Services[name].Profiles, name)
	}
	// Bind mounts (relative paths) name files of the repository.
	for name, svc := range compose.Services {
		for _, v := range svc.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") {
				_, err := os.Stat(filepath.Join(root, "deploy", src))
				assert.NoError(t, err, "service %s mounts %s", name, src)
			}
		}
	}
	// Secrets come from deploy/secrets/, which the operator fills and git
	// ignores; the environment names where each is mounted.
	for _, s := range bridge.Secrets {
		assert.Contains(t, compose.Secrets, s.Source)
		assert.True(t, strings.HasPrefix(compose.Secrets[s.Source].File, "./secrets/"), s.Source)
	}
	assert.Equal(t, "/run/secrets/qubs-client-secret", bridge.Environment["QUBS_CLIENT_SECRET_FILE"])
	assert.Equal(t, "/run/secrets/tokens.json", bridge.Environment["BRIDGE_STATIC_TOKENS_FILE"])

	// Prometheus scrapes the bridge's metrics listener.
	var prom struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	raw, err = os.ReadFile(filepath.Join(root, "deploy", "prometheus.yml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(raw, &prom))
	require.Len(t, prom.ScrapeConfigs, 1)
	sc := prom.ScrapeConfigs[0]
	assert.Equal(t, "/metrics", sc.MetricsPath)
	_, port, ok := strings.Cut(bridge.Environment["BRIDGE_METRICS_LISTEN"], ":")
	require.True(t, ok, "BRIDGE_METRICS_LISTEN is host:port")
	require.Len(t, sc.StaticConfigs, 1)
	assert.Equal(t, []string{"bridge:" + port}, sc.StaticConfigs[0].Targets)

	// Grafana is provisioned with that Prometheus and the dashboard.
	var ds struct {
		Datasources []struct{ Name, UID, Type, URL string }
	}
	raw, err = os.ReadFile(filepath.Join(root, "deploy", "grafana", "provisioning", "datasources", "prometheus.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(raw, &ds))
	require.Len(t, ds.Datasources, 1)
	assert.Equal(t, "prometheus", ds.Datasources[0].Type)
	assert.Equal(t, "http://prometheus:9090", ds.Datasources[0].URL)
	var dash struct {
		Providers []struct {
			Options struct{ Path string } `yaml:"options"`
		} `yaml:"providers"`
	}
	raw, err = os.ReadFile(filepath.Join(root, "deploy", "grafana", "provisioning", "dashboards", "qubs-fhir-bridge.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(raw, &dash))
	require.Len(t, dash.Providers, 1)
	assert.Contains(t, compose.Services["grafana"].Volumes,
		"./grafana/qubs-fhir-bridge.json:"+dash.Providers[0].Options.Path+"/qubs-fhir-bridge.json:ro")
}

// TestComposeSchemaRefuses makes sure the schema check has teeth: a
// misspelt key and a wrong type are refused.
func TestComposeSchemaRefuses(t *testing.T) {
	t.Parallel()
	schema, err := jsonschema.NewCompiler().Compile("testdata/compose-spec.json")
	require.NoError(t, err)
	for name, doc := range map[string]string{
		"unknown key":  `{"services": {"bridge": {"image": "x", "enviroment": {}}}}`,
		"wrong type":   `{"services": {"bridge": {"image": "x", "ports": "8080"}}}`,
		"bad profiles": `{"services": {"bridge": {"image": "x", "profiles": "monitoring"}}}`,
	} {
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(doc))
		require.NoError(t, err)
		assert.Error(t, schema.Validate(v), name)
	}
}
