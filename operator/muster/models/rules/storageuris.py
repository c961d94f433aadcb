"""Models a pod downloads rather than mounts: ``hf://``, ``s3://``, ``gs://`` and ``http(s)://``
storage URIs (:data:`muster.kernel.sources.DOWNLOADED`).

KServe names the URI three ways on the pod it makes: the ``STORAGE_URI`` env of a container,
a ``*storage-uri`` / ``*sourceuri`` annotation (``serving.kserve.io/storage-uri``, its internal
``internal.serving.kserve.io/storage-initializer-sourceuri``), and the arguments of the
``storage-initializer`` init container (``[uri, dest, uri, dest, ...]``), which downloads it into a
volume (``kserve-provision-location`` at ``/mnt/models``) before the server starts. All three
name one download: uses are merged by canonical URI. The bytes cannot be seen at admission, so
the gate re-measures that volume with the verifier init container right after the initializer;
without an initializer writing the whole of a volume there is nothing the verifier can wait for,
and the pod is refused.

Kubeflow Trainer's initializers read ``STORAGE_URI`` too: the ``model-initializer`` container is
the download itself (judged, nothing to wait for), the ``dataset-initializer``'s URI is the
dataset gate's, never a model.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

from muster.kernel import sources
from muster.models.rules import registry as modelregistry

__all__ = [
    "DATASET_INITIALIZER",
    "KSERVE_MOUNT",
    "MODEL_INITIALIZER",
    "STORAGE_INITIALIZER",
    "SourceRef",
    "approved",
    "source_refs",
]

STORAGE_INITIALIZER = "storage-initializer"  # KServe's init container that downloads models
KSERVE_MOUNT = "/mnt/models"  # where KServe's storage-initializer writes by default
# Kubeflow Trainer's initializer containers (and replicated jobs) are named so by its runtimes.
MODEL_INITIALIZER = "model-initializer"
DATASET_INITIALIZER = "dataset-initializer"
_URI_ANNOTATION_SUFFIXES = ("storage-uri", "storageuri", "sourceuri")


@dataclasses.dataclass(frozen=True, slots=True)
class SourceRef:
    """One downloaded model: the URI as written, where it was found, and the volume the
    initializer writes it to (None: no initializer writes a whole volume in this pod)."""

    uri: str
    where: str
    volume: str | None
    # The container that downloads it (a Trainer model-initializer): nothing runs before it.
    fetcher: bool = False


def _downloaded(value: object) -> bool:
    if not isinstance(value, str) or "://" not in value:
        return False
    return value.split("://", 1)[0].strip().lower() in sources.DOWNLOADED


def _key(uri: str) -> str:
    try:
        return sources.parse(uri).text
    except sources.SourceError:
        return uri.strip()  # judged (and refused) as written


def _mount_at(container: Mapping[str, Any], path: str) -> str | None:
    """The volume mounted whole (no subPath) exactly at ``path``. A download into a directory
    below a mount fills part of a volume: the verifier re-measures whole volumes only, so such a
    download has no volume to be checked in."""
    mounts = container.get("volumeMounts")
    for mount in mounts if isinstance(mounts, list) else ():
        if (
            isinstance(mount, Mapping)
            and isinstance(mount.get("mountPath"), str)
            and isinstance(mount.get("name"), str)
            and not mount.get("subPath")
            and not mount.get("subPathExpr")
            and posixpath.normpath(mount["mountPath"]) == posixpath.normpath(path)
        ):
            return str(mount["name"])
    return None


def _initializer_targets(container: Mapping[str, Any]) -> dict[str, str | None]:
    """KServe storage-initializer ``args`` (uri, dest pairs) -> the volume mounted at dest."""
    args = container.get("args")
    items = [a for a in args if isinstance(a, str)] if isinstance(args, list) else []
    targets: dict[str, str | None] = {}
    for position in range(0, len(items), 2):
        uri = items[position]
        if _downloaded(uri):
            dest = items[position + 1] if position + 1 < len(items) else KSERVE_MOUNT
            targets[_key(uri)] = _mount_at(container, dest)
    return targets


def source_refs(
    annotations: Mapping[str, Any], containers: Iterable[Mapping[str, Any]]
) -> list[SourceRef]:
    """Every downloaded model the pod template names, one per canonical URI."""
    found: dict[str, SourceRef] = {}
    listed = list(containers)
    initializers = [c for c in listed if c.get("name") == STORAGE_INITIALIZER]
    targets: dict[str, str | None] = {}
    for container in initializers:
        for key, volume in _initializer_targets(container).items():
            targets[key] = volume
            found.setdefault(key, SourceRef(key, f'container "{STORAGE_INITIALIZER}"', volume))
    # A storage-initializer without URI args reads it from the annotation and writes to
    # /mnt/models.
    default_volume = next(
        (v for v in (_mount_at(c, KSERVE_MOUNT) for c in initializers) if v is not None), None
    )

    def add(uri: str, where: str, *, fetcher: bool = False) -> None:
        key = _key(uri)
        if key not in found:
            volume = None if fetcher else targets.get(key, default_volume)
            found[key] = SourceRef(uri.strip(), where, volume, fetcher)

    for key, value in sorted(annotations.items()):
        if key.lower().endswith(_URI_ANNOTATION_SUFFIXES) and _downloaded(value):
            add(value, f"annotation {key}")
    for container in listed:
        name = str(container.get("name", "?"))
        if name in (STORAGE_INITIALIZER, DATASET_INITIALIZER):
            continue
        env = container.get("env")
        for variable in env if isinstance(env, list) else ():
            if (
                isinstance(variable, Mapping)
                and variable.get("name") == "STORAGE_URI"
                and _downloaded(variable.get("value"))
            ):
                add(
                    str(variable["value"]),
                    f'STORAGE_URI of container "{name}"',
                    fetcher=name == MODEL_INITIALIZER,
                )
    return list(found.values())


def approved(
    uri: str, models: Iterable[modelregistry.ModelEntry]
) -> list[modelregistry.ModelEntry]:
    """The Models whose ``spec.source`` is ``uri`` (kernel.sources.matches), by name."""
    return sorted(
        (m for m in models if m.spec.source and sources.matches(m.spec.source, uri)),
        key=lambda m: m.name,
    )
