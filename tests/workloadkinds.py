"""Every workload kind Muster judges, as an object of its published API naming one image, and
the real CRDs of the custom ones (tests/fixtures/crds; MANIFEST.md there names their sources).

The unit tests check that Muster finds each image where it is; the e2e tests create each
object through the real apiserver, with the real CRD installed, as a tenant would.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import yaml
from kubernetes import client

from muster.platform import controlplane
from tests import kubeclients, paths

__all__ = [
    "KINDS",
    "WorkloadKind",
    "crd_definitions",
    "create_trainjob",
    "downloading_trainjob",
    "install_crds",
    "resolve",
]

CRDS = paths.FIXTURES / "crds"

# (image, filler) -> the object's body: ``image`` is the one under test, ``filler`` an image
# known to pass for the places the API requires but the test is not about.
Build = Callable[[str, str], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class WorkloadKind:
    """One way a workload names an image: ``build`` gives the object's body, ``pointer`` is
    where the image under test sits in it."""

    label: str
    api_version: str
    kind: str
    plural: str
    build: Build
    pointer: str
    subject: str  # how denials name the image's place, e.g. 'container "main"'

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def object(self, name: str, image: str, filler: str) -> dict[str, Any]:
        body = self.build(image, filler)
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": {"name": name},
            **body,
        }


def _pod_spec(image: str, name: str = "main", **extra: Any) -> dict[str, Any]:
    return {"containers": [{"name": name, "image": image}], **extra}


def _template(image: str, name: str = "main", **extra: Any) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "w"}}, "spec": _pod_spec(image, name, **extra)}


def _selected(image: str, **spec: Any) -> dict[str, Any]:
    """apps/v1: a selector matching the template; no replicas, so no pods to schedule."""
    return {
        "spec": {"selector": {"matchLabels": {"app": "w"}}, "template": _template(image), **spec}
    }


def _replicas(image: str, role: str, container: str) -> dict[str, Any]:
    return {
        role: {"replicas": 1, "restartPolicy": "OnFailure", "template": _template(image, container)}
    }


def _mpi(image: str) -> dict[str, Any]:
    launcher = {"replicas": 1, "template": _template(image, "launcher")}
    return {"spec": {"mpiReplicaSpecs": {"Launcher": launcher}}}


def _ray_cluster(image: str) -> dict[str, Any]:
    return {"headGroupSpec": {"rayStartParams": {}, "template": _template(image, "ray-head")}}


def _jobset_jobs(image: str) -> list[dict[str, Any]]:
    job = {"template": _template(image, "node", restartPolicy="Never")}
    return [{"name": "node", "replicas": 1, "template": {"spec": job}}]


def _runtime_patch(image: str) -> dict[str, Any]:
    """A TrainJob's patch of its runtime's ``node`` pods (Trainer 2.2 and later): an image
    volume, mounted by the runtime's container, which the patch names without an image."""
    mount = {"name": "weights", "mountPath": "/weights"}
    pod = {
        "volumes": [{"name": "weights", "image": {"reference": image}}],
        "containers": [{"name": "node", "volumeMounts": [mount]}],
    }
    job = {"name": "node", "template": {"spec": {"template": {"spec": pod}}}}
    return {
        "manager": "team.example.com/tuning",
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job]}}},
    }


_TEMPLATE = "/spec/template/spec/containers/0/image"
_NOWHERE = {"muster-e2e.dev/no-such-node": "true"}  # a node selector no node matches
_RUNTIME_PATCH = (
    "/spec/runtimePatches/0/trainingRuntimeSpec/template/spec/replicatedJobs/0"
    "/template/spec/template/spec"
)

KINDS: tuple[WorkloadKind, ...] = (
    WorkloadKind(
        "Deployment",
        "apps/v1",
        "Deployment",
        "deployments",
        lambda image, _: _selected(image, replicas=0),
        _TEMPLATE,
        'container "main"',
    ),
    WorkloadKind(
        "StatefulSet",
        "apps/v1",
        "StatefulSet",
        "statefulsets",
        lambda image, _: _selected(image, replicas=0, serviceName="w"),
        _TEMPLATE,
        'container "main"',
    ),
    WorkloadKind(
        "DaemonSet",
        "apps/v1",
        "DaemonSet",
        "daemonsets",
        lambda image, _: {
            "spec": {
                "selector": {"matchLabels": {"app": "w"}},
                "template": _template(image, nodeSelector=_NOWHERE),
            }
        },
        _TEMPLATE,
        'container "main"',
    ),
    WorkloadKind(
        "ReplicaSet",
        "apps/v1",
        "ReplicaSet",
        "replicasets",
        lambda image, _: _selected(image, replicas=0),
        _TEMPLATE,
        'container "main"',
    ),
    WorkloadKind(
        "Job",
        "batch/v1",
        "Job",
        "jobs",
        lambda image, _: {
            "spec": {"suspend": True, "template": _template(image, restartPolicy="Never")}
        },
        _TEMPLATE,
        'container "main"',
    ),
    WorkloadKind(
        "CronJob",
        "batch/v1",
        "CronJob",
        "cronjobs",
        lambda image, _: {
            "spec": {
                "schedule": "0 0 1 1 *",
                "suspend": True,
                "jobTemplate": {"spec": {"template": _template(image, restartPolicy="Never")}},
            }
        },
        "/spec/jobTemplate/spec/template/spec/containers/0/image",
        'container "main"',
    ),
    WorkloadKind(
        "PyTorchJob",
        "kubeflow.org/v1",
        "PyTorchJob",
        "pytorchjobs",
        lambda image, _: {"spec": {"pytorchReplicaSpecs": _replicas(image, "Master", "pytorch")}},
        "/spec/pytorchReplicaSpecs/Master/template/spec/containers/0/image",
        'container "pytorch"',
    ),
    WorkloadKind(
        "TFJob",
        "kubeflow.org/v1",
        "TFJob",
        "tfjobs",
        lambda image, _: {"spec": {"tfReplicaSpecs": _replicas(image, "Worker", "tensorflow")}},
        "/spec/tfReplicaSpecs/Worker/template/spec/containers/0/image",
        'container "tensorflow"',
    ),
    WorkloadKind(
        "MPIJob (Training Operator, v1)",
        "kubeflow.org/v1",
        "MPIJob",
        "mpijobs",
        lambda image, _: _mpi(image),
        "/spec/mpiReplicaSpecs/Launcher/template/spec/containers/0/image",
        'container "launcher"',
    ),
    WorkloadKind(
        "MPIJob (MPI Operator, v2beta1)",
        "kubeflow.org/v2beta1",
        "MPIJob",
        "mpijobs",
        lambda image, _: _mpi(image),
        "/spec/mpiReplicaSpecs/Launcher/template/spec/containers/0/image",
        'container "launcher"',
    ),
    WorkloadKind(
        "TrainJob (trainer image)",
        "trainer.kubeflow.org/v1alpha1",
        "TrainJob",
        "trainjobs",
        lambda image, _: {
            "spec": {
                "runtimeRef": {"name": "torch-distributed"},
                "trainer": {
                    "image": image,
                    "numNodes": 2,
                    "env": [{"name": "EPOCHS", "value": "1"}],
                    "resourcesPerNode": {"limits": {"cpu": "1"}},
                },
            }
        },
        "/spec/trainer/image",
        'container "trainer"',
    ),
    WorkloadKind(
        "TrainJob (runtime patch)",
        "trainer.kubeflow.org/v1alpha1",
        "TrainJob",
        "trainjobs",
        lambda image, _: {
            "spec": {
                "runtimeRef": {"name": "torch-distributed"},
                "runtimePatches": [_runtime_patch(image)],
            }
        },
        f"{_RUNTIME_PATCH}/volumes/0/image/reference",
        'image volume "weights"',
    ),
    WorkloadKind(
        "TrainingRuntime",
        "trainer.kubeflow.org/v1alpha1",
        "TrainingRuntime",
        "trainingruntimes",
        lambda image, _: {
            "spec": {
                "template": {"spec": {"replicatedJobs": _jobset_jobs(image)}},
            }
        },
        "/spec/template/spec/replicatedJobs/0/template/spec/template/spec/containers/0/image",
        'container "node"',
    ),
    WorkloadKind(
        "RayCluster",
        "ray.io/v1",
        "RayCluster",
        "rayclusters",
        lambda image, _: {"spec": _ray_cluster(image)},
        "/spec/headGroupSpec/template/spec/containers/0/image",
        'container "ray-head"',
    ),
    WorkloadKind(
        "RayCluster (autoscaler image)",
        "ray.io/v1",
        "RayCluster",
        "rayclusters",
        lambda image, filler: {
            "spec": {
                **_ray_cluster(filler),
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {"image": image},
            }
        },
        "/spec/autoscalerOptions/image",
        'container "autoscaler"',
    ),
    WorkloadKind(
        "RayJob",
        "ray.io/v1",
        "RayJob",
        "rayjobs",
        lambda image, _: {
            "spec": {"entrypoint": "python -c 0", "rayClusterSpec": _ray_cluster(image)}
        },
        "/spec/rayClusterSpec/headGroupSpec/template/spec/containers/0/image",
        'container "ray-head"',
    ),
    WorkloadKind(
        "RayJob (submitter pod)",
        "ray.io/v1",
        "RayJob",
        "rayjobs",
        lambda image, _: {
            "spec": {
                "entrypoint": "python -c 0",
                "clusterSelector": {"ray.io/cluster": "shared"},
                "submitterPodTemplate": _template(image, "submitter", restartPolicy="Never"),
            }
        },
        "/spec/submitterPodTemplate/spec/containers/0/image",
        'container "submitter"',
    ),
    WorkloadKind(
        "JobSet",
        "jobset.x-k8s.io/v1alpha2",
        "JobSet",
        "jobsets",
        lambda image, _: {"spec": {"suspend": True, "replicatedJobs": _jobset_jobs(image)}},
        "/spec/replicatedJobs/0/template/spec/template/spec/containers/0/image",
        'container "node"',
    ),
)


def resolve(obj: Any, pointer: str) -> Any:
    """The value at a JSON pointer (RFC 6901)."""
    for part in pointer.lstrip("/").split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        obj = obj[int(key)] if isinstance(obj, list) else obj[key]
    return obj


# A cluster runs one MPIJob CRD: Training Operator's (kubeflow.org/v1) or MPI Operator's
# (kubeflow.org/v2beta1). The tests install one serving both, each version with its own
# upstream schema, so that both are proven; MPI Operator's version is stored.
_STORED_FIRST = "kubeflow-mpi-operator-"


@functools.cache
def crd_definitions() -> tuple[dict[str, Any], ...]:
    """The upstream CRDs, one per name (MPIJob's two versions merged, as said above)."""
    by_name: dict[str, dict[str, Any]] = {}
    sources = sorted(
        CRDS.glob("*/*.yaml"), key=lambda p: (not p.parent.name.startswith(_STORED_FIRST), p)
    )
    for path in sources:
        for document in yaml.load_all(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader):
            if not document:
                continue
            name = document["metadata"]["name"]
            if name not in by_name:
                by_name[name] = document
                continue
            merged = by_name[name]
            for version in document["spec"]["versions"]:
                merged["spec"]["versions"].append({**version, "storage": False})
    return tuple(by_name[name] for name in sorted(by_name))


def _established(body: Mapping[str, Any]) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def install_crds(plane: controlplane.ControlPlane, timeout: float = 60.0) -> None:
    """Create (or replace) every upstream CRD and wait until all are served. Responses are
    read as raw JSON: the client's models would take seconds on schemas this large."""
    with kubeclients.admin(plane) as api:
        extensions: Any = client.ApiextensionsV1Api(api)
        names = []
        for definition in crd_definitions():
            name = definition["metadata"]["name"]
            names.append(name)
            try:
                extensions.create_custom_resource_definition(definition, _preload_content=False)
            except client.ApiException as error:
                if error.status != 409:
                    raise
                current = json.loads(
                    extensions.read_custom_resource_definition(name, _preload_content=False).data
                )
                body = copy.deepcopy(definition)
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                extensions.replace_custom_resource_definition(name, body, _preload_content=False)
        deadline = time.monotonic() + timeout
        waiting = list(names)
        while waiting:
            waiting = [
                name
                for name in waiting
                if not _established(
                    json.loads(
                        extensions.read_custom_resource_definition(
                            name, _preload_content=False
                        ).data
                    )
                )
            ]
            if waiting and time.monotonic() > deadline:
                raise TimeoutError(f"CRDs not established within {timeout}s: {waiting}")
            if waiting:
                time.sleep(0.2)


def downloading_trainjob(name: str, initializer: str, uri: str) -> dict[str, Any]:
    """A Kubeflow Trainer TrainJob on the torch-distributed runtime whose ``initializer``
    ("dataset" or "model") downloads ``uri``."""
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": name},
        "spec": {
            "runtimeRef": {"name": "torch-distributed"},
            "initializer": {initializer: {"storageUri": uri}},
        },
    }


def create_trainjob(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> Any:
    custom: Any = client.CustomObjectsApi(api)
    return custom.create_namespaced_custom_object(
        "trainer.kubeflow.org", "v1alpha1", namespace, "trainjobs", body
    )
