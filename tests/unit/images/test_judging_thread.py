"""Where a signature judgement runs: on the event loop when it is a few public-key checks,
in a worker thread when it may be heavy (keyless chains, log proofs, many signatures)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from muster.images import verifier as imageverifier
from muster.images.rules import policies as imagepolicies
from tests.unit.images.test_imagepolicies import (
    PGI_ROOT,
    ROOT_SOURCE,
    compiled,
    keyless_spec,
    legacy,
    legacy_found,
    spec,
)
from tests.unit.signatures.conftest import ALICE_DIGEST, signature_manifest

pytestmark = pytest.mark.unit


def judged_on(
    policy: imagepolicies.CompiledPolicy,
    evidence: imagepolicies.Evidence,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[str, imagepolicies.Decision]:
    """Which thread judged, and the decision (the real judgement)."""
    threads: list[threading.Thread] = []
    judge = imagepolicies.judge

    def recording(*args: Any) -> imagepolicies.Decision:
        threads.append(threading.current_thread())
        return judge(*args)

    monkeypatch.setattr(imagepolicies, "judge", recording)
    decision = asyncio.run(imageverifier._judge(policy, evidence))
    (thread,) = threads
    return ("loop" if thread is threading.main_thread() else "worker"), decision


def signed(count: int) -> imagepolicies.Evidence:
    return imagepolicies.Evidence(
        digest=ALICE_DIGEST,
        signatures=legacy_found(*(legacy(signature_manifest(ALICE_DIGEST)),) * count),
    )


def test_a_few_public_key_checks_are_judged_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    where, decision = judged_on(compiled(spec()), signed(1), monkeypatch)
    assert (where, decision.passed) == ("loop", True)
    where, decision = judged_on(compiled(spec()), imagepolicies.Evidence(ALICE_DIGEST), monkeypatch)
    assert (where, decision.reason) == ("loop", "ImageNotSigned")


def test_many_signatures_go_to_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    many = signed(imageverifier.INLINE_SIGNATURE_CHECKS + 1)
    where, decision = judged_on(compiled(spec()), many, monkeypatch)
    assert (where, decision.passed) == ("worker", True)


def test_keyless_and_log_proofs_go_to_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    keyless = compiled(keyless_spec(), {ROOT_SOURCE: PGI_ROOT})
    assert judged_on(keyless, signed(1), monkeypatch)[0] == "worker"
    with_root = spec(
        authorities=[
            {
                "name": "alice",
                "key": {"data": spec()["authorities"][0]["key"]["data"], "trustedRoot": {
                    "namespace": "sigstore", "name": "root"
                }},
            }
        ]
    )  # fmt: skip
    where, decision = judged_on(
        compiled(with_root, {ROOT_SOURCE: PGI_ROOT}), signed(1), monkeypatch
    )
    # The capture has no Rekor entry: a key with a trusted root demands one, in the worker.
    assert (where, decision.passed) == ("worker", False)
