{{/* vim: set filetype=mustache: */}}
{{/* Names of the release's objects. */}}

{{- define "muster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "muster.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "muster.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "muster.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "muster.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "muster.peeringName" -}}
{{- default (include "muster.fullname" .) .Values.operator.peering.name -}}
{{- end -}}

{{- define "muster.webhookServiceName" -}}
{{- include "muster.fullname" . -}}
{{- end -}}

{{- define "muster.tlsSecretName" -}}
{{- printf "%s-webhook-tls" (include "muster.fullname" .) -}}
{{- end -}}

{{- define "muster.webhookConfigurationName" -}}
{{- include "muster.fullname" . -}}
{{- end -}}
