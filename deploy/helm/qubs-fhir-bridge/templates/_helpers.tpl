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
