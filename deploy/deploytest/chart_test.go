package deploytest

import (
	"bytes"
	"errors"
	"go/build"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// The chart's objects, as far as the chart writes them. Decoding is strict
// (unknown fields refused), so a misspelt or misplaced key in a template
// fails here rather than in a cluster; the field names and types are
// those of the Kubernetes API (apps/v1, core/v1) and of the Prometheus
// Operator's monitoring.coreos.com/v1 ServiceMonitor.
type (
	objectMeta struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	}
	header struct {
		APIVersion string     `yaml:"apiVersion"`
		Kind       string     `yaml:"kind"`
		Metadata   objectMeta `yaml:"metadata"`
	}
	labelSelector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	}
	deployment struct {
		header `yaml:",inline"`
		Spec   struct {
			Replicas int                    `yaml:"replicas"`
			Strategy *struct{ Type string } `yaml:"strategy"`
			Selector labelSelector          `yaml:"selector"`
			Template struct {
				Metadata objectMeta `yaml:"metadata"`
				Spec     podSpec    `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	podSpec struct {
		SecurityContext struct {
			RunAsNonRoot bool `yaml:"runAsNonRoot"`
			FSGroup      int  `yaml:"fsGroup"`
		} `yaml:"securityContext"`
		TerminationGracePeriodSeconds int         `yaml:"terminationGracePeriodSeconds"`
		Containers                    []container `yaml:"containers"`
		Volumes                       []struct {
			Name   string `yaml:"name"`
			Secret *struct {
				SecretName string                       `yaml:"secretName"`
				Items      []struct{ Key, Path string } `yaml:"items"`
			} `yaml:"secret"`
			PersistentVolumeClaim *struct {
				ClaimName string `yaml:"claimName"`
			} `yaml:"persistentVolumeClaim"`
			EmptyDir *struct {
				SizeLimit string `yaml:"sizeLimit"`
			} `yaml:"emptyDir"`
		} `yaml:"volumes"`
	}
	container struct {
		Name            string   `yaml:"name"`
		Image           string   `yaml:"image"`
		ImagePullPolicy string   `yaml:"imagePullPolicy"`
		Args            []string `yaml:"args"`
		SecurityContext struct {
			ReadOnlyRootFilesystem   bool `yaml:"readOnlyRootFilesystem"`
			AllowPrivilegeEscalation bool `yaml:"allowPrivilegeEscalation"`
			Capabilities             struct {
				Drop []string `yaml:"drop"`
			} `yaml:"capabilities"`
		} `yaml:"securityContext"`
		Ports []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		Env []struct {
			Name      string  `yaml:"name"`
			Value     *string `yaml:"value"`
			ValueFrom *struct {
				SecretKeyRef struct{ Name, Key string } `yaml:"secretKeyRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		LivenessProbe  probe `yaml:"livenessProbe"`
		ReadinessProbe probe `yaml:"readinessProbe"`
		Resources      struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
			ReadOnly  bool   `yaml:"readOnly"`
		} `yaml:"volumeMounts"`
	}
	probe struct {
		HTTPGet struct {
			Path string `yaml:"path"`
			Port string `yaml:"port"`
		} `yaml:"httpGet"`
		PeriodSeconds int `yaml:"periodSeconds"`
	}
	service struct {
		header `yaml:",inline"`
		Spec   struct {
			Type     string            `yaml:"type"`
			Selector map[string]string `yaml:"selector"`
			Ports    []struct {
				Name       string `yaml:"name"`
				Port       int    `yaml:"port"`
				TargetPort string `yaml:"targetPort"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}
	pvc struct {
		header `yaml:",inline"`
		Spec   struct {
			AccessModes      []string `yaml:"accessModes"`
			StorageClassName string   `yaml:"storageClassName"`
			Resources        struct {
				Requests map[string]string `yaml:"requests"`
			} `yaml:"resources"`
		} `yaml:"spec"`
	}
	serviceMonitor struct {
		header `yaml:",inline"`
		Spec   struct {
			Selector          labelSelector `yaml:"selector"`
			NamespaceSelector struct {
				MatchNames []string `yaml:"matchNames"`
			} `yaml:"namespaceSelector"`
			Endpoints []struct {
				Port          string `yaml:"port"`
				Path          string `yaml:"path"`
				Interval      string `yaml:"interval"`
				ScrapeTimeout string `yaml:"scrapeTimeout"`
			} `yaml:"endpoints"`
		} `yaml:"spec"`
	}
)

// rendered is one chart rendering, decoded.
type rendered struct {
	deployment     *deployment
	service        *service
	pvc            *pvc
	serviceMonitor *serviceMonitor
}

// helmBinary finds helm: BRIDGE_HELM, then PATH, then GOPATH/bin, where
// scripts/check-deploy installs it.
func helmBinary(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("BRIDGE_HELM"); h != "" {
		return h
	}
	if h, err := exec.LookPath("helm"); err == nil {
		return h
	}
	if h := filepath.Join(build.Default.GOPATH, "bin", "helm"); fileExists(h) {
		return h
	}
	t.Skip("helm is not installed; scripts/check-deploy installs it and runs this test with BRIDGE_HELM set")
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func helmTemplate(t *testing.T, helm string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helm, append([]string{"template", "r", filepath.Join(root, "deploy", "helm", "qubs-fhir-bridge")}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, errors.New(strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// decodeStrict decodes every document of a helm rendering into its type,
// refusing unknown kinds and unknown fields.
func decodeStrict(t *testing.T, out []byte) rendered {
	t.Helper()
	var r rendered
	docs := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var node yaml.Node
		err := docs.Decode(&node)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		raw, err := yaml.Marshal(&node)
		require.NoError(t, err)
		var h struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
		}
		require.NoError(t, yaml.Unmarshal(raw, &h))
		var target any
		switch h.APIVersion + " " + h.Kind {
		case "apps/v1 Deployment":
			r.deployment = &deployment{}
			target = r.deployment
		case "v1 Service":
			r.service = &service{}
			target = r.service
		case "v1 PersistentVolumeClaim":
			r.pvc = &pvc{}
			target = r.pvc
		case "monitoring.coreos.com/v1 ServiceMonitor":
			r.serviceMonitor = &serviceMonitor{}
			target = r.serviceMonitor
		default:
			t.Fatalf("the chart renders %s %s, which this test does not know", h.APIVersion, h.Kind)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		require.NoError(t, dec.Decode(target), "%s", raw)
	}
	require.NotNil(t, r.deployment)
	require.NotNil(t, r.service)
	return r
}

// TestChartRenders renders the chart in each supported shape and checks
// that the objects are well formed and fit together: selectors match,
// named ports exist, mounts name volumes, and the metrics port, its
// environment variable and the ServiceMonitor appear exactly when asked.
func TestChartRenders(t *testing.T) {
	t.Parallel()
	helm := helmBinary(t)
	for _, tc := range []struct {
		name           string
		args           []string
		metrics, sm    bool
		postgres       bool
		secretsMounted []string
		extraEnv       map[string]string
	}{
		{name: "defaults", secretsMounted: []string{"qubs-credentials", "qubs-fhir-bridge-tokens"}},
		{name: "metrics", args: []string{"--set", "metrics.enabled=true"}, metrics: true,
			secretsMounted: []string{"qubs-credentials", "qubs-fhir-bridge-tokens"}},
		{name: "service monitor", args: []string{"--set", "metrics.enabled=true", "--set", "metrics.serviceMonitor.enabled=true",
			"--set", "metrics.serviceMonitor.labels.release=kube-prometheus-stack", "--set", "metrics.port=9100"},
			metrics: true, sm: true, secretsMounted: []string{"qubs-credentials", "qubs-fhir-bridge-tokens"}},
		{name: "jwt", args: []string{"--set", "auth.mode=jwt", "--set", "auth.jwt.jwksURL=https://as.example/jwks",
			"--set", "auth.jwt.issuer=https://as.example", "--set", "auth.jwt.audience=qfb"},
			secretsMounted: []string{"qubs-credentials"}},
		// A number from --set (or an unquoted one in a values file) still
		// becomes the string Kubernetes wants; a setting the chart has no
		// value for (QUBS_AUTH_STYLE) passes.
		{name: "extra env", args: []string{"--set", "extraEnv[0].name=GOMEMLIMIT", "--set", "extraEnv[0].value=700MiB",
			"--set", "extraEnv[1].name=AUTOMEMLIMIT", "--set", "extraEnv[1].value=0.8",
			"--set", "extraEnv[2].name=QUBS_AUTH_STYLE", "--set", "extraEnv[2].value=basic"},
			extraEnv:       map[string]string{"GOMEMLIMIT": "700MiB", "AUTOMEMLIMIT": "0.8", "QUBS_AUTH_STYLE": "basic"},
			secretsMounted: []string{"qubs-credentials", "qubs-fhir-bridge-tokens"}},
		{name: "smart, postgres, replicas, metrics", args: []string{"--set", "auth.mode=smart", "--set", "publicURL=https://bridge.example",
			"--set", "replicaCount=3", "--set", "store.postgresURLSecret=pg", "--set", "metrics.enabled=true", "--set", "metrics.serviceMonitor.enabled=true"},
			metrics: true, sm: true, postgres: true,
			secretsMounted: []string{"qubs-credentials", "qubs-fhir-bridge-smart-clients", "qubs-fhir-bridge-smart-key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := helmTemplate(t, helm, tc.args...)
			require.NoError(t, err)
			r := decodeStrict(t, out)
			d := r.deployment
			pod := d.Spec.Template
			assert.Equal(t, d.Spec.Selector.MatchLabels, pickLabels(pod.Metadata.Labels, d.Spec.Selector.MatchLabels))
			assert.Equal(t, r.service.Spec.Selector, pickLabels(pod.Metadata.Labels, r.service.Spec.Selector))
			require.Len(t, pod.Spec.Containers, 1)
			c := pod.Spec.Containers[0]
			ports := map[string]int{}
			for _, p := range c.Ports {
				assert.LessOrEqual(t, len(p.Name), 15, "a port name is at most 15 characters")
				ports[p.Name] = p.ContainerPort
			}
			assert.Contains(t, ports, c.LivenessProbe.HTTPGet.Port)
			assert.Contains(t, ports, c.ReadinessProbe.HTTPGet.Port)
			svcPorts := map[string]bool{}
			for _, p := range r.service.Spec.Ports {
				assert.Contains(t, ports, p.TargetPort, "service port %s", p.Name)
				svcPorts[p.Name] = true
			}
			env := map[string]string{}
			for _, e := range c.Env {
				_, dup := env[e.Name]
				assert.False(t, dup, "env %s twice", e.Name)
				assert.True(t, (e.Value == nil) != (e.ValueFrom == nil), "env %s: value or valueFrom", e.Name)
				if e.Value != nil {
					env[e.Name] = *e.Value
				} else {
					env[e.Name] = "secret:" + e.ValueFrom.SecretKeyRef.Name
				}
			}
			for k, v := range tc.extraEnv {
				assert.Equal(t, v, env[k], "extraEnv %s", k)
			}
			var volumes, secrets []string
			for _, v := range pod.Spec.Volumes {
				volumes = append(volumes, v.Name)
				if v.Secret != nil {
					secrets = append(secrets, v.Secret.SecretName)
				}
			}
			for _, m := range c.VolumeMounts {
				assert.Contains(t, volumes, m.Name)
			}
			assert.ElementsMatch(t, tc.secretsMounted, secrets)
			if tc.postgres {
				assert.Equal(t, "secret:pg", env["BRIDGE_STORE"])
				assert.Nil(t, r.pvc)
				// The audit journal: a volume of the pod's own, mounted where
				// BRIDGE_AUDIT_JOURNAL says (the root file system is read-only).
				assert.Equal(t, "/journal", env["BRIDGE_AUDIT_JOURNAL"])
				mounted := false
				for _, m := range c.VolumeMounts {
					if m.MountPath == "/journal" {
						mounted = true
						for _, v := range pod.Spec.Volumes {
							if v.Name == m.Name {
								require.NotNil(t, v.EmptyDir, "the journal is the pod's own")
								assert.Equal(t, "64Mi", v.EmptyDir.SizeLimit)
							}
						}
					}
				}
				assert.True(t, mounted, "a volume at /journal")
			} else {
				assert.Equal(t, "sqlite:/data/qubs-fhir-bridge.db", env["BRIDGE_STORE"])
				_, set := env["BRIDGE_AUDIT_JOURNAL"]
				assert.False(t, set, "auto: beside the database, on its volume")
				require.NotNil(t, r.pvc)
				require.NotNil(t, d.Spec.Strategy)
				assert.Equal(t, "Recreate", d.Spec.Strategy.Type, "one writer on the SQLite volume")
			}

			port, hasPort := ports["metrics"]
			assert.Equal(t, tc.metrics, hasPort, "container port metrics")
			assert.Equal(t, tc.metrics, svcPorts["metrics"], "service port metrics")
			listen, hasEnv := env["BRIDGE_METRICS_LISTEN"]
			assert.Equal(t, tc.metrics, hasEnv, "BRIDGE_METRICS_LISTEN")
			if tc.metrics {
				assert.True(t, strings.HasSuffix(listen, ":"+strconv.Itoa(port)), "BRIDGE_METRICS_LISTEN %s, port %d", listen, port)
			}
			assert.Equal(t, tc.sm, r.serviceMonitor != nil, "ServiceMonitor")
			if sm := r.serviceMonitor; sm != nil {
				assert.Equal(t, sm.Spec.Selector.MatchLabels, pickLabels(r.service.Metadata.Labels, sm.Spec.Selector.MatchLabels),
					"the ServiceMonitor selects the Service")
				require.Len(t, sm.Spec.Endpoints, 1)
				assert.True(t, svcPorts[sm.Spec.Endpoints[0].Port])
				assert.Equal(t, "/metrics", sm.Spec.Endpoints[0].Path)
			}
			if slices.Contains(tc.args, "metrics.serviceMonitor.labels.release=kube-prometheus-stack") {
				assert.Equal(t, "kube-prometheus-stack", r.serviceMonitor.Metadata.Labels["release"])
			}
		})
	}
}

// TestChartRefuses renders the shapes the chart must refuse.
func TestChartRefuses(t *testing.T) {
	t.Parallel()
	helm := helmBinary(t)
	for name, args := range map[string][]string{
		"several replicas on SQLite":           {"--set", "replicaCount=2"},
		"no authentication":                    {"--set", "auth.mode=none"},
		"smart without a public URL":           {"--set", "auth.mode=smart"},
		"jwt without its settings":             {"--set", "auth.mode=jwt"},
		"service monitor without metrics":      {"--set", "metrics.serviceMonitor.enabled=true"},
		"a setting of the chart's in extraEnv": {"--set", "extraEnv[0].name=BRIDGE_AUTH", "--set", "extraEnv[0].value=none"},
		"extraEnv without a name":              {"--set", "extraEnv[0].value=x"},
		"extraEnv not a list":                  {"--set", "extraEnv.GOMEMLIMIT=1GiB"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := helmTemplate(t, helm, args...)
			assert.Error(t, err)
		})
	}
}

// pickLabels returns the entries of labels named in want, to compare a
// selector with the labels it must select.
func pickLabels(labels, want map[string]string) map[string]string {
	out := map[string]string{}
	for k := range want {
		if v, ok := labels[k]; ok {
			out[k] = v
		}
	}
	return out
}
