{{/*
The webhooks of one configuration kind ("validate" or "mutate"), one per opt-in mode. The rules
match operator/muster/app/webhookconfigs.py, which builds the development configurations.
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
      {{- if and (eq $root.Values.enforcement.scope "cluster") (eq $mode "enforce") }}
      # Cluster scope: every namespace not explicitly in warn mode, labelled or not.
      - key: muster.dev/enforce
        operator: NotIn
        values: ["warn"]
      {{- else }}
      - key: muster.dev/enforce
        operator: In
        values: {{ include "muster.modeLabelValues" $mode }}
      {{- end }}
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
  {{- $mayMutate := and (eq $kind "mutate") $root.Values.webhook.skipNeedlessMutations }}
  {{- if or $root.Values.webhook.skipNodeRequests $root.Values.webhook.skipUnchangedSpecUpdates $mayMutate }}
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
    {{- if $mayMutate }}
    # A plain Pod none of whose images, GPU resources, node selection, volumes or model
    # annotations any gate would change is not sent to the mutating webhook (workloads always
    # are). The same text as MAY_MUTATE in operator/muster/app/webhookconfigs.py.
    - name: may-mutate
      expression: >-
        request.resource.group != '' ||
        request.resource.resource != 'pods' ||
        (has(request.subResource) && request.subResource != '') ||
        !has(object.spec) ||
        (has(object.spec.containers) && object.spec.containers.exists(c, !has(c.image) || !c.image.contains('@') || (has(c.env) && c.env.exists(e, has(e.name) && e.name == 'STORAGE_URI')) || (has(c.resources) && ((has(c.resources.limits) && c.resources.limits.exists(r, r.startsWith('nvidia.com/'))) || (has(c.resources.requests) && c.resources.requests.exists(r, r.startsWith('nvidia.com/'))))))) ||
        (has(object.spec.initContainers) && object.spec.initContainers.exists(c, !has(c.image) || !c.image.contains('@') || (has(c.env) && c.env.exists(e, has(e.name) && e.name == 'STORAGE_URI')) || (has(c.resources) && ((has(c.resources.limits) && c.resources.limits.exists(r, r.startsWith('nvidia.com/'))) || (has(c.resources.requests) && c.resources.requests.exists(r, r.startsWith('nvidia.com/'))))))) ||
        (has(object.spec.ephemeralContainers) && object.spec.ephemeralContainers.exists(c, !has(c.image) || !c.image.contains('@'))) ||
        (has(object.spec.volumes) && object.spec.volumes.exists(v, has(v.image) || has(v.persistentVolumeClaim))) ||
        (has(object.spec.resourceClaims) && size(object.spec.resourceClaims) > 0) ||
        (has(object.spec.nodeSelector) && object.spec.nodeSelector.exists(k, k.startsWith('nvidia.com/'))) ||
        (has(object.spec.affinity) && has(object.spec.affinity.nodeAffinity)) ||
        (has(object.metadata.annotations) && object.metadata.annotations.exists(k, k == 'muster.dev/model-volumes' || k.matches('(?i)(storage-uri|storageuri)$')))
    {{- end }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
Pods and every workload kind whose pod templates Muster judges, grouped by API group: the same
list as operator/muster/kernel/subjects.py (DEFAULT_TEMPLATE_PATHS), which the tests compare.
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
  resources: ["mpijobs", "pytorchjobs", "tfjobs"]
  scope: Namespaced
- apiGroups: ["ray.io"]
  apiVersions: ["*"]
  operations: ["CREATE", "UPDATE"]
  resources: ["rayclusters", "rayjobs"]
  scope: Namespaced
- apiGroups: ["trainer.kubeflow.org"]
  apiVersions: ["*"]
  operations: ["CREATE", "UPDATE"]
  resources: ["trainingruntimes", "trainjobs"]
  scope: Namespaced
{{- end -}}
