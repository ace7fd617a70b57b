{{/* Chart name, overridable. */}}
{{- define "privacy-pipeline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already contains the chart name. */}}
{{- define "privacy-pipeline.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "privacy-pipeline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades (Deployment selectors are immutable). */}}
{{- define "privacy-pipeline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "privacy-pipeline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "privacy-pipeline.labels" -}}
helm.sh/chart: {{ include "privacy-pipeline.chart" . }}
{{ include "privacy-pipeline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: privacy-pipeline
{{- end }}

{{- define "privacy-pipeline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "privacy-pipeline.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "privacy-pipeline.policyConfigMap" -}}
{{- default (printf "%s-policy" (include "privacy-pipeline.fullname" .)) .Values.policy.existingConfigMap }}
{{- end }}

{{- define "privacy-pipeline.policyContent" -}}
{{- if .Values.policy.content }}{{ .Values.policy.content }}{{ else }}{{ .Files.Get "files/policy.yaml" }}{{ end }}
{{- end }}

{{/*
The deployable components: values key, name suffix and CLI arguments. One list so the
Deployments, PodDisruptionBudgets and NOTES stay in step.
*/}}
{{- define "privacy-pipeline.components" -}}
{{- $c := list }}
{{- if .Values.worker.enabled }}
{{- $c = append $c (dict "name" "worker" "values" .Values.worker "args" (list "worker")) }}
{{- end }}
{{- if .Values.sinks.clickhouse.enabled }}
{{- $c = append $c (dict "name" "sink-clickhouse" "values" .Values.sinks.clickhouse "args" (list "sink" "clickhouse")) }}
{{- end }}
{{- if .Values.sinks.training.enabled }}
{{- $c = append $c (dict "name" "sink-training" "values" .Values.sinks.training "args" (list "sink" "training")) }}
{{- end }}
{{- if .Values.api.enabled }}
{{- $c = append $c (dict "name" "api" "values" .Values.api "args" (list "api")) }}
{{- end }}
{{- toJson $c }}
{{- end }}
