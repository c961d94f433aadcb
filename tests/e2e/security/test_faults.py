"""Registry faults during admission, through the real apiserver and a real ``muster run``:
the registry down, slower than the admission deadline, failing (5xx), throttling (429 with
Retry-After) and serving content that does not match its digest.

For each fault: images under an enforcing ImagePolicy are denied with the one reason that
fault must produce (checked in the message and in ``muster_violations_total``; never created —
a created one is a *wrong allow*, counted), the warn namespace admits with a warning, and once
the fault clears a signed image is admitted again without a restart. The corrupt fault is
aimed at *signed* images: an unsigned one is denied for having no signature whether or not its
answers are corrupted, so it would prove nothing. The counts go to
``reliability-registry.json`` in pytest's temporary directory.
"""

from __future__ import annotations

import collections
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from muster.app import localoperator
from muster.platform import controlplane
from tests import kubeclients, peers
from tests.e2e.security.conftest import DEADLINE, SELECT_LABEL, FaultProxy, signed_image_policy
from tests.integration.images.conftest import Signer, sign_v3

pytestmark = pytest.mark.e2e

PODS_PER_FAULT = 3


@pytest.fixture(scope="module")
def images(
    registry: peers.Registry,
    fault_proxy: FaultProxy,
    signers: dict[str, Signer],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    workdir = tmp_path_factory.mktemp("fault-images")
    signed = peers.push_image(registry, "faults/signed", "v1", workdir=workdir, env={"A": "1"})
    sign_v3(signers["alice"], f"{registry.host}/faults/signed@{signed}")
    # Pods name the images through the proxy, the registry the operator is told about. Every
    # unsigned request gets a digest Muster has never seen, so no cached verdict answers it.
    found = {"signed": f"{fault_proxy.host}/faults/signed@{signed}"}
    for n in range(len(FaultProxy.FAULTS) * (PODS_PER_FAULT + 2) + 1):
        digest = peers.push_image(
            registry, "faults/unsigned", f"u{n}", workdir=workdir, env={"N": str(n)}
        )
        found[f"unsigned-{n}"] = f"{fault_proxy.host}/faults/unsigned@{digest}"
    # Signed images never judged before, for the corrupt fault (no cached verdict answers).
    for n in range(PODS_PER_FAULT + 1):
        digest = peers.push_image(
            registry, "faults/signed", f"s{n}", workdir=workdir, env={"S": str(n)}
        )
        sign_v3(signers["alice"], f"{registry.host}/faults/signed@{digest}")
        found[f"signed-{n}"] = f"{fault_proxy.host}/faults/signed@{digest}"
    return found


@pytest.fixture(scope="module")
def policy(
    control_plane: controlplane.ControlPlane,
    security_operator: localoperator.LocalOperator,
    fault_proxy: FaultProxy,
    signers: dict[str, Signer],
) -> Iterator[str]:
    images = f"{fault_proxy.host}/faults/**"
    with signed_image_policy(control_plane, "faults", images, signers["alice"]) as name:
        yield name


def _pod(image: str) -> dict[str, Any]:
    return kubeclients.pod(f"f-{uuid.uuid4().hex[:8]}", image)


def create(
    plane: controlplane.ControlPlane, namespace: str, image: str
) -> tuple[int, str, list[str]]:
    """(HTTP status, denial message, warnings) of creating a pod."""
    with kubeclients.admin(plane) as api:
        try:
            answer = client.CoreV1Api(api).create_namespaced_pod(
                namespace, _pod(image), _preload_content=False
            )
        except client.ApiException as error:
            return error.status, str(json.loads(error.body).get("message", "")), []
        return answer.status, "", answer.headers.getlist("Warning")


def eventually_admitted(plane: controlplane.ControlPlane, namespace: str, image: str) -> float:
    """Seconds until a pod with this image is admitted (caches may hold a failure briefly)."""
    started = time.monotonic()
    while True:
        status, message, _ = create(plane, namespace, image)
        if status == 201:
            return time.monotonic() - started
        if time.monotonic() - started > 30:
            raise AssertionError(f"not admitted after the fault cleared: {message}")
        time.sleep(0.5)


def violations(operator: localoperator.LocalOperator, namespace: str) -> collections.Counter[str]:
    """``muster_violations_total`` of ``namespace`` in enforce mode, by reason."""
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    found: collections.Counter[str] = collections.Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "muster_violations_total"
                and labels.get("resource_namespace") == namespace
                and labels.get("mode") == "enforce"
            ):
                found[labels["reason"]] += int(sample.value)
    return found


# The one reason each fault must give, and the words of it users read. The registry client
# makes 3 attempts (backoff 0.1 s, 0.2 s) and honours Retry-After; the gates get DEADLINE s.
EXPECTED = {
    # connections dropped: 3 attempts fail fast
    "down": ("SignatureLookupFailed", "registry unreachable after 3 attempts"),
    # every answer 4 s late: the deadline ends it
    "slow": ("DeadlineExceeded", f"no answer within {DEADLINE:g}s"),
    # 503 three times, well inside the deadline
    "5xx": ("SignatureLookupFailed", "registry answered HTTP 503 3 times"),
    # Retry-After: 1 is honoured, so two waits of 1 s reach the 2 s deadline before the third
    # attempt (a client that ignored it would report HTTP 429 within 0.3 s)
    "429": ("DeadlineExceeded", f"no answer within {DEADLINE:g}s"),
    # a signed image whose signature index no longer matches the digest its registry claims
    "corrupt": ("SignatureLookupFailed", "but content is sha256:"),
}


def test_registry_faults_never_become_allows(
    control_plane: controlplane.ControlPlane,
    security_operator: localoperator.LocalOperator,
    fault_proxy: FaultProxy,
    images: dict[str, str],
    policy: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    enforced = kubeclients.namespace(control_plane, "faults", {SELECT_LABEL: "enforce"})
    warned = kubeclients.namespace(control_plane, "faults-warn", {SELECT_LABEL: "warn"})
    # Before any fault: the policy is live, signed passes, unsigned is denied.
    eventually_admitted(control_plane, enforced, images["signed"])
    fresh = iter(images[k] for k in sorted(images) if k.startswith("unsigned-"))
    fresh_signed = iter(images[k] for k in sorted(images) if k.startswith("signed-"))
    unsigned = [next(fresh)]
    corrupted: list[str] = []
    status, message, _ = create(control_plane, enforced, unsigned[0])
    assert status == 403, message
    assert "no signature" in message
    record: dict[str, Any] = {"faults": {}, "requests": 0, "wrong_allows": 0}
    for fault in FaultProxy.FAULTS:
        # Each request names an image never judged before: signed ones for "corrupt".
        pool, judged = (fresh_signed, corrupted) if fault == "corrupt" else (fresh, unsigned)
        reason, words = EXPECTED[fault]
        before = violations(security_operator, enforced)
        fault_proxy.fault = fault
        faulted_before = fault_proxy.faulted
        outcomes: list[str] = []
        wrong = 0
        for _ in range(PODS_PER_FAULT):
            judged.append(next(pool))
            started = time.monotonic()
            status, message, _ = create(control_plane, enforced, judged[-1])
            assert time.monotonic() - started < 9, "the apiserver waited on Muster too long"
            record["requests"] += 1
            if status != 403:
                wrong += 1
            outcomes.append(message)
        assert wrong == 0, f"{fault}: images were admitted"
        for message in outcomes:
            assert message.startswith("admission webhook"), message
            assert "muster" in message
            assert words in message, (fault, message)
        # Exactly this reason, once per request: no other finding hides behind the words.
        assert violations(security_operator, enforced) - before == {reason: PODS_PER_FAULT}, (
            fault,
            outcomes,
        )
        # Warn mode: admitted, with the reason as a warning.
        judged.append(next(pool))
        status, _, warnings = create(control_plane, warned, judged[-1])
        record["requests"] += 1
        assert status == 201
        assert any(words in w for w in warnings), (fault, warnings)
        injected = fault_proxy.faulted - faulted_before
        assert injected > 0
        # Recovery, no restart: the fault clears, a signed image is admitted, and a new unsigned
        # one is denied for what it is (the registry was read: no signature), not for the fault.
        fault_proxy.fault = None
        recovered = eventually_admitted(control_plane, enforced, images["signed"])
        unsigned.append(next(fresh))
        status, message, _ = create(control_plane, enforced, unsigned[-1])
        record["requests"] += 2
        assert status == 403, message
        assert "no signature found" in message, message
        record["faults"][fault] = {
            "injected": injected,
            "denied": PODS_PER_FAULT - wrong,
            "wrong_allows": wrong,
            "recovered_in_s": round(recovered, 2),
            "example": outcomes[0][:300],
        }
        record["wrong_allows"] += wrong
    # The apiserver itself holds the truth: no pod with the unsigned image exists.
    with kubeclients.admin(control_plane) as api:
        pods = client.CoreV1Api(api).list_namespaced_pod(enforced).items
    created_unsigned = [p for p in pods if p.spec.containers[0].image in unsigned + corrupted]
    assert created_unsigned == []
    out = Path(tmp_path_factory.getbasetemp()) / "reliability-registry.json"
    out.write_text(json.dumps(record, indent=2))
    injected_total = sum(f["injected"] for f in record["faults"].values())
    print(
        f"reliability: registry faults={len(record['faults'])} injected={injected_total} "
        f"requests={record['requests']} wrong_allows={record['wrong_allows']} -> {out}"
    )
    assert record["wrong_allows"] == 0
