{{/*
Guards: values the schema cannot express, or that must hold even when schema validation is skipped.
*/}}
{{- define "muster.validate" -}}
{{- /* The Kubernetes version is Chart.yaml's kubeVersion: helm refuses older ones first. */ -}}
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
