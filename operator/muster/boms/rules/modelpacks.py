"""A ModelPack Model in the AI-BOM: its model-spec configuration and its layers.

The config's fields are those of the model-spec's JSON Schema (``descriptor``, ``config`` with
its ``capabilities``; camelCase, as in tests/fixtures/models/modelpack/config-schema.json).

Read from the Model's ``status.modelPack``, which the models controller writes from the OCI
artifact's config (``application/vnd.cncf.model.config.v1+json``, bounded to 16 KiB) and manifest
(at most 200 layers). The config comes from a registry: only scalar values are taken, each cut to
:data:`MAX_VALUE_CHARS`, and at most :data:`MAX_LAYERS` layers become sub-components (the rest
are counted), so one Model cannot blow the document past its size limit.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_LAYERS", "MAX_VALUE_CHARS", "ModelPackParts", "parts"]

MAX_LAYERS = 64
MAX_VALUE_CHARS = 512
PREFIX = "muster:modelpack"
_MIME = re.compile(r"^[-+a-z0-9.]+/[-+a-z0-9.]+$")
_HASHES = {"sha256": ("SHA-256", 64), "sha384": ("SHA-384", 96), "sha512": ("SHA-512", 128)}
# model-spec config fields -> property suffix (descriptor.*, config.*)
_DESCRIPTOR = (
    ("name", "name"),
    ("version", "version"),
    ("title", "title"),
    ("vendor", "vendor"),
    ("family", "family"),
    ("revision", "revision"),
    ("createdAt", "created-at"),
    ("description", "description"),
    ("docURL", "doc-url"),
    ("sourceURL", "source-url"),
)
_CONFIG = (
    ("architecture", "architecture"),
    ("format", "format"),
    ("paramSize", "param-size"),
    ("precision", "precision"),
    ("quantization", "quantization"),
)
_CAPABILITIES = (
    ("knowledgeCutoff", "knowledge-cutoff"),
    ("reasoning", "reasoning"),
    ("toolUsage", "tool-usage"),
    ("reward", "reward"),
)


@dataclasses.dataclass(frozen=True)
class ModelPackParts:
    """What the component and its model card gain from the ModelPack status."""

    properties: list[dict[str, str]]  # on the component: artifact, config digest, layer count
    card_properties: list[dict[str, str]]  # modelCard.properties: the config's fields
    parameters: dict[str, Any]  # modelCard.modelParameters additions
    layers: list[dict[str, Any]]  # sub-components


def _text(value: object) -> str | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float) and str(value):
        return str(value)[:MAX_VALUE_CHARS]
    return None


def hashes(digest: object) -> list[dict[str, str]] | None:
    """CycloneDX ``hashes`` of an OCI or OMS digest (``sha256:<hex>``); None when unreadable."""
    if not isinstance(digest, str) or ":" not in digest:
        return None
    algorithm, _, content = digest.partition(":")
    known = _HASHES.get(algorithm)
    if known is None or len(content) != known[1] or not re.fullmatch(r"[0-9a-f]+", content):
        return None
    return [{"alg": known[0], "content": content}]


def _layer(model_ref: str, layer: Mapping[str, Any]) -> dict[str, Any] | None:
    digest = layer.get("digest")
    found = hashes(digest)
    if found is None:
        return None
    component: dict[str, Any] = {
        "type": "file",
        "bom-ref": f"{model_ref}/layer:{digest}",
        "name": _text(layer.get("title")) or str(digest),
        "version": str(digest),
        "hashes": found,
    }
    properties = []
    media = layer.get("mediaType")
    if isinstance(media, str) and media:
        if _MIME.match(media):
            component["mime-type"] = media
        properties.append({"name": f"{PREFIX}:media-type", "value": media[:MAX_VALUE_CHARS]})
    size = layer.get("size")
    if isinstance(size, int) and not isinstance(size, bool):
        properties.append({"name": f"{PREFIX}:size", "value": str(size)})
    if properties:
        component["properties"] = properties
    return component


def parts(model_ref: str, model: Mapping[str, Any]) -> ModelPackParts | None:
    """The BOM parts of a Model's ``status.modelPack``; None when it has none, or when the
    status was written for an earlier spec (it describes the artifact that spec named)."""
    status = model.get("status") or {}
    generation = (model.get("metadata") or {}).get("generation")
    model_pack = status.get("modelPack")
    if not isinstance(model_pack, Mapping) or status.get("observedGeneration") != generation:
        return None
    properties: list[dict[str, str]] = []
    for key, suffix in (("artifactType", "artifact-type"), ("configDigest", "config-digest")):
        if (value := _text(model_pack.get(key))) is not None:
            properties.append({"name": f"{PREFIX}:{suffix}", "value": value})
    config = model_pack.get("config")
    config = config if isinstance(config, Mapping) else {}
    descriptor = config.get("descriptor")
    descriptor = descriptor if isinstance(descriptor, Mapping) else {}
    technical = config.get("config")
    technical = technical if isinstance(technical, Mapping) else {}
    capabilities = technical.get("capabilities")
    capabilities = capabilities if isinstance(capabilities, Mapping) else {}
    card: list[dict[str, str]] = []
    for source, fields in ((descriptor, _DESCRIPTOR), (technical, _CONFIG)):
        for key, suffix in fields:
            if (value := _text(source.get(key))) is not None:
                card.append({"name": f"{PREFIX}:{suffix}", "value": value})
    for source, key, suffix in (
        (descriptor, "licenses", "license"),
        (descriptor, "authors", "author"),
        (descriptor, "datasetsURL", "datasets-url"),
        (capabilities, "languages", "capability:language"),
    ):
        listed = source.get(key)
        for item in listed[:MAX_LAYERS] if isinstance(listed, list) else ():
            if (value := _text(item)) is not None:
                card.append({"name": f"{PREFIX}:{suffix}", "value": value})
    for key, suffix in _CAPABILITIES:
        if (value := _text(capabilities.get(key))) is not None:
            card.append({"name": f"{PREFIX}:capability:{suffix}", "value": value})
    parameters: dict[str, Any] = {}
    if (architecture := _text(technical.get("architecture"))) is not None:
        parameters["modelArchitecture"] = architecture
    if (family := _text(descriptor.get("family"))) is not None:
        parameters["architectureFamily"] = family
    for key, field in (("inputTypes", "inputs"), ("outputTypes", "outputs")):
        kinds = capabilities.get(key)
        formats = [_text(kind) for kind in kinds[:MAX_LAYERS]] if isinstance(kinds, list) else []
        if any(formats):
            parameters[field] = [{"format": kind} for kind in formats if kind]
    layers: list[dict[str, Any]] = []
    listed = model_pack.get("layers")
    listed = (
        [layer for layer in listed if isinstance(layer, Mapping)]
        if isinstance(listed, list)
        else []
    )
    seen: set[str] = set()
    for layer in listed:
        component = _layer(model_ref, layer)
        if component is None or component["bom-ref"] in seen:
            continue
        if len(layers) == MAX_LAYERS:
            break
        seen.add(component["bom-ref"])
        layers.append(component)
    # The status lists at most 200 layers and counts them all.
    count = model_pack.get("layerCount")
    total = count if isinstance(count, int) and count >= len(listed) else len(listed)
    properties.append({"name": f"{PREFIX}:layers", "value": str(total)})
    if total > len(layers):
        properties.append(
            {"name": f"{PREFIX}:layers-not-listed", "value": str(total - len(layers))}
        )
    if model_pack.get("configReduced") is True:
        # The config was too large for the status: its DiffIDs (or all of it) were left out.
        properties.append({"name": f"{PREFIX}:config-reduced", "value": "true"})
    return ModelPackParts(
        properties=properties, card_properties=card, parameters=parameters, layers=layers
    )
