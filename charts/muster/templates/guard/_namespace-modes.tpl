{{/*
The record of namespace mode changes: a mutating webhook on Namespaces that never patches or
refuses (the guard, a ValidatingAdmissionPolicy, decides; it runs after every mutating webhook,
so this one also sees the attempts the guard refuses). The same entry as namespace_modes() in
operator/muster/app/webhookconfigs.py: its name, path, longest timeout and rules come from
files/webhooks.yaml, its match conditions from files/namespace-guard.yaml.
*/}}
{{- define "muster.namespaceModesWebhook" -}}
{{- $root := .root -}}
{{- $file := $root.Files.Get "files/namespace-guard.yaml" | fromYaml -}}
{{- $record := (include "muster.webhookSources" $root | fromJson).namespaceModes -}}
{{- $watched := concat (list "muster.dev/enforce" "muster.dev/ignore" "muster.dev/uncovered-images") $root.Values.namespaceGuard.protectedLabels | uniq | toJson -}}
- name: {{ $record.name }}
  admissionReviewVersions: ["v1"]
  sideEffects: NoneOnDryRun
  matchPolicy: Equivalent
  timeoutSeconds: {{ min (int $record.maxTimeoutSeconds) (int $root.Values.webhook.timeoutSeconds) }}
  failurePolicy: Ignore
  reinvocationPolicy: Never
  clientConfig:
    service:
      name: {{ include "muster.webhookServiceName" $root }}
      namespace: {{ $root.Release.Namespace }}
      path: {{ $record.path }}
      port: 443
    {{- with $.caBundle }}
    caBundle: {{ . }}
    {{- end }}
  rules:
    {{- range $record.rules }}
    - {{ toJson . }}
    {{- end }}
  matchConditions:
    - name: not-a-dry-run
      expression: {{ $file.notADryRun | quote }}
    - name: watched-label-changed
      expression: {{ printf $file.recordCondition $watched $watched | quote }}
{{- end -}}

