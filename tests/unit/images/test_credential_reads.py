"""A pod's registry credentials are read once per admission, not once per cold image."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Mapping

import pytest

from muster.images import verifier as imageverifier
from muster.kernel import references
from muster.platform import registries
from tests.unit.images.test_imagepolicies import compiled, spec

pytestmark = pytest.mark.unit

# Nothing listens on the discard port: every registry request fails at once, after the
# credentials were asked for (they are asked only when the registry must be spoken to).
CLOSED = "127.0.0.1:9"


def verifier() -> imageverifier.Verifier:
    settings = registries.RegistrySettings(insecure_registries=frozenset({CLOSED}), max_attempts=1)
    return imageverifier.Verifier(registries.RegistryClient(settings))


def images(count: int) -> list[references.ImageReference]:
    return [
        references.parse(f"{CLOSED}/team/app-{index}@sha256:{index:064x}") for index in range(count)
    ]


class Provider:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> Mapping[str, registries.Credentials]:
        self.calls += 1
        await asyncio.sleep(0)  # an API read: other images' verifications run meanwhile
        return {}


def test_one_provider_is_asked_once_for_all_the_images_it_serves() -> None:
    policy = compiled(spec(images=[f"{CLOSED}/**"]))
    engine = verifier()
    pod, other = Provider(), Provider()

    async def admit() -> list[imageverifier.ImageResult]:
        try:
            return await asyncio.gather(
                *(engine.verify(ref, [policy], pod) for ref in images(5)),
                engine.verify(images(6)[5], [policy], other),
            )
        finally:
            await engine.client.close()

    results = asyncio.run(admit())
    # Every image was really looked up (and failed: nothing listens there).
    assert [r.decisions[0][1].reason for r in results] == ["SignatureLookupFailed"] * 6
    assert (pod.calls, other.calls) == (1, 1)


def test_the_answer_is_forgotten_with_the_provider() -> None:
    engine = verifier()

    async def ask(provider: Provider) -> Mapping[str, registries.Credentials]:
        once = engine._memoised(provider)
        assert once is not None
        return await once()

    provider = Provider()
    assert asyncio.run(ask(provider)) == {}
    assert asyncio.run(ask(provider)) == {} and provider.calls == 1
    assert len(engine._credentials) == 1
    del provider
    gc.collect()
    assert len(engine._credentials) == 0


def test_policy_without_images_is_not_a_reason_to_ask() -> None:
    engine = verifier()
    provider = Provider()
    result = asyncio.run(engine.verify(images(1)[0], [], provider))
    assert result.decisions == () and provider.calls == 0
