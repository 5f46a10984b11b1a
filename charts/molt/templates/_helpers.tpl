{{/* Names and labels shared by every template. */}}

{{- define "molt.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name, with the chart's name unless it holds it. */}}
{{- define "molt.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "molt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "molt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "molt.labels" -}}
{{ include "molt.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "molt.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "molt.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Lease the replicas elect a leader on, in the release namespace. */}}
{{- define "molt.leaseName" -}}
{{- include "molt.fullname" . -}}
{{- end -}}

{{/* The Secret holding the history URL, or nothing when no history is configured. */}}
{{- define "molt.historySecret" -}}
{{- if .Values.history.existingSecret -}}
{{- .Values.history.existingSecret -}}
{{- else if .Values.history.url -}}
{{- printf "%s-history" (include "molt.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "molt.kwok" -}}
{{- if has "kwok" .Values.providers -}}true{{- end -}}
{{- end -}}
