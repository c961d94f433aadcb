"""What the gates that mark volumes share: a pod spec's volumes, containers and PVC claims, the
``{"volume": "name"}`` annotations that declare what a volume holds, and the JSON patch that
adds init containers and metadata entries to a pod template.

Models and Datasets are both found in volumes and both re-measured by an init container, so
their gates read pods and write patches through these functions. Each gate's patch is written
against the object as it arrived; :func:`muster.kernel.jsonpatches.combine` makes the patches
of several gates one (two gates adding ``/metadata/annotations`` do not clobber each other).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from muster.kernel import subjects

__all__ = [
    "containers",
    "declared_volumes",
    "init_container_ops",
    "metadata_ops",
    "pvc_claims",
    "volumes",
]


def volumes(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The pod spec's volumes that have a name (others are the apiserver's to refuse)."""
    items = spec.get("volumes")
    if not isinstance(items, list):
        return []
    return [v for v in items if isinstance(v, Mapping) and isinstance(v.get("name"), str)]


def containers(spec: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """Init containers, then containers."""
    for field in ("initContainers", "containers"):
        items = spec.get(field)
        if isinstance(items, list):
            yield from (c for c in items if isinstance(c, Mapping))


def pvc_claims(template: subjects.PodTemplate) -> dict[str, str]:
    """Volume name -> claim name for every PVC volume of the template."""
    claims: dict[str, str] = {}
    for volume in volumes(template.spec):
        source = volume.get("persistentVolumeClaim")
        if isinstance(source, Mapping) and isinstance(source.get("claimName"), str):
            claims[volume["name"]] = source["claimName"]
    return claims


def declared_volumes(raw: object, *, kind: str, example: str) -> tuple[dict[str, str], str | None]:
    """A ``{"volume": "<kind> name"}`` annotation's value, or why it is not one (the message
    of the gate's finding: ``kind`` names what the values are, ``example`` shows one)."""
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else None
    except ValueError as error:
        return {}, f"is not JSON ({error})"
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in parsed.items()
    ):
        return {}, f"must be a JSON object of volume name to {kind} name, e.g. {example}"
    return dict(parsed), None


def _get(container: object, field: str) -> object:
    return container.get(field) if isinstance(container, Mapping) else None


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def init_container_ops(
    template: subjects.PodTemplate,
    wanted: Sequence[Mapping[str, Any]],
    *,
    compare: Sequence[str],
    after: str | None = None,
) -> list[dict[str, Any]]:
    """JSON patch ops that give the template the ``wanted`` init containers: a container of
    the same name already there is replaced when it differs in a ``compare`` field (a
    verifier written earlier is brought up to date, never duplicated); the others are inserted
    right after the init container named ``after`` when there is one, otherwise first."""
    operations: list[dict[str, Any]] = []
    spec_pointer = template.pointer
    existing = template.spec.get("initContainers")
    present = existing if isinstance(existing, list) else []
    names = [_get(c, "name") for c in present]
    position = names.index(after) + 1 if after is not None and after in names else 0
    for index, container in enumerate(present):
        want = next((c for c in wanted if c["name"] == _get(container, "name")), None)
        if want is not None and any(_get(container, field) != want[field] for field in compare):
            operations.append(
                {"op": "replace", "path": f"{spec_pointer}/initContainers/{index}", "value": want}
            )
    new = [dict(c) for c in wanted if c["name"] not in names]
    if not new:
        return operations
    if not isinstance(existing, list):
        operations.append({"op": "add", "path": f"{spec_pointer}/initContainers", "value": new})
        return operations
    for offset, container in enumerate(new):
        operations.append(
            {
                "op": "add",
                "path": f"{spec_pointer}/initContainers/{position + offset}",
                "value": container,
            }
        )
    return operations


def metadata_ops(
    template: subjects.PodTemplate, entries: Mapping[str, Mapping[str, str]]
) -> list[dict[str, Any]]:
    """JSON patch ops that set ``entries`` (``{"annotations": {key: value}, "labels": ...}``)
    in the template's metadata, creating the metadata and its maps where they are missing."""
    operations: list[dict[str, Any]] = []
    meta_pointer = template.pointer[: -len("/spec")] + "/metadata"
    metadata: Mapping[str, Any] = template.metadata
    for field, items in entries.items():
        for key, item in items.items():
            current = metadata.get(field) if isinstance(metadata, Mapping) else None
            if not isinstance(metadata, Mapping) or not metadata:
                operations.append(
                    {"op": "add", "path": meta_pointer, "value": {field: {key: item}}}
                )
                metadata = {field: {key: item}}
            elif not isinstance(current, Mapping):
                operations.append(
                    {"op": "add", "path": f"{meta_pointer}/{field}", "value": {key: item}}
                )
                metadata = {**metadata, field: {key: item}}
            else:
                operations.append(
                    {"op": "add", "path": f"{meta_pointer}/{field}/{_escape(key)}", "value": item}
                )
    return operations
