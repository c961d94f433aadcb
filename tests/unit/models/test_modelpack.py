"""ModelPack (CNCF model-spec) manifests and configs read into a Model's status.modelPack."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jsonschema
import pytest

from muster.models.rules import modelpack
from tests import paths

pytestmark = pytest.mark.unit

EXAMPLE = paths.fixture("models", "modelpack", "config-example.json").read_bytes()
SCHEMA = json.loads(paths.fixture("models", "modelpack", "config-schema.json").read_text())


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest(config: bytes = EXAMPLE, layers: int = 2, **extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.cncf.model.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.cncf.model.config.v1+json",
            "digest": _digest(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.cncf.model.weight.v1.raw",
                "digest": _digest(str(n).encode()),
                "size": n,
                "annotations": {"org.opencontainers.image.title": f"model-{n}.safetensors"},
            }
            for n in range(layers)
        ],
        **extra,
    }


def test_the_specs_own_example_config_is_read_and_listed_with_its_layers() -> None:
    jsonschema.validate(json.loads(EXAMPLE), SCHEMA)  # the fixture is the spec's, valid
    body = manifest()
    body["layers"].append(
        {
            "mediaType": "application/vnd.cncf.model.doc.v1.tar",
            "digest": _digest(b"doc"),
            "size": 3,
            "annotations": {"org.cncf.model.filepath": "README.md"},
        }
    )
    status = modelpack.status(body, EXAMPLE)
    assert status["artifactType"] == modelpack.ARTIFACT_TYPE
    assert status["configDigest"] == _digest(EXAMPLE)
    assert status["config"]["descriptor"]["name"] == "xyz-3-8B-Instruct"
    assert status["config"]["descriptor"]["licenses"] == ["Apache-2.0"]
    assert status["config"]["config"]["paramSize"] == "8b"
    assert status["configReduced"] is False
    assert [(layer["title"], layer["size"]) for layer in status["layers"]] == [
        ("model-0.safetensors", 0),
        ("model-1.safetensors", 1),
        ("README.md", 3),
    ]
    assert status["layerCount"] == 3


def test_layer_media_types_are_the_specs() -> None:
    assert modelpack.layer_kind("application/vnd.cncf.model.weight.v1.raw") == ("weight", "raw")
    assert modelpack.layer_kind("application/vnd.cncf.model.weight.config.v1.tar+zstd") == (
        "weight.config",
        "tar+zstd",
    )
    assert modelpack.layer_kind("application/vnd.cncf.model.doc.v1.tar+gzip") == ("doc", "tar+gzip")
    assert modelpack.layer_kind("application/vnd.oci.image.layer.v1.tar") is None


def test_recognised_by_artifact_type_or_config_media_type_only() -> None:
    assert modelpack.is_modelpack(manifest())
    older = manifest()
    del older["artifactType"]
    assert modelpack.is_modelpack(older)
    image = manifest()
    del image["artifactType"]
    image["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json"
    assert not modelpack.is_modelpack(image)
    with pytest.raises(modelpack.ModelPackError, match="not a ModelPack artifact"):
        modelpack.status(image, EXAMPLE)


def test_a_large_config_and_many_layers_are_bounded() -> None:
    config = json.loads(EXAMPLE)
    config["modelfs"]["diffIds"] = ["sha256:" + f"{n:064x}" for n in range(400)]
    raw = json.dumps(config).encode()
    status = modelpack.status(manifest(raw, layers=250), raw)
    assert status["configReduced"] is True
    assert status["config"]["modelfs"] == {"type": "layers", "diffIdCount": 400}
    assert status["config"]["descriptor"]["name"] == "xyz-3-8B-Instruct"
    assert len(status["layers"]) == modelpack.MAX_LAYERS
    assert status["layerCount"] == 250
    config["descriptor"]["description"] = "x" * 20_000
    raw = json.dumps(config).encode()
    assert modelpack.status(manifest(raw), raw)["config"] is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda c: c.pop("modelfs"), "no modelfs object"),
        (lambda c: c["modelfs"].update(type="tar"), "model-spec requires 'layers'"),
        (lambda c: c["modelfs"].update(diffIds=["md5:x"]), "diffIds must be a list"),
    ],
)
def test_an_invalid_config_says_what_is_wrong(change: Any, words: str) -> None:
    config = json.loads(EXAMPLE)
    change(config)
    raw = json.dumps(config).encode()
    with pytest.raises(modelpack.ModelPackError, match=words):
        modelpack.status(manifest(raw), raw)
    with pytest.raises(modelpack.ModelPackError, match="not JSON"):
        modelpack.parse_config(b"{")
