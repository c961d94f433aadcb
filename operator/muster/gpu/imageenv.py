"""An image's environment, read from its config through the registry client.

``NVIDIA_REQUIRE_CUDA``, ``CUDA_VERSION``, ``LD_PRELOAD``, ``NVIDIA_DISABLE_REQUIRE`` and
``NVIDIA_VISIBLE_DEVICES`` travel in the image config's ``Env``: manifest -> config blob ->
``config.Env``. GPU pods' images are read, and where a GPUStackPolicy applies, the images of
containers that request no GPU too (does the image hand them GPUs?). For a multi-arch index the
``linux/amd64`` image is read (the platform GPU nodes run). Content is digest-addressed, so a
digest's answer is kept; a tag's answer is kept briefly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from muster.gpu.rules import cuda
from muster.kernel import references
from muster.platform import registries, statechanges

__all__ = ["ImageEnvError", "ImageEnvReader"]

_INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
_PLATFORM = ("linux", "amd64")
_TAG_TTL_SECONDS = 60.0
_MAX_ENTRIES = 1024


class ImageEnvError(Exception):
    """The image's environment could not be read; the message names the image and why."""


def _pick_platform(index: Mapping[str, Any], image: str) -> str:
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise ImageEnvError(f"image {image}: index has no manifests")
    for entry in manifests:
        if not isinstance(entry, Mapping):
            continue
        platform = entry.get("platform")
        if (
            isinstance(platform, Mapping)
            and (platform.get("os"), platform.get("architecture")) == _PLATFORM
            and isinstance(entry.get("digest"), str)
        ):
            return str(entry["digest"])
    raise ImageEnvError(f"image {image}: index has no linux/amd64 image")


class ImageEnvReader:
    """``await reader.env("registry/repo:tag")`` -> the config's environment as a map."""

    def __init__(self, client: registries.RegistryClient) -> None:
        self._client = client
        self._cache: dict[str, tuple[float, dict[str, str]]] = {}
        # Told about every cache look-up (True: hit), e.g. ``Metrics.cache_lookup``.
        self.cache_observer: Callable[[bool], None] | None = None

    async def env(self, image: str) -> dict[str, str]:
        try:
            reference = references.parse(image)
        except references.InvalidReference as error:
            raise ImageEnvError(f"image {image!r} is not a valid reference: {error}") from error
        key = str(reference)
        cached = self._cache.get(key)
        hit = cached is not None and (reference.pinned or cached[0] > time.monotonic())
        if self.cache_observer is not None:
            self.cache_observer(hit)
        if cached is not None and hit:
            return dict(cached[1])
        try:
            env = await self._read(reference, image)
        except registries.RegistryError as error:
            raise ImageEnvError(f"cannot read image {image}: {error}") from error
        if len(self._cache) >= _MAX_ENTRIES:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (time.monotonic() + _TAG_TTL_SECONDS, env)
        statechanges.changed()  # the GPU gate reads it (admission/verdicts.py)
        return dict(env)

    async def _read(self, reference: references.ImageReference, image: str) -> dict[str, str]:
        name = reference.digest or reference.tag or references.DEFAULT_TAG
        manifest = await self._client.manifest(reference.registry, reference.repository, name)
        document = manifest.json()
        if manifest.media_type in _INDEX_TYPES or "manifests" in document:
            digest = _pick_platform(document, image)
            manifest = await self._client.manifest(reference.registry, reference.repository, digest)
            document = manifest.json()
        config = document.get("config")
        if not isinstance(config, Mapping) or not isinstance(config.get("digest"), str):
            raise ImageEnvError(f"image {image}: manifest has no config")
        raw = await self._client.blob(reference.registry, reference.repository, config["digest"])
        try:
            parsed = json.loads(raw)
        except ValueError as error:
            raise ImageEnvError(f"image {image}: config is not JSON") from error
        inner = parsed.get("config") if isinstance(parsed, Mapping) else None
        env = inner.get("Env") if isinstance(inner, Mapping) else None
        if env is None:
            return {}
        if not isinstance(env, list) or not all(isinstance(item, str) for item in env):
            raise ImageEnvError(f"image {image}: config.Env is not a list of strings")
        try:
            return cuda.env_from_list(env)
        except cuda.GrammarError as error:
            raise ImageEnvError(f"image {image}: {error}") from error
