{{/* vim: set filetype=mustache: */}}

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

{{/* Selector labels of one component: stable for the life of a release. */}}
{{- define "muster.selectorLabels" -}}
app.kubernetes.io/name: {{ include "muster.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "muster.labels" -}}
helm.sh/chart: {{ include "muster.chart" .root }}
{{ include "muster.selectorLabels" . }}
app.kubernetes.io/part-of: muster
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
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

{{- define "muster.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag must not be \"latest\": pin a version (and preferably image.digest)" -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
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

{{/* Namespaces no webhook ever judges: the control plane's, Muster's own, and any listed. */}}
{{- define "muster.excludedNamespaces" -}}
{{- $names := list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace -}}
{{- $names = concat $names .Values.webhook.excludeNamespaces | uniq | sortAlpha -}}
{{- toJson $names -}}
{{- end -}}

{{/* Label values of muster.dev/enforce per mode; the operator applies the same rule again. */}}
{{- define "muster.modeLabelValues" -}}
{{- if eq . "enforce" -}}
["true","enforce"]
{{- else if eq . "warn" -}}
["warn"]
{{- else -}}
{{- fail (printf "webhook.modes: unknown mode %q (known: enforce, warn)" .) -}}
{{- end -}}
{{- end -}}

{{/*
Guards: values the schema cannot express, or that must hold even when schema validation is skipped.
*/}}
{{- define "muster.validate" -}}
{{- /* matchConditions are GA since 1.30. Development builds report no version and pass. */ -}}
{{- $major := .Capabilities.KubeVersion.Major | default "0" | int -}}
{{- $minor := .Capabilities.KubeVersion.Minor | default "0" | trimSuffix "+" | int -}}
{{- if and (eq $major 1) (lt $minor 30) -}}
{{- fail (printf "Muster needs Kubernetes 1.30 or newer (webhook matchConditions); this is %s" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if lt (int .Values.operator.replicas) 1 -}}
{{- fail "operator.replicas must be at least 1: without a replica, enforce-mode namespaces cannot create pods" -}}
{{- end -}}
{{- if not .Values.webhook.modes -}}
{{- fail "webhook.modes must name at least one mode (enforce, warn)" -}}
{{- end -}}
{{- if not (has .Values.enforcement.scope (list "namespaced" "cluster")) -}}
{{- fail (printf "enforcement.scope: unknown scope %q (known: namespaced, cluster)" .Values.enforcement.scope) -}}
{{- end -}}
{{- if and (eq .Values.enforcement.scope "cluster") (not (has "enforce" .Values.webhook.modes)) -}}
{{- fail "enforcement.scope cluster judges unlabelled namespaces in enforce mode: webhook.modes must include enforce" -}}
{{- end -}}
{{- range .Values.webhook.modes -}}
{{- if not (has . (list "enforce" "warn")) -}}
{{- fail (printf "webhook.modes: unknown mode %q (known: enforce, warn)" .) -}}
{{- end -}}
{{- end -}}
{{- if ne (len .Values.webhook.modes) (len (uniq .Values.webhook.modes)) -}}
{{- fail "webhook.modes lists a mode twice" -}}
{{- end -}}
{{- if or (lt (int .Values.webhook.timeoutSeconds) 1) (gt (int .Values.webhook.timeoutSeconds) 30) -}}
{{- fail "webhook.timeoutSeconds must be between 1 and 30 (the apiserver's limit)" -}}
{{- end -}}
{{- /* A deadline at or past the timeout: the apiserver gives up first, with its error, not Muster's reason. */ -}}
{{- $deadline := .Values.webhook.admissionDeadlineSeconds | default 0 | float64 -}}
{{- if lt $deadline 0.0 -}}
{{- fail (printf "webhook.admissionDeadlineSeconds must not be negative, not %v (0 derives it from webhook.timeoutSeconds)" .Values.webhook.admissionDeadlineSeconds) -}}
{{- end -}}
{{- if and (gt $deadline 0.0) (ge $deadline (float64 .Values.webhook.timeoutSeconds)) -}}
{{- fail (printf "webhook.admissionDeadlineSeconds (%v) must be below webhook.timeoutSeconds (%v): the apiserver would stop waiting first and report a webhook error instead of Muster's reason; set 0 to derive it from the timeout" .Values.webhook.admissionDeadlineSeconds .Values.webhook.timeoutSeconds) -}}
{{- end -}}
{{- if ge (int .Values.webhook.tls.renewBeforeDays) (int .Values.webhook.tls.validityDays) -}}
{{- fail "webhook.tls.renewBeforeDays must be less than webhook.tls.validityDays" -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled .Values.networkPolicy.restrictEgress (not .Values.networkPolicy.apiServerCIDRs) -}}
{{- fail "networkPolicy.restrictEgress needs networkPolicy.apiServerCIDRs: the operator must reach the API server" -}}
{{- end -}}
{{- end -}}

{{/* The operator pods' hardened security contexts, shared by every Muster pod. */}}
{{- define "muster.podSecurityContext" -}}
{{- toYaml .Values.operator.podSecurityContext -}}
{{- end -}}

{{- define "muster.containerSecurityContext" -}}
{{- toYaml .Values.operator.securityContext -}}
{{- end -}}
