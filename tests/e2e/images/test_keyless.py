"""Keyless cosign v3 image signatures through the real apiserver, the trusted root in a ConfigMap.

The real cosign v3 signs with a certificate from a local Fulcio and logs in a local Rekor, v1
or v2 (:mod:`tests.localsigstore`); an ImagePolicy names the signer's OIDC issuer and subject and a
ConfigMap holding the ``trusted_root.json``. The right identity is admitted; a wrong subject or
a wrong issuer is denied, the message saying what was expected and what was found.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client

from muster.platform import controlplane
from tests import kubeclients, localsigstore, peers
from tests.e2e.images.conftest import SELECT_LABEL
from tests.e2e.images.test_image_admission import (
    compiled_condition,
    create_policy,
    delete_policy,
    deployment,
)
from tests.integration import docblocks

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("image_operator")]

SUBJECT = "https://github.com/acme/train/.github/workflows/release.yaml@refs/heads/main"
ISSUER = localsigstore.GITHUB_ISSUER
# case -> (identity the ImagePolicy expects, Rekor version the signature was logged in)
CASES = {
    "right": ({"issuer": ISSUER, "subject": SUBJECT}, 1),
    "rekor2": ({"issuer": ISSUER, "subject": SUBJECT}, 2),
    "subject": ({"issuer": ISSUER, "subject": SUBJECT.replace("main", "dev")}, 2),
    "issuer": ({"issuer": "https://gitlab.com", "subject": SUBJECT}, 1),
}


@pytest.fixture(scope="module")
def keyless_images(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, tuple[str, str]]]:
    """Per case: an image signed keyless by SUBJECT, and the ImagePolicy that judges it."""
    workdir = tmp_path_factory.mktemp("keyless-e2e")
    suffix = uuid.uuid4().hex[:6]
    root_namespace = kubeclients.namespace(control_plane, "sigstore")
    with localsigstore.local_sigstore(workdir) as sigstore:
        signer = sigstore.issue(SUBJECT, label="release")
        with kubeclients.admin(control_plane) as api:
            client.CoreV1Api(api).create_namespaced_config_map(
                root_namespace,
                {
                    "metadata": {"name": "trusted-root"},
                    "data": {"trusted_root.json": sigstore.trusted_root_json()},
                },
            )
        found: dict[str, tuple[str, str]] = {}
        for case, (identity, rekor) in CASES.items():
            repository = f"e2e-keyless-{suffix}/{case}"
            digest = peers.push_image(registry, repository, "v1", workdir=workdir)
            ref = f"{registry.host}/{repository}@{digest}"
            localsigstore.sign_image(sigstore, signer, ref, rekor=rekor)
            name = f"e2e-keyless-{case}-{suffix}"
            create_policy(
                control_plane,
                name,
                {
                    "images": [f"{registry.host}/{repository}"],
                    "namespaceSelector": {
                        "matchExpressions": [{"key": SELECT_LABEL, "operator": "Exists"}]
                    },
                    "authorities": [
                        {
                            "name": "release",
                            "keyless": {
                                "identities": [identity],
                                "trustedRoot": {
                                    "namespace": root_namespace,
                                    "name": "trusted-root",
                                },
                            },
                        }
                    ],
                },
            )
            found[case] = (registry.ref(repository, "v1"), name)
        try:
            for _, name in found.values():
                condition = compiled_condition(control_plane, name)
                assert condition["status"] == "True", condition
            yield found
        finally:
            for _, name in found.values():
                delete_policy(control_plane, name)


def _create(plane: controlplane.ControlPlane, name: str, image: str) -> client.V1Deployment:
    namespace = kubeclients.namespace(plane, "keyless", {SELECT_LABEL: "enforce"})
    with kubeclients.admin(plane) as api:
        created: client.V1Deployment = client.AppsV1Api(api).create_namespaced_deployment(
            namespace, deployment(name, image)
        )
        return created


@pytest.mark.parametrize("case", ["right", "rekor2"])
def test_right_identity_is_admitted_and_pinned(
    control_plane: controlplane.ControlPlane,
    keyless_images: dict[str, tuple[str, str]],
    case: str,
) -> None:
    """Logged in Rekor v1 (signed integrated time) or v2 (checkpoint and a TSA timestamp)."""
    image, _ = keyless_images[case]
    created = _create(control_plane, f"keyless-{case}", image)
    pinned = created.spec.template.spec.containers[0].image
    assert pinned.startswith(f"{image}@sha256:"), pinned


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("subject", f"expected {SUBJECT.replace('main', 'dev')} (issuer {ISSUER})"),
        ("issuer", f"expected {SUBJECT} (issuer https://gitlab.com)"),
    ],
)
def test_wrong_identity_is_denied_saying_expected_and_found(
    control_plane: controlplane.ControlPlane,
    keyless_images: dict[str, tuple[str, str]],
    case: str,
    expected: str,
) -> None:
    image, policy = keyless_images[case]
    with pytest.raises(client.ApiException) as raised:
        _create(control_plane, f"keyless-{case}", image)
    assert raised.value.status == 403, raised.value.body
    message = json.loads(raised.value.body)["message"]
    assert f"ImagePolicy '{policy}'" in message, message
    assert f"signed by {SUBJECT} (issuer {ISSUER})" in message, message
    assert expected in message, message
    if case == "subject":  # docs/images.md shows this denial
        (documented,) = docblocks.named("real", "tests/e2e/images/test_keyless.py")
        assert docblocks.matches(documented, message) == ""
