"""Where a Pod names container images: containers, init and ephemeral containers, image volumes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, Literal

__all__ = ["ImageUse", "image_uses"]

UseKind = Literal["container", "initContainer", "ephemeralContainer", "imageVolume"]

_CONTAINER_LISTS: tuple[tuple[str, UseKind], ...] = (
    ("initContainers", "initContainer"),
    ("containers", "container"),
    ("ephemeralContainers", "ephemeralContainer"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class ImageUse:
    """One place in a pod spec that names an image, with the JSON pointer to patch it."""

    kind: UseKind
    name: str
    image: object  # as written by the user: validated by the rules, not here
    pointer: str

    @property
    def label(self) -> str:
        """Human name used in messages, e.g. ``container "trainer"``."""
        readable = {
            "container": "container",
            "initContainer": "init container",
            "ephemeralContainer": "ephemeral container",
            "imageVolume": "image volume",
        }[self.kind]
        return f'{readable} "{self.name}"'


def image_uses(pod_spec: Mapping[str, Any], *, pointer: str = "/spec") -> Iterator[ImageUse]:
    """Yield every image a pod spec uses, in a stable order; tolerate missing or odd fields."""
    for field, kind in _CONTAINER_LISTS:
        containers = pod_spec.get(field) or []
        if not isinstance(containers, list):
            continue
        for index, container in enumerate(containers):
            if not isinstance(container, Mapping):
                continue
            name = container.get("name")
            yield ImageUse(
                kind=kind,
                name=name if isinstance(name, str) else f"#{index}",
                image=container.get("image"),
                pointer=f"{pointer}/{field}/{index}/image",
            )
    volumes = pod_spec.get("volumes") or []
    if isinstance(volumes, list):
        for index, volume in enumerate(volumes):
            if not isinstance(volume, Mapping) or not isinstance(volume.get("image"), Mapping):
                continue
            name = volume.get("name")
            yield ImageUse(
                kind="imageVolume",
                name=name if isinstance(name, str) else f"#{index}",
                image=volume["image"].get("reference"),
                pointer=f"{pointer}/volumes/{index}/image/reference",
            )
