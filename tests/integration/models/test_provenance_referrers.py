"""Model provenance attached to the Model's OCI artifact: a bundle over the OMS digest, made by
the real cosign (attest-blob), attached as an OCI referrer of the artifact; found through the
referrers API and through its tag fallback, on both test registries."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from muster.models import files as modelfiles
from muster.models import provenancing
from muster.models.rules import registry as modelregistry
from muster.platform import objectstore, registries
from tests import attesting, peers
from tests import modelprovenance as making

pytestmark = pytest.mark.integration


def _verify(registry: peers.Registry, spec: dict[str, Any]) -> provenancing.Outcome:
    async def run() -> provenancing.Outcome:
        client = registries.RegistryClient(
            registries.RegistrySettings(insecure_registries=frozenset({registry.host}))
        )
        try:
            read = provenancing.reader(objectstore.ObjectStore())
            return await provenancing.verify(
                modelregistry.ModelSpec.model_validate(spec), read, client
            )
        finally:
            await client.close()

    return asyncio.run(run())


@pytest.fixture(params=["referrers API", "tag fallback"])
def a_registry(
    request: pytest.FixtureRequest,
    registry: peers.Registry,
    referrers_registry: peers.Registry,
) -> peers.Registry:
    return referrers_registry if request.param == "referrers API" else registry


def test_provenance_is_found_among_the_oci_artifacts_referrers(
    a_registry: peers.Registry, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\x07" * 1024)
    digest = modelfiles.measure(model).digest
    key, public = attesting.generate_key(tmp_path, "ci")
    repository = f"models/attested-{tmp_path.name[-6:].lower()}"
    artifact = peers.push_image(
        a_registry, repository, "v1",
        files={"model/model.safetensors": (model / "model.safetensors").read_bytes()},
        workdir=tmp_path,
    )  # fmt: skip
    spec = {
        "digest": digest,
        "ociReference": f"{a_registry.host}/{repository}@{artifact}",
        "provenance": {
            "authorities": [{"name": "ci", "key": {"data": public.read_text()}}],
            "conditions": [{"expression": "predicate.runDetails.builder.id.contains('acme')"}],
        },
    }
    verified, reason, message = _verify(a_registry, spec)
    assert (verified, reason) == (None, "ProvenanceNotVerified")
    assert f"no provenance bundle found among the OCI referrers of {spec['ociReference']}" in (
        message
    )
    # A bundle about other bytes, attached to this artifact, proves nothing about the model.
    making.attach(
        a_registry, repository, artifact, making.attest(key, "sha256:" + "0c" * 32, tmp_path)
    )
    verified, reason, message = _verify(a_registry, spec)
    assert verified is None, message
    assert "statement has no subject with digest " + digest in message
    making.attach(a_registry, repository, artifact, making.attest(key, digest, tmp_path))
    verified, reason, message = _verify(a_registry, spec)
    assert verified is not None, message
    assert (reason, verified.builder, verified.digest) == ("Verified", making.BUILDER, digest)
