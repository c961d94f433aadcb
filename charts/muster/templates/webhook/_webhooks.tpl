{{/*
The webhooks of one configuration kind ("validate" or "mutate"), one per opt-in mode. The rules
match operator/muster/core/webhookconfigs.py, which builds the development configurations.
*/}}
{{- define "muster.webhooks" -}}
{{- $root := .root -}}
{{- $kind := .kind -}}
{{- range $mode := $root.Values.webhook.modes }}
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
  rules:
    {{- include "muster.webhookRules" $root | nindent 4 }}
  namespaceSelector:
    matchExpressions:
      - key: muster.dev/enforce
        operator: In
        values: {{ include "muster.modeLabelValues" $mode }}
      - key: muster.dev/ignore
        operator: NotIn
        values: ["true"]
      - key: kubernetes.io/metadata.name
        operator: NotIn
        values: {{ include "muster.excludedNamespaces" $root }}
      {{- with $root.Values.webhook.namespaceSelectorExpressions }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
  {{- with $root.Values.webhook.objectSelector }}
  objectSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if or $root.Values.webhook.skipNodeRequests $root.Values.webhook.skipUnchangedSpecUpdates }}
  matchConditions:
    {{- if $root.Values.webhook.skipNodeRequests }}
    # Kubelets only create mirror pods of static pods that already run: admission cannot stop them.
    - name: not-from-nodes
      expression: "!request.userInfo.username.startsWith('system:node:')"
    {{- end }}
    {{- if $root.Values.webhook.skipUnchangedSpecUpdates }}
    # Label, annotation, finalizer and owner updates cannot change anything Muster judges (pod
    # specs and pod templates all live under .spec; status updates use another subresource).
    - name: spec-changed-on-update
      expression: "request.operation != 'UPDATE' || !has(object.spec) || !has(oldObject.spec) || object.spec != oldObject.spec"
    {{- end }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
Pods and every workload kind whose pod templates Muster judges, grouped by API group: the same
list as operator/muster/core/subjects.py (DEFAULT_TEMPLATE_PATHS), which the tests compare.
Rules for kinds a cluster does not serve (e.g. Ray without its CRDs) simply never match.
*/}}
{{- define "muster.webhookRules" -}}
- apiGroups: [""]
  apiVersions: ["*"]
  operations: ["CREATE", "UPDATE"]
  resources: ["bindings", "pods", "pods/binding", "pods/ephemeralcontainers"]
  scope: Namespaced
- apiGroups: ["apps"]
  apiVersions: ["*"]
  operations: ["CREATE", "UPDATE"]
  resources: ["daemonsets", "deployments", "replicasets", "statefulsets"]
  scope: Namespaced
- apiGroups: ["batch"]
  apiVersions: ["*"]
  operations: ["CREATE", "UPDATE"]
  resources: ["cronjobs", "jobs"]
  scope: Namespaced
- apiGroups: ["jobset.x-k8s.io"]
  apiVersions: ["*"]
  operations: ["CREATE", "UPDATE"]
  resources: ["jobsets"]
  scope: Namespaced
- apiGroups: ["kubeflow.org"]
  apiVersions: ["*"]
  operations: ["CREATE", "UPDATE"]
  resources: ["mpijobs", "pytorchjobs", "tfjobs", "trainjobs"]
  scope: Namespaced
- apiGroups: ["ray.io"]
  apiVersions: ["*"]
  operations: ["CREATE", "UPDATE"]
  resources: ["rayclusters", "rayjobs"]
  scope: Namespaced
{{- end -}}
