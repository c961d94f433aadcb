"""A pod of a hundred signed images, on the real registry: what it costs, and who waits.

Requests are seen by the client's observer hook, which runs in the requesting task: it knows
whose request it saw (``registries.requester``) and how many were in flight at once. Nothing
here asserts a duration: the bound, the order of service and the request counts are exact.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Hashable

import pytest

from muster.images import verifier as imageverifier
from muster.kernel import references
from muster.platform import registries
from tests import peers
from tests.integration.images.conftest import COSIGN_ENV, Signer, policy

pytestmark = pytest.mark.integration

IMAGES = 100


def _sign_all(signer: Signer, refs: list[str], processes: int = 4) -> None:
    """The real cosign v3, several images per call and a few calls at once."""

    def sign(chunk: list[str]) -> None:
        peers.run_tool(
            "cosign", "sign", f"--key={signer.private}", "--tlog-upload=false",
            "--use-signing-config=false", "--allow-http-registry", "--timeout=10m", "-y", *chunk,
            env=COSIGN_ENV, timeout=600,
        )  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(processes) as pool:
        list(pool.map(sign, [refs[i::processes] for i in range(processes)]))


@pytest.fixture(scope="module")
def large_pod(
    registry: peers.Registry, signers: dict[str, Signer], tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[str], str]:
    """(the hundred images of one pod, one more image of another pod), distinct and signed."""
    workdir = tmp_path_factory.mktemp("large-pod")

    def push(index: int) -> str:
        repository = f"large/app-{index}"
        digest = peers.push_image(
            registry, repository, "v1", files={"f": f"{index}".encode()}, workdir=workdir
        )
        return f"{registry.host}/{repository}@{digest}"

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        refs = list(pool.map(push, range(IMAGES + 1)))
    _sign_all(signers["alice"], refs)
    return refs[:IMAGES], refs[IMAGES]


class InFlight:
    """An observer counting requests per requester and the most in flight at once."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self.by: dict[Hashable | None, int] = {}
        self.order: list[Hashable | None] = []
        self.answered = asyncio.Event()  # the first request came back

    def __call__(self, registry: str, outcome: str, seconds: float) -> None:
        end = time.perf_counter()
        self.spans.append((end - seconds, end))
        who = registries.requester.get()
        self.by[who] = self.by.get(who, 0) + 1
        self.order.append(who)
        self.answered.set()

    @property
    def peak(self) -> int:
        # Ends sort before starts at the same instant: touching spans do not overlap.
        events = sorted([(end, -1) for _, end in self.spans] + [(s, 1) for s, _ in self.spans])
        running = peak = 0
        for _, step in events:
            running += step
            peak = max(peak, running)
        return peak


def _client(host: str, limit: int) -> registries.RegistryClient:
    return registries.RegistryClient(
        registries.RegistrySettings(
            insecure_registries=frozenset({host}), max_requests_per_registry=limit
        )
    )


async def _learn_support(client: registries.RegistryClient, ref: str) -> None:
    parsed = references.parse(ref)
    await client.referrers(parsed.registry, parsed.repository, "sha256:" + "0" * 64)


async def _pod(
    verifier: imageverifier.Verifier,
    refs: list[str],
    trust: object,
    who: Hashable,
    credentials: imageverifier.CredentialProvider | None = None,
) -> list[imageverifier.ImageResult]:
    """One pod's images verified at once, as the image gate does: each its own task."""

    async def one(ref: str) -> imageverifier.ImageResult:
        registries.requester.set(who)
        return await verifier.verify(references.parse(ref), [trust], credentials)  # type: ignore[list-item]

    return list(await asyncio.gather(*(one(ref) for ref in refs)))


async def test_a_hundred_image_pod_costs_three_requests_per_image(
    registry: peers.Registry, signers: dict[str, Signer], large_pod: tuple[list[str], str]
) -> None:
    refs, _ = large_pod
    trust = policy(registry.host, signers["alice"])
    async with _client(registry.host, 16) as client:
        await _learn_support(client, refs[0])
        seen = InFlight()
        client.observer = seen
        before = client.stats.requests
        results = await _pod(imageverifier.Verifier(client), refs, trust, "pod")
    assert all(result.passed for result in results), [r.decisions for r in results][:3]
    assert client.stats.requests - before == len(seen.spans)  # the hook saw every request
    assert len(seen.spans) == 3 * IMAGES


async def test_requests_in_flight_to_a_registry_never_exceed_the_bound(
    registry: peers.Registry, signers: dict[str, Signer], large_pod: tuple[list[str], str]
) -> None:
    """Two pods with different pull secrets (two clients) share the one bound."""
    refs, _ = large_pod
    trust = policy(registry.host, signers["alice"])
    limit = 4
    async with _client(registry.host, limit) as client:
        await _learn_support(client, refs[0])
        seen = InFlight()
        client.observer = seen  # the clients made for pull secrets report to it too
        verifier = imageverifier.Verifier(client)

        def secrets(user: str) -> imageverifier.CredentialProvider:
            async def provide() -> dict[str, registries.Credentials]:
                return {registry.host: registries.Credentials(user, "secret")}

            return provide

        first, second = secrets("one"), secrets("two")
        results = await asyncio.gather(
            _pod(verifier, refs[: IMAGES // 2], trust, "first", first),
            _pod(verifier, refs[IMAGES // 2 :], trust, "second", second),
        )
        await verifier.close()
    assert all(result.passed for pod in results for result in pod)
    assert len(seen.spans) == 3 * IMAGES
    assert seen.by == {"first": 3 * IMAGES // 2, "second": 3 * IMAGES // 2}
    assert seen.peak == limit  # reached (the test means something), never exceeded
    assert client.slots.in_flight(registry.host) == 0


async def test_a_large_pod_does_not_make_another_pod_wait_behind_it(
    registry: peers.Registry, signers: dict[str, Signer], large_pod: tuple[list[str], str]
) -> None:
    """A one-image pod arriving while a hundred-image pod's requests are queued is served in
    turn: each of its three requests waits for at most a couple of the large pod's, not for
    the hundred ahead of it (first come, first served would make it wait for all of them)."""
    refs, alone = large_pod
    trust = policy(registry.host, signers["alice"])
    limit = 2
    async with _client(registry.host, limit) as client:
        await _learn_support(client, refs[0])
        seen = InFlight()
        client.observer = seen
        verifier = imageverifier.Verifier(client)
        large = asyncio.ensure_future(_pod(verifier, refs, trust, "large"))
        await seen.answered.wait()  # the large pod's requests are all queued by now
        (small,) = await _pod(verifier, [alone], trust, "small")
        last_small = len(seen.order) - 1 - seen.order[::-1].index("small")
        large_before_small_finished = seen.order[:last_small].count("large")
        results = await large
    assert small.passed
    assert all(result.passed for result in results)
    assert seen.by == {"large": 3 * IMAGES, "small": 3}
    # In turn: the large pod's requests already in flight or started when the small pod had
    # one ready, about ``limit + 1`` per stage (a few more when the machine is loaded); in
    # order of arrival it would be all 300 of them.
    assert large_before_small_finished <= 30, seen.order[: last_small + 1]
