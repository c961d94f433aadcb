"""Which downloads of a Kubeflow Trainer TrainJob a pod reads, and where: pure.

Kubeflow Trainer v2 (trainer.kubeflow.org/v1alpha1) runs a TrainJob as a JobSet of the same
name. Its runtime's ``dataset-initializer`` and ``model-initializer`` replicated jobs download
``spec.initializer.{dataset,model}.storageUri`` into ``/workspace/dataset`` and
``/workspace/model`` of a volume they mount at ``/workspace`` (the runtimes' PVC
``initializer``); the ``node`` replicated job runs after both complete and mounts the same
volume at ``/workspace`` (pkg/initializers/utils/utils.py DATASET_PATH and MODEL_PATH,
pkg/constants DatasetMountPath and ModelMountPath, manifests/base/runtimes).

A pod names its TrainJob through the label ``jobset.sigs.k8s.io/jobset-name``: the JobSet
controller writes it on every Job and pod template it makes, over whatever the template says,
so every pod of a genuine TrainJob carries it. A tenant can put it on any pod; that only
names a TrainJob whose downloads the pod is then made to re-measure: verification is added to
a pod, never taken from it (the gates judge every other volume of such a pod as before).
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Mapping
from typing import Any, Literal

from muster.kernel import podvolumes, sources, subjects

__all__ = [
    "DOWNLOAD_PATHS",
    "INITIALIZERS",
    "JOBSET_NAME_LABEL",
    "Download",
    "downloads",
    "trainjob_name",
]

JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
# A TrainJob's name (a DNS label, as JobSet requires of its own name). Mutating webhooks see
# labels before the apiserver validates them: anything else is never put into a request path.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
Part = Literal["dataset", "model"]
# Where each initializer writes (Trainer's DatasetMountPath / ModelMountPath).
DOWNLOAD_PATHS: Mapping[Part, str] = {"dataset": "/workspace/dataset", "model": "/workspace/model"}
# The container that does each download (Trainer names the Job, container and label so, and
# its JobSet builder sets the container's STORAGE_URI to the TrainJob's storageUri). A pod
# running one is a download step: the dataset and model initializers run side by side, so such
# a pod reads neither download, both still being written.
INITIALIZERS: Mapping[Part, str] = {"dataset": "dataset-initializer", "model": "model-initializer"}


@dataclasses.dataclass(frozen=True, slots=True)
class Download:
    """One initializer download a pod reads: ``uri`` fetched into ``sub_path`` of ``volume``
    (``""``: the whole volume), which the pod's containers mount at ``path``."""

    part: Part
    trainjob: str
    uri: str
    volume: str
    sub_path: str

    @property
    def label(self) -> str:
        return f'{self.part} download {self.uri!r} of TrainJob "{self.trainjob}"'


def trainjob_name(metadata: Mapping[str, Any]) -> str | None:
    """The TrainJob a pod says it belongs to (its JobSet, named after the TrainJob)."""
    labels = metadata.get("labels")
    name = labels.get(JOBSET_NAME_LABEL) if isinstance(labels, Mapping) else None
    return name if isinstance(name, str) and _NAME.fullmatch(name) else None


def _within(path: str, mount: str) -> str | None:
    """``path`` relative to ``mount`` when it is the mount or below it (None: outside)."""
    path, mount = posixpath.normpath(path), posixpath.normpath(mount)
    if path == mount:
        return ""
    if mount == "/":
        return path.lstrip("/")
    return path[len(mount) + 1 :] if path.startswith(mount + "/") else None


def _reader(spec: Mapping[str, Any], target: str) -> set[tuple[str, str]]:
    """(volume, sub-path) of every app container mount under which ``target`` lies: the
    deepest mount of each container decides, as in the container's filesystem."""
    found: set[tuple[str, str]] = set()
    containers = spec.get("containers")
    for container in containers if isinstance(containers, list) else ():
        if not isinstance(container, Mapping):
            continue
        best: tuple[int, str, str] | None = None
        mounts = container.get("volumeMounts")
        for mount in mounts if isinstance(mounts, list) else ():
            if not isinstance(mount, Mapping):
                continue
            name, where = mount.get("name"), mount.get("mountPath")
            if not isinstance(name, str) or not isinstance(where, str) or not where:
                continue
            rest = _within(target, where)
            if rest is None:
                continue
            depth = len(posixpath.normpath(where))
            if best is None or depth > best[0]:
                base = mount.get("subPath")
                base = base.strip("/") if isinstance(base, str) else ""
                best = (depth, name, posixpath.join(base, rest).strip("/") if base else rest)
        if best is not None:
            found.add((best[1], best[2]))
    return found


def _downloading(template: subjects.PodTemplate, uris: Mapping[str, str]) -> bool:
    """Whether the pod is an initializer of this TrainJob: a container named as Trainer names
    it, downloading the TrainJob's very URI. A container merely named so (with another URI or
    none) does not exempt its pod: a pod gets out of re-measuring only by doing the download."""
    for container in podvolumes.containers(template.spec):
        for part, name in INITIALIZERS.items():
            if container.get("name") != name or part not in uris:
                continue
            env = container.get("env")
            for variable in env if isinstance(env, list) else ():
                if (
                    isinstance(variable, Mapping)
                    and variable.get("name") == "STORAGE_URI"
                    and variable.get("value") == uris[part]
                ):
                    return True
    return False


def downloads(
    trainjob: str, obj: Mapping[str, Any], template: subjects.PodTemplate
) -> list[Download]:
    """The initializer downloads of TrainJob ``obj`` that the pod ``template`` reads, each with
    the volume and sub-path its containers find it at. Only downloaded schemes count (an
    ``oci://``/``pvc://`` source is content-addressed or judged as a volume); a pod that runs an
    initializer of this TrainJob reads nothing yet; a pod that mounts nothing at a download path
    does not read it."""
    uris = sources.trainer_initializer_uris(obj)
    if _downloading(template, uris):
        return []
    volumes = {v["name"] for v in podvolumes.volumes(template.spec)}
    found: list[Download] = []
    for part in ("dataset", "model"):
        uri = uris.get(part)
        if uri is None:
            continue
        scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
        if scheme not in sources.DOWNLOADED:
            continue
        for volume, sub_path in sorted(_reader(template.spec, DOWNLOAD_PATHS[part])):
            if volume in volumes:
                found.append(Download(part, trainjob, uri, volume, sub_path))
    return found
