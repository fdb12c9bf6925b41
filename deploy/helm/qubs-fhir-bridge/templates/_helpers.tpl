{{- define "qfb.name" -}}{{ .Chart.Name }}{{- end -}}
{{- define "qfb.fullname" -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "qfb.labels" -}}
app.kubernetes.io/name: {{ include "qfb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "qfb.selector" -}}
app.kubernetes.io/name: {{ include "qfb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- /*
qfb.env: the bridge's environment, from the values. qfb.extraEnv checks
extraEnv against the names it sets.
*/ -}}
{{- define "qfb.env" -}}
- {name: BRIDGE_LISTEN, value: "0.0.0.0:8080"}
{{- if .Values.metrics.enabled }}
- {name: BRIDGE_METRICS_LISTEN, value: "0.0.0.0:{{ .Values.metrics.port }}"}
{{- end }}
- {name: BRIDGE_PUBLIC_URL, value: {{ .Values.publicURL | quote }}}
- {name: QUBS_API_URL, value: {{ .Values.qubs.apiURL | quote }}}
- {name: QUBS_TOKEN_URL, value: {{ .Values.qubs.tokenURL | quote }}}
- name: QUBS_CLIENT_ID
  valueFrom: {secretKeyRef: {name: {{ .Values.qubs.credentialsSecret }}, key: client-id}}
- {name: QUBS_CLIENT_SECRET_FILE, value: /secrets/qubs/client-secret}
- {name: BRIDGE_AUTH, value: {{ .Values.auth.mode | quote }}}
{{- if eq .Values.auth.mode "static" }}
- {name: BRIDGE_STATIC_TOKENS_FILE, value: /secrets/auth/tokens.json}
{{- else if eq .Values.auth.mode "jwt" }}
- {name: BRIDGE_JWT_JWKS_URL, value: {{ required "auth.jwt.jwksURL" .Values.auth.jwt.jwksURL | quote }}}
- {name: BRIDGE_JWT_ISSUER, value: {{ required "auth.jwt.issuer" .Values.auth.jwt.issuer | quote }}}
- {name: BRIDGE_JWT_AUDIENCE, value: {{ required "auth.jwt.audience" .Values.auth.jwt.audience | quote }}}
{{- else if eq .Values.auth.mode "smart" }}
- {name: BRIDGE_SMART_CLIENTS_FILE, value: /secrets/auth/clients.json}
- {name: BRIDGE_SMART_SIGNING_KEY_FILE, value: /secrets/smart-key/signing-key.pem}
{{- end }}
{{- if .Values.store.postgresURLSecret }}
- name: BRIDGE_STORE
  valueFrom: {secretKeyRef: {name: {{ .Values.store.postgresURLSecret }}, key: url}}
# Each replica journals its audit records on a volume of its
# own before answering, and writes them to the store after a
# crash (docs/audit.md, "The journal").
- {name: BRIDGE_AUDIT_JOURNAL, value: /journal}
{{- else }}
- {name: BRIDGE_STORE, value: "sqlite:/data/qubs-fhir-bridge.db"}
{{- end }}
- {name: BRIDGE_DEFAULT_TIMEZONE, value: {{ .Values.timezone | quote }}}
- {name: BRIDGE_SITE_TIMEZONES, value: {{ .Values.siteTimezones | quote }}}
- {name: BRIDGE_RETENTION, value: {{ .Values.retention | quote }}}
- {name: BRIDGE_AUDIT_RETENTION, value: {{ .Values.auditRetention | quote }}}
- {name: BRIDGE_WORKLIST_INDEX, value: {{ .Values.worklistIndex | quote }}}
- {name: BRIDGE_WORKLIST_SYNC_INTERVAL, value: {{ .Values.worklistSyncInterval | quote }}}
- {name: BRIDGE_COMMENT_POLL_RATE, value: {{ .Values.commentPollRate | quote }}}
- {name: BRIDGE_DOMAINS, value: {{ .Values.domains | quote }}}
- {name: BRIDGE_RATE_LIMIT, value: {{ .Values.rateLimit | quote }}}
- {name: BRIDGE_RATE_BURST, value: {{ .Values.rateBurst | quote }}}
- {name: BRIDGE_TRUSTED_PROXIES, value: {{ .Values.trustedProxies | quote }}}
- {name: BRIDGE_SUBSCRIPTION_ALLOW_NETS, value: {{ .Values.subscriptionAllowNets | quote }}}
- {name: BRIDGE_SUBSCRIPTION_ERROR_AFTER, value: {{ .Values.subscriptionErrorAfter | quote }}}
- {name: BRIDGE_LOG_LEVEL, value: {{ .Values.logLevel | quote }}}
{{- end -}}
{{- /*
qfb.extraEnv: the values' extraEnv, for variables the chart does not set
(GOMEMLIMIT, AUTOMEMLIMIT, OTEL_*, or a BRIDGE_/QUBS_ setting without a
value of its own, e.g. QUBS_AUTH_STYLE). A name the chart sets, an entry
without a name, or a list that is not one is refused; values are
rendered as strings, as Kubernetes wants them.
*/ -}}
{{- define "qfb.extraEnv" -}}
{{- $set := list -}}
{{- range (include "qfb.env" . | fromYamlArray) -}}
{{- $set = append $set .name -}}
{{- end -}}
{{- if not (kindIs "slice" .Values.extraEnv) -}}
{{- fail "extraEnv must be a list of {name, value} or {name, valueFrom}" -}}
{{- end -}}
{{- range $i, $e := .Values.extraEnv -}}
{{- if not (kindIs "map" $e) -}}
{{- fail (printf "extraEnv[%d] must be a {name, value} or {name, valueFrom}" $i) -}}
{{- end -}}
{{- $name := required (printf "extraEnv[%d] needs a name" $i) $e.name | toString -}}
{{- if has $name $set -}}
{{- fail (printf "extraEnv %s: the chart sets it from its values (values.yaml)" $name) -}}
{{- end }}
- name: {{ $name | quote }}
{{- if hasKey $e "valueFrom" }}
  valueFrom: {{ toJson $e.valueFrom }}
{{- else }}
  value: {{ $e.value | default "" | toString | quote }}
{{- end }}
{{- end -}}
{{- end -}}
