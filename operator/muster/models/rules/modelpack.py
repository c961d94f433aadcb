"""ModelPack artifacts (CNCF model-spec, github.com/modelpack/model-spec): an OCI image manifest
whose ``artifactType`` is ``application/vnd.cncf.model.manifest.v1+json`` and whose config blob
(``application/vnd.cncf.model.config.v1+json``) describes the model: descriptor (name, version,
licences, ...), config (format, architecture, precision, ...) and modelfs (the layers' DiffIDs).
KitOps, modctl and others push them; KServe and image volumes mount them.

Pure: the models controller fetches the manifest and config blob and writes what
:func:`status` returns to the Model's ``status.modelPack``; the AI-BOM reads it from there. Parsing
is plain JSON checks against the spec's required fields (no schema library at run time: the
config comes from a registry and is bounded and reduced before it reaches the API).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ANNOTATION_FILEPATH",
    "ANNOTATION_TITLE",
    "ARTIFACT_TYPE",
    "CONFIG_MEDIA_TYPE",
    "LAYER_MEDIA_PREFIX",
    "MAX_CONFIG_BYTES",
    "MAX_LAYERS",
    "ModelPackError",
    "config_descriptor",
    "is_modelpack",
    "layer_kind",
    "parse_config",
    "status",
]

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.config.v1+json"
LAYER_MEDIA_PREFIX = "application/vnd.cncf.model."
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_FILEPATH = "org.cncf.model.filepath"  # model-spec's own per-layer path annotation
MAX_CONFIG_BYTES = 16 * 1024  # what status.modelPack.config may hold
MAX_CONFIG_BLOB = 1 << 20  # a config blob larger than this is not read at all
MAX_LAYERS = 200

# weight, weight.config, doc, code, dataset; raw, tar, tar+gzip, tar+zstd (specs-go/v1/mediatype.go)
_LAYER = re.compile(
    r"^application/vnd\.cncf\.model\.(weight\.config|weight|doc|code|dataset)\.v1\."
    r"(raw|tar|tar\+gzip|tar\+zstd)$"
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$|^sha512:[0-9a-f]{128}$")


class ModelPackError(ValueError):
    """A manifest or config that claims to be ModelPack but is not a valid one."""


def is_modelpack(manifest: Mapping[str, Any]) -> bool:
    """Whether the manifest is a ModelPack artifact (its artifactType, or its config's
    mediaType: the spec requires both, older pushers wrote only the config's)."""
    config = manifest.get("config")
    return manifest.get("artifactType") == ARTIFACT_TYPE or (
        isinstance(config, Mapping) and config.get("mediaType") == CONFIG_MEDIA_TYPE
    )


def layer_kind(media_type: str) -> tuple[str, str] | None:
    """(kind, packing) of a model-spec layer media type, e.g. ("weight", "raw")."""
    found = _LAYER.match(media_type)
    return (found.group(1), found.group(2)) if found else None


def config_descriptor(manifest: Mapping[str, Any]) -> tuple[str, int]:
    """(digest, size) of the config blob the manifest names; ModelPackError when unusable."""
    config = manifest.get("config")
    if not isinstance(config, Mapping):
        raise ModelPackError("the manifest has no config descriptor")
    if config.get("mediaType") != CONFIG_MEDIA_TYPE:
        raise ModelPackError(
            f"the config's mediaType is {config.get('mediaType')!r}, not {CONFIG_MEDIA_TYPE}"
        )
    digest, size = config.get("digest"), config.get("size")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ModelPackError(f"the config descriptor's digest {digest!r} is not a digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ModelPackError(f"the config descriptor's size {size!r} is not a size")
    if size > MAX_CONFIG_BLOB:
        raise ModelPackError(f"the config is {size} bytes, more than {MAX_CONFIG_BLOB} are read")
    return digest, size


def parse_config(raw: bytes) -> dict[str, Any]:
    """The model config: a JSON object with the spec's required descriptor, config and modelfs
    (type "layers", diffIds a list of digests)."""
    try:
        parsed = json.loads(raw)
    except ValueError as error:
        raise ModelPackError(f"the model config is not JSON ({error})") from None
    if not isinstance(parsed, dict):
        raise ModelPackError("the model config is not a JSON object")
    for field in ("descriptor", "config", "modelfs"):
        if not isinstance(parsed.get(field), dict):
            raise ModelPackError(f"the model config has no {field} object (model-spec requires it)")
    modelfs = parsed["modelfs"]
    if modelfs.get("type") != "layers":
        raise ModelPackError(
            f"modelfs.type is {modelfs.get('type')!r}, model-spec requires 'layers'"
        )
    diff_ids = modelfs.get("diffIds")
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and _DIGEST.match(d) for d in diff_ids
    ):
        raise ModelPackError("modelfs.diffIds must be a list of sha256:<hex> digests")
    return parsed


def _bounded(config: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """The config as the status may hold it (at most MAX_CONFIG_BYTES of JSON) and whether it
    was reduced: the DiffIDs go first (the layers are listed beside it), then the whole."""

    def size(value: object) -> int:
        return len(json.dumps(value, separators=(",", ":")).encode())

    if size(config) <= MAX_CONFIG_BYTES:
        return config, False
    reduced = dict(config)
    reduced["modelfs"] = {
        "type": config["modelfs"].get("type"),
        "diffIdCount": len(config["modelfs"].get("diffIds") or ()),
    }
    if size(reduced) <= MAX_CONFIG_BYTES:
        return reduced, True
    return None, True


def _layers(manifest: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise ModelPackError("the manifest has no layers list")
    listed: list[dict[str, Any]] = []
    for position, layer in enumerate(layers):
        if not isinstance(layer, Mapping):
            raise ModelPackError(f"layer {position} is not a descriptor")
        media_type, digest, size = layer.get("mediaType"), layer.get("digest"), layer.get("size")
        if not isinstance(media_type, str) or not isinstance(digest, str):
            raise ModelPackError(f"layer {position} has no mediaType or digest")
        if not _DIGEST.match(digest):
            raise ModelPackError(f"layer {position}'s digest {digest!r} is not a digest")
        if len(listed) >= MAX_LAYERS:
            continue
        annotations = layer.get("annotations")
        annotations = annotations if isinstance(annotations, Mapping) else {}
        title = annotations.get(ANNOTATION_TITLE) or annotations.get(ANNOTATION_FILEPATH)
        listed.append(
            {
                "mediaType": media_type,
                "digest": digest,
                "size": size if isinstance(size, int) and not isinstance(size, bool) else None,
                "title": title if isinstance(title, str) else None,
            }
        )
    return listed, len(layers)


def status(manifest: Mapping[str, Any], config_raw: bytes) -> dict[str, Any]:
    """``status.modelPack`` of a Model whose ociReference is this ModelPack artifact:
    artifactType, configDigest, config (bounded), layers (at most MAX_LAYERS) and layerCount.
    ``config_raw`` must already be checked against the config descriptor's digest."""
    if not is_modelpack(manifest):
        raise ModelPackError("not a ModelPack artifact (artifactType / config mediaType)")
    digest, _ = config_descriptor(manifest)
    config, reduced = _bounded(parse_config(config_raw))
    layers, count = _layers(manifest)
    return {
        "artifactType": manifest.get("artifactType") or ARTIFACT_TYPE,
        "configDigest": digest,
        "config": config,
        "configReduced": reduced,
        "layers": layers,
        "layerCount": count,
    }
