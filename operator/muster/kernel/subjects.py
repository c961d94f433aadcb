"""What an admission request is about: a Pod, or a workload that carries pod templates.

Every gate judges pod templates, wherever they sit: ``/spec`` of a Pod, ``/spec/template`` of a
Deployment, ``/spec/jobTemplate/spec/template`` of a CronJob, every replica spec of a training
job. Checking workloads at apply time makes ``kubectl apply`` fail fast instead of a
ReplicaSet failing quietly later. Paths are data, so other training CRDs can be configured.

Some workloads name images outside any whole pod template: a Kubeflow TrainJob's
``spec.trainer.image`` and its overrides, merged by the controller into a runtime's template;
a RayCluster's autoscaler image. Those are partial templates (:class:`PartialTemplate`,
:class:`ContainerFields`): their images are judged like any, nothing is added to them, and the
pods they end up in are judged whole when they are created.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from muster.kernel import findings, pods, reviews, scopes

__all__ = [
    "DEFAULT_TEMPLATE_PATHS",
    "JUDGED_OPERATIONS",
    "ContainerFields",
    "Location",
    "PartialTemplate",
    "PodTemplate",
    "Subject",
    "TemplatePaths",
    "from_review",
    "templates_of",
]

JUDGED_OPERATIONS = frozenset({"CREATE", "UPDATE"})


@dataclasses.dataclass(frozen=True, slots=True)
class PartialTemplate:
    """Part of a pod template that a controller merges into one Muster does not see (a
    TrainJob's overrides or runtime patches of a TrainingRuntime's template). Its containers
    may name no image (they name the runtime's containers), and it need have none."""

    path: str
    bare: bool = False  # the path names the pod spec's fields themselves, with no metadata


@dataclasses.dataclass(frozen=True, slots=True)
class ContainerFields:
    """One container written as fields of a custom resource rather than in a pod spec (a
    TrainJob's ``spec.trainer``): judged as a partial template holding that container, when
    it names an image (without one, the controller uses a default it owns)."""

    path: str
    name: str  # the container's name in messages
    resources: str = "resources"  # the field holding its resource requirements


# A plain string is the path to a whole pod template (an object with metadata and spec).
Location = str | PartialTemplate | ContainerFields

# (API group, resource) -> where pod templates live; "*" matches every key or list index.
TemplatePaths = Mapping[tuple[str, str], tuple[Location, ...]]

# Kubeflow Trainer's TrainJob (trainer.kubeflow.org/v1alpha1) has carried its overrides in
# three shapes: 2.0 ``podSpecOverrides`` (the pod spec's fields, bare), 2.1
# ``podTemplateOverrides`` (metadata and spec), 2.2 and later ``runtimePatches``. Initializer
# images are never in a TrainJob: they live in its TrainingRuntime's template.
_TRAINJOB: tuple[Location, ...] = (
    ContainerFields("/spec/trainer", name="trainer", resources="resourcesPerNode"),
    PartialTemplate(
        "/spec/runtimePatches/*/trainingRuntimeSpec/template/spec/replicatedJobs/*"
        "/template/spec/template"
    ),
    PartialTemplate("/spec/podTemplateOverrides/*"),
    PartialTemplate("/spec/podSpecOverrides/*", bare=True),
)


def _ray_cluster(prefix: str) -> tuple[Location, ...]:
    return (
        f"{prefix}/headGroupSpec/template",
        f"{prefix}/workerGroupSpecs/*/template",
        # sidecars KubeRay adds to the head pod, each with an image of the user's choosing
        ContainerFields(f"{prefix}/autoscalerOptions", name="autoscaler"),
        ContainerFields(
            f"{prefix}/historyServerOptions/collectorOptions", name="ray-history-collector"
        ),
    )


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
    # kubeflow.org/v1 (Training Operator) and v2beta1 (MPI Operator) alike
    ("kubeflow.org", "mpijobs"): ("/spec/mpiReplicaSpecs/*/template",),
    ("trainer.kubeflow.org", "trainjobs"): _TRAINJOB,
    ("trainer.kubeflow.org", "trainingruntimes"): (
        "/spec/template/spec/replicatedJobs/*/template/spec/template",
    ),
    ("ray.io", "rayclusters"): _ray_cluster("/spec"),
    ("ray.io", "rayjobs"): (
        *_ray_cluster("/spec/rayClusterSpec"),
        "/spec/submitterPodTemplate",
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
    # A part merged into a template Muster does not see: gates judge its images and add
    # nothing to it (no node affinity, no verifying init container).
    partial: bool = False
    # For a spec assembled from a resource's own fields: an image's pointer in ``spec`` ->
    # where that image really is in the object (what a patch must name).
    relocated: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def image_uses(self) -> Iterator[pods.ImageUse]:
        """Every image this template names, each with the pointer to patch it in the object.
        A partial template's container without an image is the runtime's: not a use."""
        for use in pods.image_uses(self.spec, pointer=self.pointer):
            if self.partial and use.image is None:
                continue
            where = self.relocated.get(use.pointer)
            yield use if where is None else dataclasses.replace(use, pointer=where)

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


def _container_template(
    fields: ContainerFields, pointer: str, node: Mapping[str, Any]
) -> PodTemplate | None:
    if node.get("image") is None:
        return None  # the controller's default image, not the user's choice
    container: dict[str, Any] = {"name": fields.name, "image": node["image"]}
    for field, key in (("env", "env"), ("resources", fields.resources)):
        if key in node:
            container[field] = node[key]
    return PodTemplate(
        pointer=pointer,
        spec={"containers": [container]},
        metadata={},
        partial=True,
        relocated={f"{pointer}/containers/0/image": f"{pointer}/image"},
    )


def _template(location: Location, pointer: str, node: Mapping[str, Any]) -> PodTemplate | None:
    if isinstance(location, ContainerFields):
        return _container_template(location, pointer, node)
    partial = isinstance(location, PartialTemplate)
    if isinstance(location, PartialTemplate) and location.bare:
        return PodTemplate(pointer=pointer, spec=node, metadata={}, partial=True)
    spec = node.get("spec")
    metadata = node.get("metadata")
    return PodTemplate(
        pointer=f"{pointer}/spec",
        spec=spec if isinstance(spec, Mapping) else {},
        metadata=metadata if isinstance(metadata, Mapping) else {},
        partial=partial,
    )


def templates_of(obj: Mapping[str, Any], paths: Sequence[Location]) -> tuple[PodTemplate, ...]:
    """Every pod template found at ``paths`` (a missing one is simply absent)."""
    found: list[PodTemplate] = []
    for location in paths:
        path = location if isinstance(location, str) else location.path
        parts = [part for part in path.split("/") if part]
        for pointer, node in _walk(obj, parts, ""):
            if not isinstance(node, Mapping):
                continue
            template = _template(location, pointer, node)
            if template is not None:
                found.append(template)
    return tuple(found)


def from_review(
    review: reviews.Review,
    *,
    mode: findings.Mode,
    own_namespace: str | None,
    template_paths: TemplatePaths = DEFAULT_TEMPLATE_PATHS,
    enforcement: scopes.Enforcement = scopes.NAMESPACED,
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
            namespace,
            {scopes.ENFORCE_LABEL: mode.value},
            own_namespace=own_namespace,
            enforcement=enforcement,
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
