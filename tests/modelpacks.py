"""ModelPack (CNCF model-spec) artifacts pushed to the test registries with their real media
types, through the OCI distribution API itself (monolithic blob uploads, then the manifest):
what KitOps and modctl push, without either tool.

The files are real safetensors shards (tests/fixtures/models/safetensors), one raw weight layer
each (``application/vnd.cncf.model.weight.v1.raw``, titled with the file's path); the config is
the spec's own example (tests/fixtures/models/modelpack) with ``modelfs.diffIds`` made true.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import urllib.request
from pathlib import Path
from typing import Any

from muster.models.rules import modelpack
from tests import paths, peers

__all__ = ["PushedModelPack", "push_modelpack", "shards"]

WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG_RAW = "application/vnd.cncf.model.weight.config.v1.raw"


def shards() -> Path:
    """A real sharded safetensors model folder (6 shards and the index)."""
    return paths.fixture("models", "safetensors", "fluxml-safetensors-jl", "sharded")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _request(method: str, url: str, data: bytes | None = None, content_type: str = "") -> Any:
    request = urllib.request.Request(url, data=data, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    return urllib.request.urlopen(request, timeout=30)  # loopback test registry


def _push_blob(registry: peers.Registry, repository: str, data: bytes) -> str:
    digest = _digest(data)
    base = f"http://{registry.host}"
    with _request("POST", f"{base}/v2/{repository}/blobs/uploads/") as started:
        location = started.headers["Location"]
    if location.startswith("/"):
        location = base + location
    separator = "&" if "?" in location else "?"
    with _request(
        "PUT", f"{location}{separator}digest={digest}", data, "application/octet-stream"
    ) as done:
        assert done.status == 201, done.status
    return digest


@dataclasses.dataclass(frozen=True)
class PushedModelPack:
    reference: str  # registry/repository@sha256:...
    digest: str
    manifest: dict[str, Any]
    config: bytes


def push_modelpack(
    registry: peers.Registry, repository: str, tag: str, model_dir: Path, *, name: str
) -> PushedModelPack:
    files = sorted(p for p in model_dir.iterdir() if p.is_file())
    layers = []
    for path in files:
        data = path.read_bytes()
        media_type = WEIGHT_RAW if path.suffix == ".safetensors" else WEIGHT_CONFIG_RAW
        layers.append(
            {
                "mediaType": media_type,
                "digest": _push_blob(registry, repository, data),
                "size": len(data),
                "annotations": {
                    modelpack.ANNOTATION_TITLE: path.name,
                    modelpack.ANNOTATION_FILEPATH: path.name,
                },
            }
        )
    config_doc = json.loads(paths.fixture("models", "modelpack", "config-example.json").read_text())
    config_doc["descriptor"]["name"] = name
    config_doc["config"]["format"] = "safetensors"
    config_doc["modelfs"]["diffIds"] = [layer["digest"] for layer in layers]
    config = json.dumps(config_doc, indent=2).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": modelpack.ARTIFACT_TYPE,
        "config": {
            "mediaType": modelpack.CONFIG_MEDIA_TYPE,
            "digest": _push_blob(registry, repository, config),
            "size": len(config),
        },
        "layers": layers,
    }
    body = json.dumps(manifest).encode()
    with _request(
        "PUT",
        f"http://{registry.host}/v2/{repository}/manifests/{tag}",
        body,
        "application/vnd.oci.image.manifest.v1+json",
    ) as response:
        assert response.status == 201, response.status
    digest = _digest(body)
    return PushedModelPack(f"{registry.host}/{repository}@{digest}", digest, manifest, config)
