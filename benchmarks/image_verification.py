"""Image verification cost: cold and warm time per image, registry requests per cold lookup.

    python benchmarks/image_verification.py            # 20 cold runs per case
    python benchmarks/image_verification.py --runs 5

Everything is real: Debian's docker-registry (no referrers API: cosign v3 uses the tag
fallback) and go-containerregistry's registry (referrers API), images pushed with crane and
signed offline by the real cosign v2 (legacy ``.sig``) and v3 (Sigstore bundle). "Cold" is a
fresh verifier (no cache, new connections); "warm" is the same verifier asked again. Requests
are every HTTP request sent; round trips are the longest chain of them sent one after another
(``registries.RoundTrips``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the real peers are started by the test suite's helpers

from tests import peers  # noqa: E402

from muster.images import verifier as imageverifier  # noqa: E402
from muster.images.rules import policies as imagepolicies  # noqa: E402
from muster.kernel import references  # noqa: E402
from muster.platform import registries  # noqa: E402

ENV = {"COSIGN_PASSWORD": ""}


def sign(version: str, key: Path, ref: str) -> None:
    if version == "v2":
        peers.run_tool(
            "cosign2", "sign", f"--key={key}", "--tlog-upload=false",
            "--allow-http-registry", "-y", ref, env=ENV,
        )  # fmt: skip
    else:
        peers.run_tool(
            "cosign", "sign", f"--key={key}", "--tlog-upload=false",
            "--use-signing-config=false", "--allow-http-registry", "-y", ref, env=ENV,
        )  # fmt: skip


async def _cold(
    client: registries.RegistryClient,
    reference: references.ImageReference,
    policy: imagepolicies.CompiledPolicy,
) -> tuple[imageverifier.Verifier, float, int, int]:
    """One cold verification: (verifier, seconds, requests, sequential round trips)."""
    trips = registries.RoundTrips()
    client.observer = trips
    verifier = imageverifier.Verifier(client)
    started = time.perf_counter()
    result = await verifier.verify(reference, [policy])
    seconds = time.perf_counter() - started
    client.observer = None
    if not result.passed:
        raise SystemExit(f"{reference} did not verify: {result.decisions}")
    return verifier, seconds, trips.requests, trips.depth


async def measure(
    host: str, ref: str, policy: imagepolicies.CompiledPolicy, runs: int
) -> dict[str, float]:
    """Cold and warm cost of verifying ``ref``.

    "First contact" is a new client that does not know yet whether the registry has the
    referrers API (it asks both ways at once); the other cold figures are a client that has
    talked to the registry before, as ``muster run`` has after its first image.
    """
    settings = registries.RegistrySettings(insecure_registries=frozenset({host}))
    reference = references.parse(ref)
    probe = ("sha256:" + "0" * 64, reference.registry, reference.repository)
    cold: list[float] = []
    first: list[float] = []
    warm: list[float] = []
    requests = depth = first_requests = first_depth = 0
    for _ in range(runs):
        async with registries.RegistryClient(settings) as client:
            _, seconds, first_requests, first_depth = await _cold(client, reference, policy)
            first.append(seconds)
        async with registries.RegistryClient(settings) as client:
            await client.referrers(probe[1], probe[2], probe[0])  # learns the registry
            verifier, seconds, requests, depth = await _cold(client, reference, policy)
            cold.append(seconds)
            before = client.stats.requests
            for _ in range(10):
                started = time.perf_counter()
                await verifier.verify(reference, [policy])
                warm.append(time.perf_counter() - started)
            if client.stats.requests != before:
                raise SystemExit("a warm verification asked the registry")
    async with registries.RegistryClient(settings) as client:
        await client.referrers(probe[1], probe[2], probe[0])
        before = client.stats.requests
        verifier = imageverifier.Verifier(client)
        await asyncio.gather(*(verifier.verify(reference, [policy]) for _ in range(50)))
        concurrent = client.stats.requests - before
    return {
        "cold_ms": statistics.median(cold) * 1000,
        "cold_first_contact_ms": statistics.median(first) * 1000,
        "warm_us": statistics.median(warm) * 1e6,
        "requests": requests,
        "round_trips": depth,
        "requests_first_contact": first_requests,
        "round_trips_first_contact": first_depth,
        "requests_50_concurrent": concurrent,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        peers.run_tool("cosign", "generate-key-pair", f"--output-key-prefix={work / 'k'}", env=ENV)
        key = work / "k.key"
        spec = {"images": ["**"], "authorities": [{"key": {"data": (work / "k.pub").read_text()}}]}
        policy = imagepolicies.compile_policy("bench", 1, imagepolicies.parse_spec(spec), {})
        rows = []
        (work / "plain").mkdir()
        (work / "referrers").mkdir()
        with (
            peers.registry(work / "plain") as plain,
            peers.referrers_registry(work / "referrers") as api,
        ):
            for registry, label in ((plain, "docker-registry"), (api, "ggcr+referrers")):
                for version in ("v2", "v3"):
                    repository = f"bench/{version}"
                    digest = peers.push_image(registry, repository, "v1", workdir=work)
                    sign(version, key, f"{registry.host}/{repository}@{digest}")
                    for form, ref in (
                        ("tag", registry.ref(repository, "v1")),
                        ("digest", f"{registry.host}/{repository}@{digest}"),
                    ):
                        result = asyncio.run(measure(registry.host, ref, policy, args.runs))
                        rows.append((label, f"cosign {version}", form, result))
    print(f"{'registry':16} {'signature':10} {'ref':6} {'cold ms':>8} {'first ms':>8} "
          f"{'warm us':>8} {'requests':>8} {'round trips':>11} {'first contact':>13} "
          f"{'50 concurrent':>14}")  # fmt: skip
    for label, version, form, result in rows:
        first = (
            f"{result['requests_first_contact']:.0f} / {result['round_trips_first_contact']:.0f}"
        )
        print(
            f"{label:16} {version:10} {form:6} {result['cold_ms']:8.1f} "
            f"{result['cold_first_contact_ms']:8.1f} {result['warm_us']:8.1f} "
            f"{result['requests']:8.0f} {result['round_trips']:11.0f} {first:>13} "
            f"{result['requests_50_concurrent']:14.0f}"
        )
    print("first contact: requests / round trips of a client new to the registry")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
