"""ModelPack (CNCF model-spec) artifacts in the real test registries: pushed with their real
media types, read into a Model's status.modelPack, and, mounted as an image volume, judged by
the image gate's signature verification (cosign-signed admitted, unsigned denied) like any image."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from muster.images import gate as imagegate
from muster.kernel import gates
from muster.models import files as modelfiles
from muster.models import modelpacking
from muster.models.rules import modelpack
from muster.models.rules import registry as modelregistry
from muster.platform import controlplane, registries
from tests import kubeclients, peers
from tests.imagegates import area_with, subject, use_policies
from tests.integration.images.conftest import COSIGN_ENV, Signer, policy, sign_v2, sign_v3
from tests.modelpacks import push_modelpack, shards

pytestmark = pytest.mark.integration


@pytest.fixture(params=["referrers API", "tag fallback"])
def a_registry(
    request: pytest.FixtureRequest, registry: peers.Registry, referrers_registry: peers.Registry
) -> peers.Registry:
    return referrers_registry if request.param == "referrers API" else registry


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    prefix = tmp_path_factory.mktemp("modelpack-signer") / "packer"
    peers.run_tool("cosign", "generate-key-pair", f"--output-key-prefix={prefix}", env=COSIGN_ENV)
    return Signer(name="packer", private=Path(f"{prefix}.key"), public=Path(f"{prefix}.pub"))


def _client(registry: peers.Registry) -> registries.RegistryClient:
    return registries.RegistryClient(
        registries.RegistrySettings(insecure_registries=frozenset({registry.host}))
    )


async def test_a_modelpack_artifact_is_read_into_the_models_status(
    a_registry: peers.Registry, tmp_path: Path
) -> None:
    repository = f"models/pack-{uuid.uuid4().hex[:8]}"
    pushed = push_modelpack(a_registry, repository, "v1", shards(), name="tiny-shards")
    spec = modelregistry.ModelSpec.model_validate(
        {"digest": modelfiles.measure(shards()).digest, "ociReference": pushed.reference}
    )
    client = _client(a_registry)
    try:
        status = await modelpacking.status_of(spec, client)
        plain = peers.push_image(a_registry, f"{repository}-image", "v1", workdir=tmp_path)
        image_spec = spec.model_copy(
            update={"oci_reference": f"{a_registry.host}/{repository}-image@{plain}"}
        )
        assert await modelpacking.status_of(image_spec, client) is None  # not a ModelPack
    finally:
        await client.close()
    assert status is not None
    assert status["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert status["configDigest"] == pushed.manifest["config"]["digest"]
    assert status["config"]["descriptor"]["name"] == "tiny-shards"
    assert status["config"]["config"]["format"] == "safetensors"
    titles = sorted(p.name for p in shards().iterdir())
    assert [layer["title"] for layer in status["layers"]] == titles
    assert status["config"]["modelfs"]["diffIds"] == [layer["digest"] for layer in status["layers"]]
    assert {layer["mediaType"] for layer in status["layers"]} == {
        "application/vnd.cncf.model.weight.v1.raw",
        "application/vnd.cncf.model.weight.config.v1.raw",
    }
    assert status["layerCount"] == len(titles) == 7
    assert status["configReduced"] is False


def _served(reference: str) -> dict[str, Any]:
    """A pod serving the model mounted as an image volume from ``reference``."""
    return {
        "kind": "Pod",
        "metadata": {"name": "served"},
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "image": "registry.example/serve@sha256:" + "ab" * 32,
                    "volumeMounts": [{"name": "weights", "mountPath": "/models"}],
                }
            ],
            "volumes": [{"name": "weights", "image": {"reference": reference}}],
        },
    }


async def test_a_modelpack_image_volume_is_admitted_signed_and_denied_unsigned(
    control_plane: controlplane.ControlPlane,
    a_registry: peers.Registry,
    signer: Signer,
    tmp_path: Path,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    signed = push_modelpack(a_registry, f"models/signed-{suffix}", "v1", shards(), name="signed")
    unsigned = push_modelpack(a_registry, f"models/unsigned-{suffix}", "v1", shards(), name="u")
    # cosign v3 writes a Sigstore bundle referrer, v2 the legacy .sig tag: both are read.
    (sign_v3 if a_registry.referrers_api else sign_v2)(signer, signed.reference)
    namespace = kubeclients.namespace(control_plane, "modelpack")
    async with area_with(control_plane, a_registry) as area:
        use_policies(area, policy(a_registry.host, signer, images="models/**"))
        gate = imagegate.ImageGate(area)
        admitted = await gate.judge(
            subject(namespace, _served(signed.reference)), gates.Phase.VALIDATE
        )
        assert [f for f in admitted.findings if f.subject == 'image volume "weights"'] == []
        denied = await gate.judge(
            subject(namespace, _served(unsigned.reference)), gates.Phase.VALIDATE
        )
    refused = [f for f in denied.findings if f.subject == 'image volume "weights"']
    assert [f.reason for f in refused] == ["ImageNotSigned"]
    assert unsigned.reference in refused[0].message
    assert f"no signature found for {unsigned.digest}" in refused[0].message
    assert modelpack.is_modelpack(unsigned.manifest)
