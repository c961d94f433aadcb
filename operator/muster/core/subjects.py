"""What an admission request is about: a Pod, or a workload that carries pod templates.

Every gate judges pod templates, wherever they sit: ``/spec`` of a Pod, ``/spec/template`` of a
Deployment, ``/spec/jobTemplate/spec/template`` of a CronJob, every replica spec of a training
job. Checking workloads at apply time makes ``kubectl apply`` fail fast instead of a
ReplicaSet failing quietly later. Paths are data, so other training CRDs can be configured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from muster.core import findings, reviews, scopes

__all__ = [
    "DEFAULT_TEMPLATE_PATHS",
    "JUDGED_OPERATIONS",
    "PodTemplate",
    "Subject",
    "TemplatePaths",
    "from_review",
    "templates_of",
]

JUDGED_OPERATIONS = frozenset({"CREATE", "UPDATE"})

# (API group, resource) -> where pod templates live; "*" matches every key or list index.
TemplatePaths = Mapping[tuple[str, str], tuple[str, ...]]

DEFAULT_TEMPLATE_PATHS: TemplatePaths = {
    ("", "pods"): ("",),
    ("apps", "deployments"): ("/spec/template",),
    ("apps", "statefulsets"): ("/spec/template",),
    ("apps", "daemonsets"): ("/spec/template",),
    ("apps", "replicasets"): ("/spec/template",),
    ("batch", "jobs"): ("/spec/template",),
    ("batch", "cronjobs"): ("/spec/jobTemplate/spec/template",),
    ("kubeflow.org", "pytorchjobs"): ("/spec/pytorchReplicaSpecs/*/template",),
    ("kubeflow.org", "tfjobs"): ("/spec/tfReplicaSpecs/*/template",),
    ("kubeflow.org", "mpijobs"): ("/spec/mpiReplicaSpecs/*/template",),
    ("kubeflow.org", "trainjobs"): ("/spec/podTemplateOverrides/*/spec",),
    ("ray.io", "rayclusters"): (
        "/spec/headGroupSpec/template",
        "/spec/workerGroupSpecs/*/template",
    ),
    ("ray.io", "rayjobs"): (
        "/spec/rayClusterSpec/headGroupSpec/template",
        "/spec/rayClusterSpec/workerGroupSpecs/*/template",
    ),
    ("jobset.x-k8s.io", "jobsets"): ("/spec/replicatedJobs/*/template/spec/template",),
}

# Pod subresources whose content Muster judges; others (status, exec, ...) are not about
# images, models or placement. A ``binding`` (a Binding object placing the pod on a node) is
# passed on without pod templates: only gates that judge placement look at it.
_POD_SUBRESOURCES = frozenset({"", "ephemeralcontainers", "binding"})
_TEMPLATELESS_SUBRESOURCES = frozenset({"binding"})
# The older ``POST /api/v1/namespaces/N/bindings`` does the same as ``pods/N/binding``: it is
# judged as that subresource, so the scheduler cannot be bypassed through it.
_LEGACY_BINDINGS = ("", "bindings")


@dataclasses.dataclass(frozen=True, slots=True)
class PodTemplate:
    """One pod spec inside the object, with JSON pointers to patch it."""

    pointer: str  # to the pod spec, e.g. "/spec" or "/spec/template/spec"
    spec: Mapping[str, Any]
    metadata: Mapping[str, Any]

    @property
    def annotations(self) -> Mapping[str, str]:
        value = self.metadata.get("annotations")
        return value if isinstance(value, Mapping) else {}

    @property
    def labels(self) -> Mapping[str, str]:
        value = self.metadata.get("labels")
        return value if isinstance(value, Mapping) else {}


@dataclasses.dataclass(frozen=True, slots=True)
class Subject:
    """The object under review, reduced to what gates need."""

    uid: str
    api_version: str
    operation: str
    group: str
    resource: str
    subresource: str
    kind: str
    namespace: str
    name: str
    object: Mapping[str, Any]
    templates: tuple[PodTemplate, ...]
    user: Mapping[str, Any]
    mode: findings.Mode
    dry_run: bool

    @property
    def is_pod(self) -> bool:
        return self.group == "" and self.resource == "pods"

    @property
    def display(self) -> str:
        """``Deployment team/trainer`` (a denied pod may have only a generateName)."""
        metadata = self.object.get("metadata") or {}
        name = self.name or metadata.get("name") or f"{metadata.get('generateName', '')}*"
        return f"{self.kind} {self.namespace}/{name}"


def _walk(node: Any, parts: Sequence[str], pointer: str) -> Iterator[tuple[str, Any]]:
    if not parts:
        yield pointer, node
        return
    head, rest = parts[0], parts[1:]
    if head == "*":
        if isinstance(node, Mapping):
            for key in sorted(node):
                yield from _walk(node[key], rest, f"{pointer}/{_escape(str(key))}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                yield from _walk(item, rest, f"{pointer}/{index}")
    elif isinstance(node, Mapping) and head in node:
        yield from _walk(node[head], rest, f"{pointer}/{_escape(head)}")


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def templates_of(obj: Mapping[str, Any], paths: Sequence[str]) -> tuple[PodTemplate, ...]:
    """Every pod template found at ``paths`` (a missing one is simply absent)."""
    found: list[PodTemplate] = []
    for path in paths:
        parts = [part for part in path.split("/") if part]
        for pointer, node in _walk(obj, parts, ""):
            if not isinstance(node, Mapping):
                continue
            spec = node.get("spec")
            metadata = node.get("metadata")
            found.append(
                PodTemplate(
                    pointer=f"{pointer}/spec",
                    spec=spec if isinstance(spec, Mapping) else {},
                    metadata=metadata if isinstance(metadata, Mapping) else {},
                )
            )
    return tuple(found)


def from_review(
    review: reviews.Review,
    *,
    mode: findings.Mode,
    own_namespace: str | None,
    template_paths: TemplatePaths = DEFAULT_TEMPLATE_PATHS,
) -> Subject | None:
    """The subject to judge, or None when Muster has no business with this request."""
    request = review["request"]
    if request["operation"] not in JUDGED_OPERATIONS:
        return None
    obj = request.get("object") or {}
    raw_metadata = obj.get("metadata")
    metadata: Mapping[str, Any] = raw_metadata if isinstance(raw_metadata, Mapping) else {}
    namespace = request.get("namespace") or metadata.get("namespace") or ""
    # A misconfigured webhook must still never judge the control plane or Muster itself.
    if (
        scopes.mode_for_namespace(
            namespace, {scopes.ENFORCE_LABEL: mode.value}, own_namespace=own_namespace
        )
        is None
    ):
        return None
    resource = request["resource"]
    key = (resource["group"], resource["resource"])
    subresource = request.get("subResource", "")
    if key == _LEGACY_BINDINGS and not subresource:
        key, subresource = ("", "pods"), "binding"
    if key == ("", "pods") and subresource not in _POD_SUBRESOURCES:
        return None
    if key != ("", "pods") and subresource:
        return None
    paths = template_paths.get(key)
    if paths is None:
        return None
    return Subject(
        uid=request["uid"],
        api_version=review["apiVersion"],
        operation=request["operation"],
        group=key[0],
        resource=key[1],
        subresource=subresource,
        kind=str(request["kind"].get("kind", "")),
        namespace=namespace,
        name=request.get("name") or str(metadata.get("name") or ""),
        object=obj,
        templates=() if subresource in _TEMPLATELESS_SUBRESOURCES else templates_of(obj, paths),
        user=request["userInfo"],
        mode=mode,
        dry_run=bool(request.get("dryRun")),
    )
