{{/*
What the webhooks are built from: files/webhooks.yaml, which hack/generate-webhooks.py writes
from operator/muster/app/webhookconfigs.py (rules, namespace selector parts, match conditions).
As JSON; a file that is missing or unreadable stops the render.
*/}}
{{- define "muster.webhookSources" -}}
{{- $sources := .Files.Get "files/webhooks.yaml" | fromYaml -}}
{{- if not (and (hasKey $sources "pods") (hasKey $sources "namespaceModes")) -}}
{{- fail (printf "files/webhooks.yaml is missing or unreadable (run hack/generate-webhooks.py): %v" ($sources.Error | default "no pods or namespaceModes")) -}}
{{- end -}}
{{- toJson $sources -}}
{{- end -}}

{{/* Namespaces no webhook ever judges: the control plane's, Muster's own, and any listed. */}}
{{- define "muster.excludedNamespaces" -}}
{{- $names := concat .sources.neverJudged (list .root.Release.Namespace) .root.Values.webhook.excludeNamespaces -}}
{{- toJson ($names | uniq | sortAlpha) -}}
{{- end -}}

{{/*
The webhooks of one configuration kind ("validate" or "mutate"), one per opt-in mode, as
webhookconfigs.validating and webhookconfigs.mutating build the development configurations.
*/}}
{{- define "muster.webhooks" -}}
{{- $root := .root -}}
{{- $kind := .kind -}}
{{- $pods := (include "muster.webhookSources" $root | fromJson).pods -}}
{{- range $mode := $root.Values.webhook.modes }}
{{- $modeExpression := index $pods.modeExpressions $root.Values.enforcement.scope $mode | default dict -}}
{{- if not $modeExpression -}}
{{- fail (printf "webhook.modes: unknown mode %q in scope %q" $mode $root.Values.enforcement.scope) -}}
{{- end }}
- name: {{ printf "%s.%s.pods.muster.dev" $mode $kind }}
  admissionReviewVersions: ["v1"]
  sideEffects: None
  matchPolicy: Equivalent
  timeoutSeconds: {{ int $root.Values.webhook.timeoutSeconds }}
  failurePolicy: {{ index $root.Values.webhook.failurePolicy $mode }}
  {{- if eq $kind "mutate" }}
  reinvocationPolicy: IfNeeded
  {{- end }}
  clientConfig:
    service:
      name: {{ include "muster.webhookServiceName" $root }}
      namespace: {{ $root.Release.Namespace }}
      path: {{ printf "/%s/%s" $kind $mode }}
      port: 443
    {{- with $.caBundle }}
    caBundle: {{ . }}
    {{- end }}
  # Pods and every workload kind whose pod templates Muster judges; rules for kinds a cluster
  # does not serve (e.g. Ray without its CRDs) simply never match.
  rules:
    {{- range $pods.rules }}
    - {{ toJson . }}
    {{- end }}
  namespaceSelector:
    # The opt-in (in cluster scope, enforce selects every namespace not in warn mode), the
    # opt-out, the namespaces never judged, then webhook.namespaceSelectorExpressions.
    matchExpressions:
      - {{ toJson $modeExpression }}
      - {{ toJson $pods.optOutExpression }}
      - key: kubernetes.io/metadata.name
        operator: NotIn
        values: {{ include "muster.excludedNamespaces" (dict "root" $root "sources" $pods) }}
      {{- with $root.Values.webhook.namespaceSelectorExpressions }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
  {{- with $root.Values.webhook.objectSelector }}
  objectSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- /* Each condition's reason is beside its text in webhookconfigs.py; the values turn them on. */ -}}
  {{- $conditions := list -}}
  {{- if $root.Values.webhook.skipNodeRequests -}}
  {{- $conditions = append $conditions "not-from-nodes" -}}
  {{- end -}}
  {{- if $root.Values.webhook.skipUnchangedSpecUpdates -}}
  {{- $conditions = append $conditions "spec-changed-on-update" -}}
  {{- end -}}
  {{- if and (eq $kind "mutate") $root.Values.webhook.skipNeedlessMutations -}}
  {{- $conditions = append $conditions "may-mutate" -}}
  {{- end -}}
  {{- with $conditions }}
  matchConditions:
    {{- range $name := . }}
    - name: {{ $name }}
      expression: {{ index $pods.matchConditions $name | toJson }}
    {{- end }}
  {{- end }}
{{- end }}
{{- end -}}
