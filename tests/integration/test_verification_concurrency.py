"""A slow signature verification must not hold up warm admissions sharing the event loop.

The registry is the real one; the slowness is injected (a fault injector: no real peer can be
asked for a verification that burns seconds of CPU) by replacing the policy judgement
with one that blocks its thread the way CPU-bound crypto does. A judgement of a few public-key
signatures (a tenth of a millisecond each) is made on the event loop, cheaper than the hop to
a thread; keyless chains, log proofs and many signatures go to a worker thread. The policy here
is key-based, so ``INLINE_SIGNATURE_CHECKS`` is lowered to send it there too: the injected
slowness stands for one of those heavy judgements.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from muster.images import verifier as imageverifier
from muster.images.rules import policies as imagepolicies
from muster.kernel import references
from muster.platform import registries
from tests import peers

pytestmark = pytest.mark.integration

# Long enough that a blocked loop cannot hide in scheduling noise on a busy machine.
SLOW_SECONDS = 2.0


def _policy() -> imagepolicies.CompiledPolicy:
    public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    spec = {"images": ["**"], "authorities": [{"key": {"data": public}}]}
    return imagepolicies.compile_policy("slow", 1, imagepolicies.parse_spec(spec), {})


def test_a_slow_verification_does_not_delay_a_concurrent_warm_one(
    registry: peers.Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warm_ref, cold_ref = (
        references.parse(
            f"{registry.host}/concurrency/{name}@"
            + peers.push_image(
                registry, f"concurrency/{name}", files={"f": name.encode()}, workdir=tmp_path
            )
        )
        for name in ("warm", "cold")
    )
    policy = _policy()
    judge = imagepolicies.judge
    judging = threading.Event()
    judging_since: list[float] = []

    def slow_judge(
        compiled: imagepolicies.CompiledPolicy, evidence: imagepolicies.Evidence
    ) -> imagepolicies.Decision:
        judging_since.append(time.perf_counter())
        judging.set()
        time.sleep(SLOW_SECONDS)  # holds its thread like CPU-bound verification would
        return judge(compiled, evidence)

    async def scenario() -> tuple[float, float, bool]:
        settings = registries.RegistrySettings(insecure_registries=frozenset({registry.host}))
        async with registries.RegistryClient(settings) as client:
            verifier = imageverifier.Verifier(client)
            first = await verifier.verify(warm_ref, [policy])  # now cached
            monkeypatch.setattr(imagepolicies, "judge", slow_judge)
            monkeypatch.setattr(imageverifier, "INLINE_SIGNATURE_CHECKS", -1)
            started = time.perf_counter()
            cold = asyncio.create_task(verifier.verify(cold_ref, [policy]))
            while not judging.is_set() and not cold.done():  # noqa: ASYNC110  # set by a thread
                await asyncio.sleep(0.005)  # until the cold one is judging (or blocked the loop)
            again = await verifier.verify(warm_ref, [policy])
            # From the moment the slow judgement began: a blocked loop shows up here.
            warm_seconds = time.perf_counter() - judging_since[0]
            await cold
            assert again.decisions == first.decisions  # answered from the cache
            return warm_seconds, time.perf_counter() - started, cold.done()

    warm_seconds, cold_seconds, finished = asyncio.run(scenario())
    assert finished and cold_seconds >= SLOW_SECONDS  # the slow judgement really ran
    # Had the slow judgement held the loop, the warm answer would wait for all of it.
    assert warm_seconds < SLOW_SECONDS / 2, f"a warm verification waited {warm_seconds:.3f} s"
