"""The extra cost of one attestation check: cold and warm, against signature verification alone.

    python benchmarks/attestation_check.py            # 20 cold runs per case
    python benchmarks/attestation_check.py --runs 5

Everything is real: Debian's docker-registry (no referrers API: cosign v3 uses the tag
fallback) and go-containerregistry's registry (referrers API); one image per case, pushed with
crane, signed by the real cosign v3 and attested (SLSA provenance v1) by the real cosign v2
(``.att``) or v3 (a bundle). Each image is verified by two policies trusting the same key: one
asks for the signature only, the other also for the provenance with three CEL conditions
(builder, source, age). The difference is what one attestation check costs. "Cold" is a fresh
verifier whose client knows the registry; "warm" the same verifier asked again (measured by
:func:`image_verification.measure`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]  # the real peers are started by the test suite's helpers

import image_verification  # noqa: E402
from tests import attesting, paths, peers  # noqa: E402

from muster.images.rules import policies as imagepolicies  # noqa: E402
from muster.signatures.rules import attestations, bundles, formats  # noqa: E402

CONDITIONS = [
    {"name": "builder", "expression": f'predicate.runDetails.builder.id == "{attesting.BUILDER}"'},
    {
        "name": "source",
        "expression": "predicate.buildDefinition.resolvedDependencies.exists(d, "
        'd.uri.startsWith("git+https://github.com/acme/"))',
    },
    {
        "name": "age",
        "expression": 'timestamp(predicate.runDetails.metadata.startedOn) > now - duration("720h")',
    },
]


def policies(public: str) -> tuple[imagepolicies.CompiledPolicy, imagepolicies.CompiledPolicy]:
    key = {"key": {"data": public}}
    plain = {"images": ["**"], "authorities": [key]}
    attested = plain | {
        "attestations": [
            {
                "name": "provenance",
                "predicateType": "slsaprovenance1",
                "authorities": [key],
                "conditions": CONDITIONS,
            }
        ]
    }
    return (
        imagepolicies.compile_policy("plain", 1, imagepolicies.parse_spec(plain), {}),
        imagepolicies.compile_policy("attested", 1, imagepolicies.parse_spec(attested), {}),
    )


def run(runs: int) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        key, public = attesting.generate_key(work, "ci")
        plain, attested = policies(public.read_text())
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        provenance = attesting.slsa_v1(started=started)
        (work / "plain").mkdir()
        (work / "referrers").mkdir()
        with (
            peers.registry(work / "plain") as docker,
            peers.referrers_registry(work / "referrers") as ggcr,
        ):
            for registry, label in ((docker, "docker-registry"), (ggcr, "ggcr+referrers")):
                for version in (2, 3):
                    repository = f"bench/att-v{version}"
                    digest = peers.push_image(registry, repository, "v1", workdir=work)
                    pinned = f"{registry.host}/{repository}@{digest}"
                    image_verification.sign("v3", key, pinned)
                    attest = attesting.attest_v2 if version == 2 else attesting.attest_v3
                    attest(key, pinned, "slsaprovenance1", provenance, work)
                    alone = asyncio.run(
                        image_verification.measure(registry.host, pinned, plain, runs)
                    )
                    both = asyncio.run(
                        image_verification.measure(registry.host, pinned, attested, runs)
                    )
                    rows.append((label, f"cosign v{version}", alone, both))
    return rows


def cpu(repeat: int = 200) -> dict[str, float]:
    """CPU of the judgement alone (no registry), in microseconds: the committed fixtures' image
    signature, then also its SLSA provenance by cosign v2 (a DSSE check and three conditions)
    and by cosign v3 (a bundle)."""
    folder = paths.fixture("attestations")
    public = (folder / "alice.pub").read_text()
    plain, attested = policies(public)
    digest = json.loads((folder / "image.json").read_text())["digest"]
    signature = formats.Found(
        bundles.FORMAT, ((folder / "v3-signature.sigstore.json").read_bytes(),)
    )
    manifest = json.loads((folder / "v2-att-manifest.json").read_text())
    legacy = attestations.LegacyAttestation(
        0, (folder / "v2-att-layer1.dsse.json").read_bytes(), manifest["layers"][0]["annotations"]
    )
    bundle = attestations.BundleAttestation((folder / "v3-slsa-v1.sigstore.json").read_bytes())
    now = datetime.datetime(2026, 12, 6, tzinfo=datetime.UTC)
    cases: dict[str, tuple[imagepolicies.CompiledPolicy, tuple[attestations.Item, ...]]] = {
        "signature only": (plain, ()),
        "+ provenance (cosign v2)": (attested, (legacy,)),
        "+ provenance (cosign v3)": (attested, (bundle,)),
    }
    timings = {}
    for name, (policy, found) in cases.items():
        evidence = imagepolicies.Evidence(
            digest=digest, signatures=(signature,), attestations=found, now=now
        )
        if not imagepolicies.judge(policy, evidence).passed:
            raise SystemExit(f"{name}: the fixtures did not verify")
        started = time.perf_counter()
        for _ in range(repeat):
            imagepolicies.judge(policy, evidence)
        timings[name] = (time.perf_counter() - started) / repeat * 1e6
    return timings


def results(runs: int) -> dict[str, Any]:
    """Both measurements as JSON, for ``make bench`` (``benchmarks/run.py``)."""
    return {
        "cases": [
            {"registry": label, "attestation": version, "alone": alone, "attested": both}
            for label, version, alone, both in run(runs)
        ],
        "judgement_us": cpu(),
    }


def table(measured: dict[str, Any]) -> str:
    lines = [
        f"{'registry':16} {'attestation':12} {'cold ms':>16} {'extra':>7} "
        f"{'warm us':>14} {'extra':>6} {'requests':>9} {'round trips':>11}"
    ]
    for case in measured["cases"]:
        alone, both = case["alone"], case["attested"]
        lines.append(
            f"{case['registry']:16} {case['attestation']:12} "
            f"{alone['cold_ms']:7.1f} ->{both['cold_ms']:6.1f} "
            f"{both['cold_ms'] - alone['cold_ms']:+7.1f} "
            f"{alone['warm_us']:5.1f} ->{both['warm_us']:6.1f} "
            f"{both['warm_us'] - alone['warm_us']:+6.1f} "
            f"{alone['requests']:3.0f} ->{both['requests']:3.0f} "
            f"{alone['round_trips']:4.0f} ->{both['round_trips']:3.0f}"
        )
    lines.append("each cell: signature only -> signature and one attestation (medians)")
    lines.append(f"{'judgement CPU (no registry)':28} {'us':>8}")
    for name, micros in measured["judgement_us"].items():
        lines.append(f"{name:28} {micros:8.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    print(table(results(args.runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
