"""What a cold verification costs the registry, counted on the real registries.

Every request the client sends is seen by its observer hook (``registries.RoundTrips``):
the total, and the sequential depth (round trips waited for one after another). The goal:
at most 3 round trips for an image pinned by digest, 4 by tag, whatever format signed it,
whether or not the registry has the OCI referrers API, and in parallel across a pod's images.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from muster.images import verifier as imageverifier
from muster.images.rules import policies as imagepolicies
from muster.kernel import references
from muster.platform import registries
from tests import peers
from tests.integration.images.conftest import Signer, client_for, policy, sign_v2, sign_v3

pytestmark = pytest.mark.integration


async def _learn_support(
    client: registries.RegistryClient, registry: peers.Registry, repository: str
) -> None:
    """A lookup in a repository the registry holds teaches the client whether it has the API."""
    await client.referrers(registry.host, repository, "sha256:" + "0" * 64)


async def _cost(
    registry: peers.Registry,
    ref: str,
    trust: imagepolicies.CompiledPolicy,
    *,
    learnt: bool,
) -> tuple[int, int]:
    repository = references.parse(ref).repository
    """(requests, depth) of one cold verification of ``ref`` that must pass."""
    async with client_for(registry.host) as client:
        if learnt:
            await _learn_support(client, registry, repository)
        before = client.stats.requests
        trips = registries.RoundTrips()
        client.observer = trips
        verifier = imageverifier.Verifier(client)
        result = await verifier.verify(references.parse(ref), [trust])
        ((_, decision),) = result.decisions
        assert decision.passed, decision.message
        assert trips.requests == client.stats.requests - before  # the hook saw every one
        return trips.requests, trips.depth


@pytest.fixture
def signed(
    request: pytest.FixtureRequest, signers: dict[str, Signer], tmp_path: Path
) -> tuple[peers.Registry, str, str]:
    """(registry, digest reference, tag reference) of an image signed in the asked format."""
    which, fmt = request.param
    registry: peers.Registry = request.getfixturevalue(which)
    repository = f"trips/{fmt}"
    # Content of its own: the registries live for the session, and a second signature on the
    # same digest would be a second bundle to fetch.
    digest = peers.push_image(
        registry, repository, "v1", files={"f": request.node.name.encode()}, workdir=tmp_path
    )
    pinned = f"{registry.host}/{repository}@{digest}"
    (sign_v3 if fmt == "bundle" else sign_v2)(signers["alice"], pinned)
    return registry, pinned, registry.ref(repository, "v1")


CASES = [
    pytest.param(("referrers_registry", "bundle"), id="v3-bundle-referrers-api"),
    pytest.param(("registry", "bundle"), id="v3-bundle-tag-fallback"),
    pytest.param(("registry", "legacy"), id="legacy-sig"),
    pytest.param(("referrers_registry", "legacy"), id="legacy-sig-referrers-api"),
]


@pytest.mark.parametrize("signed", CASES, indirect=True)
async def test_a_cold_image_costs_three_round_trips_by_digest_and_four_by_tag(
    signed: tuple[peers.Registry, str, str], signers: dict[str, Signer]
) -> None:
    registry, pinned, tagged = signed
    trust = policy(registry.host, signers["alice"])
    by_digest = await _cost(registry, pinned, trust, learnt=True)
    by_tag = await _cost(registry, tagged, trust, learnt=True)
    print(f"\nrequests/depth: digest {by_digest}, tag {by_tag}")
    assert by_digest == (3, 3)
    assert by_tag == (4, 4)


@pytest.mark.parametrize("signed", CASES[:2], indirect=True)
async def test_first_contact_with_a_registry_asks_both_ways_without_an_extra_round_trip(
    signed: tuple[peers.Registry, str, str], signers: dict[str, Signer]
) -> None:
    registry, pinned, tagged = signed
    trust = policy(registry.host, signers["alice"])
    # Not yet known whether the registry has the referrers API: one more request, same depth.
    assert await _cost(registry, pinned, trust, learnt=False) == (4, 3)
    assert await _cost(registry, tagged, trust, learnt=False) == (5, 4)


async def test_support_is_learnt_only_from_unambiguous_answers(
    registry: peers.Registry, referrers_registry: peers.Registry, tmp_path: Path
) -> None:
    for each in (registry, referrers_registry):
        peers.push_image(each, "trips/known", "v1", workdir=tmp_path)
    async with client_for(registry.host, referrers_registry.host) as client:
        # A registry with the API answers 404 NAME_UNKNOWN for a repository it does not hold:
        # that must not be taken for "no API" (its referrers would then be missed).
        for each in (registry, referrers_registry):
            await _learn_support(client, each, "trips/absent")
        assert client.referrers_support.get(registry.host) is False  # "404 page not found"
        assert client.referrers_support.get(referrers_registry.host) is None
        for each in (registry, referrers_registry):
            await _learn_support(client, each, "trips/known")
        assert client.referrers_support.get(registry.host) is False
        assert client.referrers_support.get(referrers_registry.host) is True


async def test_a_pods_images_are_looked_up_in_parallel_and_duplicates_once(
    referrers_registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    registry = referrers_registry
    pinned = []
    for index in range(4):
        digest = peers.push_image(
            registry, f"trips/pod{index}", "v1", files={"f": bytes([index])}, workdir=tmp_path
        )
        pinned.append(f"{registry.host}/trips/pod{index}@{digest}")
        sign_v3(signers["alice"], pinned[-1])
    trust = policy(registry.host, signers["alice"])
    # A pod of five containers, two of them running the same image (as the gate asks).
    images = [references.parse(ref) for ref in [*pinned, pinned[0]]]
    judged = 0
    judge = imagepolicies.judge

    def counting(
        compiled: imagepolicies.CompiledPolicy, evidence: imagepolicies.Evidence
    ) -> imagepolicies.Decision:
        nonlocal judged
        judged += 1
        return judge(compiled, evidence)

    async with client_for(registry.host) as client:
        await _learn_support(client, registry, "trips/pod0")
        trips = registries.RoundTrips()
        client.observer = trips
        verifier = imageverifier.Verifier(client)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(imagepolicies, "judge", counting)
            results = await asyncio.gather(*(verifier.verify(ref, [trust]) for ref in images))
    assert all(result.passed for result in results)
    assert trips.requests == 4 * 3  # four distinct images, three requests each
    # The four lookups start together: every image's first request is sent before any answer
    # is read. (The measured chain of the whole pod is not asserted: answers of four lookups
    # interleaving on one event loop make it an upper bound that varies with machine load.)
    starts = sorted(start for start, _ in trips.spans)
    assert starts[3] < min(end for _, end in trips.spans)
    assert judged == 4  # the repeated image is judged once, not per container


async def test_an_unsigned_image_is_still_refused_after_every_stage(
    registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    digest = peers.push_image(registry, "trips/unsigned", "v1", workdir=tmp_path)
    trust = policy(registry.host, signers["alice"])
    async with client_for(registry.host) as client:
        await _learn_support(client, registry, "trips/unsigned")
        trips = registries.RoundTrips()
        client.observer = trips
        result = await imageverifier.Verifier(client).verify(
            references.parse(f"{registry.host}/trips/unsigned@{digest}"), [trust]
        )
    ((_, decision),) = result.decisions
    assert (decision.passed, decision.reason) == (False, "ImageNotSigned")
    # Referrers (none), the legacy tag (none), then the image manifest (not an index).
    assert (trips.requests, trips.depth) == (3, 3)
