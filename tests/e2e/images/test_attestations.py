"""Attestations through the real apiserver: an ImagePolicy requiring SLSA provenance whose
builder is the organisation's CI; Deployments of images attested by the real cosign v2 and v3
are admitted, others are refused at apply time saying which attestation, condition and value."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from muster.platform import controlplane
from tests import attesting, kubeclients, peers
from tests.e2e.images.conftest import SELECT_LABEL
from tests.e2e.images.test_image_admission import (
    compiled_condition,
    create_policy,
    delete_policy,
    deployment,
)
from tests.integration.images.conftest import Signer, sign_v3

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("image_operator")]

OTHER_BUILDER = "https://github.com/someone/fork/.github/workflows/release.yml@refs/heads/main"


@pytest.fixture(scope="module")
def attested_policy(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
) -> Iterator[str]:
    """Images under e2e-att/ signed by alice and attested by bob with the org's provenance."""
    name = f"e2e-attested-{uuid.uuid4().hex[:6]}"
    create_policy(
        control_plane,
        name,
        {
            "images": [f"{registry.host}/e2e-att/**"],
            "namespaceSelector": {
                "matchExpressions": [{"key": SELECT_LABEL, "operator": "Exists"}]
            },
            "authorities": [{"name": "alice", "key": {"data": signers["alice"].pem}}],
            "attestations": [
                {
                    "name": "provenance",
                    "predicateType": "slsaprovenance1",
                    "authorities": [{"name": "ci", "key": {"data": signers["bob"].pem}}],
                    "conditions": [
                        {
                            "name": "org-ci",
                            "expression": "predicate.runDetails.builder.id == "
                            f'"{attesting.BUILDER}"',
                            "message": "built by the release workflow",
                        }
                    ],
                }
            ],
        },
    )
    assert compiled_condition(control_plane, name)["status"] == "True"
    yield name
    delete_policy(control_plane, name)


def _image(registry: peers.Registry, name: str, alice: Signer, workdir: Path) -> tuple[str, str]:
    digest = peers.push_image(
        registry, f"e2e-att/{name}", "v1", files={"f": name.encode()}, workdir=workdir
    )
    sign_v3(alice, f"{registry.host}/e2e-att/{name}@{digest}")
    return f"{registry.host}/e2e-att/{name}@{digest}", registry.ref(f"e2e-att/{name}", "v1")


def _apply(plane: controlplane.ControlPlane, name: str, image: str) -> str | None:
    """None when admitted, else the apiserver's denial message."""
    namespace = kubeclients.namespace(plane, "attested", {SELECT_LABEL: "enforce"})
    with kubeclients.admin(plane) as api:
        try:
            client.AppsV1Api(api).create_namespaced_deployment(namespace, deployment(name, image))
        except client.ApiException as error:
            assert error.status == 403, error.body
            return str(json.loads(error.body)["message"])
    return None


@pytest.mark.parametrize("version", [2, 3], ids=["cosign-v2-att", "cosign-v3-bundle"])
def test_an_image_attested_by_the_org_ci_is_admitted(
    version: int,
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    attested_policy: str,
    tmp_path: Path,
) -> None:
    pinned, tagged = _image(registry, f"good-v{version}", signers["alice"], tmp_path)
    attest = attesting.attest_v2 if version == 2 else attesting.attest_v3
    attest(signers["bob"].private, pinned, "slsaprovenance1", attesting.slsa_v1(), tmp_path)
    assert _apply(control_plane, f"good-v{version}", tagged) is None


def test_provenance_from_another_builder_is_refused_naming_the_condition_and_value(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    attested_policy: str,
    tmp_path: Path,
) -> None:
    pinned, tagged = _image(registry, "fork", signers["alice"], tmp_path)
    provenance = attesting.slsa_v1(builder=OTHER_BUILDER)
    attesting.attest_v3(signers["bob"].private, pinned, "slsaprovenance1", provenance, tmp_path)
    message = _apply(control_plane, "fork", tagged)
    assert message is not None
    assert f"ImagePolicy '{attested_policy}'" in message
    assert "attestation 'provenance' (https://slsa.dev/provenance/v1)" in message
    assert "condition 'org-ci' (built by the release workflow) is false" in message
    assert f'predicate.runDetails.builder.id = "{OTHER_BUILDER}"' in message


def test_signed_but_unattested_or_wrongly_attested_images_are_refused(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    attested_policy: str,
    tmp_path: Path,
) -> None:
    _, unattested = _image(registry, "bare", signers["alice"], tmp_path)
    message = _apply(control_plane, "bare", unattested)
    assert message is not None
    assert "attestation 'provenance' (https://slsa.dev/provenance/v1) signed by ci (" in message
    assert "the image carries no attestation" in message
    # Attested by alice, whom the policy trusts to sign but not to attest.
    pinned, tagged = _image(registry, "self", signers["alice"], tmp_path)
    attesting.attest_v2(
        signers["alice"].private, pinned, "slsaprovenance1", attesting.slsa_v1(), tmp_path
    )
    message = _apply(control_plane, "self", tagged)
    assert message is not None
    assert "signature does not verify" in message


def test_a_condition_that_does_not_compile_is_reported_on_the_policy(
    control_plane: controlplane.ControlPlane, registry: peers.Registry, signers: dict[str, Signer]
) -> None:
    name = f"e2e-bad-cel-{uuid.uuid4().hex[:6]}"
    spec = {
        "images": [f"{registry.host}/e2e-bad-cel/**"],
        "authorities": [{"key": {"data": signers["alice"].pem}}],
        "attestations": [
            {
                "name": "provenance",
                "predicateType": "slsaprovenance1",
                "authorities": [{"key": {"data": signers["bob"].pem}}],
                "conditions": [{"name": "broken", "expression": "predicate.builder.id =="}],
            }
        ],
    }
    create_policy(control_plane, name, spec)
    try:
        condition = compiled_condition(control_plane, name)
        assert condition["status"] == "False"
        assert "condition 'broken' does not compile" in condition["message"]
    finally:
        delete_policy(control_plane, name)
