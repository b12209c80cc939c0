{{/* Chart name. */}}
{{- define "streamad.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: release-chart, or the release name when it already holds the chart name. */}}
{{- define "streamad.fullname" -}}
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

{{- define "streamad.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "streamad.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamad.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "streamad.labels" -}}
helm.sh/chart: {{ include "streamad.chart" . }}
{{ include "streamad.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: streamad
{{- end }}

{{- define "streamad.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "streamad.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "streamad.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* STREAMAD_SECURITY_PROTOCOL from sasl.enabled and tls.enabled. */}}
{{- define "streamad.securityProtocol" -}}
{{- if and .Values.sasl.enabled .Values.tls.enabled }}SASL_SSL
{{- else if .Values.sasl.enabled }}SASL_PLAINTEXT
{{- else if .Values.tls.enabled }}SSL
{{- else }}PLAINTEXT
{{- end }}
{{- end }}

{{/* Name of the ConfigMap of job files, or "" when no jobs are loaded at start. */}}
{{- define "streamad.jobsConfigMap" -}}
{{- if .Values.jobsExistingConfigMap }}
{{- .Values.jobsExistingConfigMap }}
{{- else if .Values.jobs }}
{{- printf "%s-jobs" (include "streamad.fullname" .) }}
{{- end }}
{{- end }}

{{/* Checks that values.schema.json cannot express. */}}
{{- define "streamad.validate" -}}
{{- $_ := required "kafka.broker is required (bootstrap servers, e.g. kafka-0.kafka:9092,kafka-1.kafka:9092)" .Values.kafka.broker }}
{{- if gt (int .Values.replicaCount) (int .Values.kafka.partitions) }}
{{- fail (printf "replicaCount (%d) exceeds kafka.partitions (%d): the extra workers would get no partitions" (int .Values.replicaCount) (int .Values.kafka.partitions)) }}
{{- end }}
{{- if and .Values.sasl.enabled (not .Values.sasl.existingSecret) }}
{{- fail "sasl.enabled needs sasl.existingSecret: a Secret with the username and password keys (sasl.usernameKey, sasl.passwordKey)" }}
{{- end }}
{{- if and .Values.tls.caSecret (not .Values.tls.enabled) }}
{{- fail "tls.caSecret is set but tls.enabled is false" }}
{{- end }}
{{- if and .Values.jobs .Values.jobsExistingConfigMap }}
{{- fail "set either jobs or jobsExistingConfigMap, not both" }}
{{- end }}
{{- end }}

{{/* Probe timings from a probe's values (everything but "enabled"). */}}
{{- define "streamad.probeTimings" -}}
{{- range $k := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "failureThreshold" "successThreshold" }}
{{- if hasKey $ $k }}
{{ $k }}: {{ index $ $k | int64 }}
{{- end }}
{{- end }}
{{- end }}
