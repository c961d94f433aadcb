"""``muster run --credential-helper`` through the real apiserver: a signed image in the
password-protected registry, pods with no pull secrets, and only a credential helper
(a real ``docker-credential-testhelper`` on the operator's PATH) to read the registry with."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from muster.app import localoperator
from muster.platform import controlplane
from tests import credhelper, kubeclients, peers
from tests.e2e.images.test_image_admission import compiled_condition, create_policy, delete_policy
from tests.e2e.suites import suite_operator
from tests.integration.images.conftest import Signer, sign_v2

pytestmark = pytest.mark.e2e

LABEL = "muster-e2e.dev/credhelper"
USER, PASSWORD = "cloud", "minted-by-the-cloud-identity"


def _select(hook: dict[str, Any]) -> None:
    mode = hook["clientConfig"]["url"].rsplit("/", 1)[-1]
    hook["namespaceSelector"] = {"matchLabels": {LABEL: mode}}


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.Registry]:
    with peers.registry(
        tmp_path_factory.mktemp("credhelper-registry"), users={USER: PASSWORD}
    ) as r:
        yield r


@pytest.fixture(scope="module")
def helper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[credhelper.Helper]:
    installed = credhelper.install(tmp_path_factory.mktemp("credhelper") / "bin")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", credhelper.path_with(installed.directory))  # the operator's PATH
        yield installed


@pytest.fixture(scope="module")
def helper_operator(
    control_plane: controlplane.ControlPlane,
    private: peers.Registry,
    helper: credhelper.Helper,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    with suite_operator(
        control_plane,
        configuration="credhelper-e2e.muster.dev",
        own_namespace="muster-credhelper-e2e",
        workdir=tmp_path_factory.mktemp("muster-credhelper"),
        select=_select,
        extra_args=(
            f"--insecure-registry={private.host}",
            f"--credential-helper={private.host}=testhelper",
        ),
    ) as operator:
        yield operator


def _pod(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"app-{uuid.uuid4().hex[:6]}"},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


def test_pods_without_pull_secrets_are_judged_with_the_helpers_credentials(
    control_plane: controlplane.ControlPlane,
    private: peers.Registry,
    helper: credhelper.Helper,
    helper_operator: localoperator.LocalOperator,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    digest = peers.push_image(private, "cloud/app", workdir=tmp_path, credentials=(USER, PASSWORD))
    image = f"{private.host}/cloud/app@{digest}"
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (docker_config / "config.json").write_text(
        json.dumps({"auths": {f"http://{private.host}": {"auth": auth}}})
    )
    sign_v2(signers["alice"], image, docker_config)
    name = f"credhelper-{uuid.uuid4().hex[:6]}"
    create_policy(
        control_plane,
        name,
        {
            "images": [f"{private.host}/cloud/**"],
            "namespaceSelector": {"matchExpressions": [{"key": LABEL, "operator": "Exists"}]},
            "authorities": [{"name": "alice", "key": {"data": signers["alice"].pem}}],
        },
    )
    try:
        compiled_condition(control_plane, name)
        namespace = kubeclients.namespace(control_plane, "credhelper", {LABEL: "enforce"})
        with kubeclients.admin(control_plane) as api:
            core = client.CoreV1Api(api)
            helper.set(mode="missing")
            with pytest.raises(client.ApiException) as raised:
                core.create_namespaced_pod(namespace, _pod(image))
            assert raised.value.status == 403, raised.value.body
            message = json.loads(raised.value.body)["message"]
            assert "credential helper docker-credential-testhelper has no credentials" in message
            helper.set(servers=[private.host], username=USER, secret=PASSWORD)
            # Lookup failures are remembered for the verifier's negative TTL (10 s), then the
            # helper is asked again and the signature is found.
            deadline = time.monotonic() + 30
            while True:
                try:
                    created = core.create_namespaced_pod(namespace, _pod(image))
                    break
                except client.ApiException as error:
                    assert "has no credentials" in str(error.body), error.body
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            assert created.spec is not None
            assert created.spec.containers[0].image == image
        assert private.host in helper.asked
        assert PASSWORD not in helper_operator.log.read_text()
    finally:
        delete_policy(control_plane, name)
