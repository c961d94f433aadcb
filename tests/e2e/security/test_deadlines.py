"""A 5 s webhook never waits on an 8 s deadline, through the real apiserver.

``muster run`` here keeps its default deadline (8 s, made for the default 10 s webhook), while
its webhooks are registered with ``timeoutSeconds: 5`` and the registry answers 6 s late. The
apiserver tells each call how long it waits (``?timeout=5s``) and Muster stops its gates in
time (4 s) to answer with its own reason: a denial naming the deadline in enforce mode, a
warning in warn mode, instead of the apiserver's "failed calling webhook ... deadline
exceeded" after 5 s (a bare error in enforce mode, a silent admission under ``Ignore``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client

from muster.app import localoperator
from muster.kernel import deadlines
from muster.platform import controlplane
from tests import kubeclients, peers
from tests.e2e.security.conftest import FaultProxy, signed_image_policy
from tests.e2e.suites import mode_selector, suite_operator
from tests.integration.images.conftest import Signer, sign_v3

pytestmark = pytest.mark.e2e

OWN_NAMESPACE = "muster-deadline-e2e"
SELECT_LABEL = "muster-e2e.dev/deadline"
CONFIGURATION = "deadline-e2e.muster.dev"
WEBHOOK_TIMEOUT = 5
SLOW_REGISTRY = 6.0


@pytest.fixture(scope="module")
def slow_registry(registry: peers.Registry) -> Iterator[FaultProxy]:
    proxy = FaultProxy(registry.host, delay=SLOW_REGISTRY).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def operator(
    control_plane: controlplane.ControlPlane,
    slow_registry: FaultProxy,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    with suite_operator(
        control_plane,
        configuration=CONFIGURATION,
        own_namespace=OWN_NAMESPACE,
        workdir=tmp_path_factory.mktemp("muster-deadline"),
        select=mode_selector(SELECT_LABEL),
        extra_args=(f"--insecure-registry={slow_registry.host}",),  # default deadline: 8 s
        timeout_seconds=WEBHOOK_TIMEOUT,
    ) as started:
        yield started


@pytest.fixture(scope="module")
def policy(
    control_plane: controlplane.ControlPlane,
    operator: localoperator.LocalOperator,
    slow_registry: FaultProxy,
    signers: dict[str, Signer],
) -> Iterator[str]:
    with signed_image_policy(
        control_plane,
        "deadline",
        f"{slow_registry.host}/deadline/**",
        signers["alice"],
        label=SELECT_LABEL,
    ) as name:
        yield name


def create(
    plane: controlplane.ControlPlane, namespace: str, image: str
) -> tuple[int, str, list[str], float]:
    """(HTTP status, message, warnings, seconds) of creating a pod."""
    started = time.monotonic()
    with kubeclients.admin(plane) as api:
        try:
            answer = client.CoreV1Api(api).create_namespaced_pod(
                namespace,
                kubeclients.pod(f"d-{uuid.uuid4().hex[:8]}", image),
                _preload_content=False,
            )
        except client.ApiException as error:
            message = str(json.loads(error.body or "{}").get("message", ""))
            return error.status, message, [], time.monotonic() - started
        return answer.status, "", answer.headers.getlist("Warning"), time.monotonic() - started


def test_a_short_webhook_timeout_cuts_the_deadline(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    slow_registry: FaultProxy,
    signers: dict[str, Signer],
    policy: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    workdir = tmp_path_factory.mktemp("deadline-images")
    images = []
    for n in range(3):
        digest = peers.push_image(
            registry, "deadline/app", f"v{n}", workdir=workdir, env={"D": uuid.uuid4().hex}
        )
        sign_v3(signers["alice"], f"{registry.host}/deadline/app@{digest}")
        images.append(f"{slow_registry.host}/deadline/app@{digest}")
    enforced = kubeclients.namespace(control_plane, "deadline", {SELECT_LABEL: "enforce"})
    warned = kubeclients.namespace(control_plane, "deadline-warn", {SELECT_LABEL: "warn"})
    # The policy is live: with a prompt registry the signed image is admitted.
    started = time.monotonic()
    while (answer := create(control_plane, enforced, images[0]))[0] != 201:
        assert time.monotonic() - started < 30, answer
        time.sleep(0.5)
    expected = deadlines.admission_deadline(WEBHOOK_TIMEOUT)
    assert expected == 4.0
    slow_registry.fault = "slow"
    try:
        status, message, _, seconds = create(control_plane, enforced, images[1])
        assert status == 403, message
        assert "failed calling webhook" not in message, message
        assert message.startswith("admission webhook"), message
        assert f"no answer within {expected:g}s" in message, message
        assert expected <= seconds < WEBHOOK_TIMEOUT, seconds
        # Warn mode (failurePolicy Ignore): admitted, and the user is told why.
        status, _, warnings, seconds = create(control_plane, warned, images[2])
        assert status == 201
        assert any(f"no answer within {expected:g}s" in w for w in warnings), warnings
        assert seconds < WEBHOOK_TIMEOUT, seconds
    finally:
        slow_registry.fault = None
