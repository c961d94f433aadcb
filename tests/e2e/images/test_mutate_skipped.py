"""The apiserver skips Muster's mutating webhook for pods that need nothing, and only those.

Through the real kube-apiserver and ``muster run``: a pod naming a signed image by tag is
still pinned by the mutation; a pod whose images are already pinned is admitted (and judged by
the validating webhook) without a mutating call. Muster's own request counter
(``muster_admission_requests_total`` by phase) tells which calls it received.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from muster.app import localoperator
from muster.platform import controlplane
from tests import kubeclients, peers
from tests.e2e.images.conftest import SELECT_LABEL
from tests.e2e.images.test_image_admission import compiled_condition, create_policy, delete_policy
from tests.integration.images.conftest import Signer, sign_v3

pytestmark = pytest.mark.e2e


def _calls(operator: localoperator.LocalOperator, phase: str) -> float:
    """Admission requests Muster answered in ``phase`` (mutate or validate), all decisions."""
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("muster_admission_requests_total{") and f'phase="{phase}"' in line
    )


@pytest.fixture(scope="module")
def pinning_policy(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
) -> Iterator[str]:
    name = f"e2e-skip-{uuid.uuid4().hex[:6]}"
    create_policy(
        control_plane,
        name,
        {
            "images": [f"{registry.host}/skip/**"],
            "namespaceSelector": {
                "matchExpressions": [{"key": SELECT_LABEL, "operator": "Exists"}]
            },
            "authorities": [{"name": "alice", "key": {"data": signers["alice"].pem}}],
            "pinDigests": True,
        },
    )
    assert compiled_condition(control_plane, name)["status"] == "True"
    yield name
    delete_policy(control_plane, name)


def test_a_pod_needing_a_pin_is_pinned_and_one_needing_nothing_skips_the_mutation(
    control_plane: controlplane.ControlPlane,
    image_operator: localoperator.LocalOperator,
    registry: peers.Registry,
    signers: dict[str, Signer],
    pinning_policy: str,
    tmp_path: Path,
) -> None:
    digest = peers.push_image(registry, "skip/app", "v1", workdir=tmp_path)
    sign_v3(signers["alice"], f"{registry.host}/skip/app@{digest}")
    tagged = registry.ref("skip/app", "v1")
    namespace = kubeclients.namespace(control_plane, "skip", {SELECT_LABEL: "enforce"})
    with kubeclients.admin(control_plane) as api:
        core = client.CoreV1Api(api)

        mutations, validations = (
            _calls(image_operator, "mutate"),
            _calls(image_operator, "validate"),
        )
        pinned = core.create_namespaced_pod(namespace, kubeclients.pod("tagged", tagged))
        assert pinned.spec.containers[0].image == f"{tagged}@{digest}"  # the mutation ran
        assert _calls(image_operator, "mutate") > mutations
        assert _calls(image_operator, "validate") == validations + 1

        mutations, validations = (
            _calls(image_operator, "mutate"),
            _calls(image_operator, "validate"),
        )
        already = f"{tagged}@{digest}"
        admitted = core.create_namespaced_pod(namespace, kubeclients.pod("pinned", already))
        assert admitted.spec.containers[0].image == already
        assert _calls(image_operator, "mutate") == mutations  # never asked
        assert _calls(image_operator, "validate") == validations + 1  # still judged

        # Judged all the same: an unsigned pinned image is refused without any mutating call.
        unsigned = peers.push_image(
            registry, "skip/unsigned", "v1", files={"f": b"unsigned"}, workdir=tmp_path
        )
        with pytest.raises(client.ApiException) as refused:
            core.create_namespaced_pod(
                namespace,
                kubeclients.pod("unsigned", f"{registry.host}/skip/unsigned@{unsigned}"),
            )
        assert refused.value.status == 403
        assert "no signature found" in str(refused.value.body)
        assert _calls(image_operator, "mutate") == mutations
