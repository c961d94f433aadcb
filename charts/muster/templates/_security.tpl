{{/*
Security contexts, each component's own (operator, nodeAgent, hooks.preDelete, tests):
include with (dict "values" .Values.nodeAgent "name" "nodeAgent"). A component without one
would run with the runtime's defaults, so a missing one is refused even without the schema.
*/}}
{{- define "muster.podSecurityContext" -}}
{{- $context := required (printf "%s.podSecurityContext is required" .name) .values.podSecurityContext -}}
{{- toYaml $context -}}
{{- end -}}

{{- define "muster.containerSecurityContext" -}}
{{- $context := required (printf "%s.securityContext is required" .name) .values.securityContext -}}
{{- toYaml $context -}}
{{- end -}}
