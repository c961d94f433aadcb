"""The cost of one Notation check: cold and warm, against a cosign v3 key signature.

    python benchmarks/notation_check.py            # 20 cold runs per case
    python benchmarks/notation_check.py --runs 5

Everything is real: go-containerregistry's registry (the referrers API, which Notation signatures
need), one image per envelope format, pushed with crane, signed by the real cosign v3 (a
Sigstore bundle referrer) and by the Notary Project's own Go libraries (``notationsign``, a JWS
or COSE envelope referrer) under a test CA. Each image is verified by two policies: one trusting
the cosign key (the baseline), the other a ``notation`` authority whose trust store holds the
test CA, at the strict level. Both read the same referrers list. "Cold" is a fresh verifier
whose client knows the registry; "warm" the same verifier asked again (measured by
:func:`image_verification.measure`).
"""

from __future__ import annotations

import argparse
import asyncio
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
from tests import attesting, notary, paths, peers  # noqa: E402

from muster.images.rules import policies as imagepolicies  # noqa: E402
from muster.signatures.rules import bundles, formats, notation, notationformat  # noqa: E402

STORE = imagepolicies.Source("ConfigMap", "muster-system", "release-ca", "ca.crt")
IDENTITY = "x509.subject: C=US, ST=WA, O=Muster Tests"  # a subset of notary.SIGNER_SUBJECT
ENVELOPES = ("jws", "cose")


def policies(
    public: str, ca: bytes
) -> tuple[imagepolicies.CompiledPolicy, imagepolicies.CompiledPolicy]:
    """The cosign key policy (baseline) and the Notation policy trusting ``ca``, strict."""
    key = {"images": ["**"], "authorities": [{"name": "ci", "key": {"data": public}}]}
    signed = {
        "images": ["**"],
        "authorities": [
            {
                "name": "release-ca",
                "notation": {
                    "trustStores": [{"namespace": STORE.namespace, "name": STORE.name}],
                    "trustedIdentities": [IDENTITY],
                },
            }
        ],
    }
    return (
        imagepolicies.compile_policy("cosign", 1, imagepolicies.parse_spec(key), {}),
        imagepolicies.compile_policy("notation", 1, imagepolicies.parse_spec(signed), {STORE: ca}),
    )


def run(runs: int) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        key, public = attesting.generate_key(work, "ci")
        ca = notary.ca()
        signer = notary.signer(ca)
        cosign, signed = policies(public.read_text(), notary.pem(ca.certificate))
        (work / "referrers").mkdir()
        with peers.referrers_registry(work / "referrers") as registry:
            for envelope in ENVELOPES:
                repository = f"bench/notation-{envelope}"
                digest = peers.push_image(registry, repository, "v1", workdir=work)
                pinned = f"{registry.host}/{repository}@{digest}"
                image_verification.sign("v3", key, pinned)
                notary.sign(signer, work, envelope=envelope, reference=pinned)
                baseline = asyncio.run(
                    image_verification.measure(registry.host, pinned, cosign, runs)
                )
                checked = asyncio.run(
                    image_verification.measure(registry.host, pinned, signed, runs)
                )
                rows.append(("ggcr+referrers", envelope.upper(), baseline, checked))
    return rows


def _notation(name: str) -> formats.Found:
    media = notation.JWS_MEDIA_TYPE if name.startswith("jws") else notation.COSE_MEDIA_TYPE
    envelope = notation.Envelope(media, paths.fixture("notation", name).read_bytes())
    return formats.Found(notationformat.FORMAT, (envelope,))


def cpu(repeat: int = 200) -> dict[str, float]:
    """CPU of the judgement alone (no registry), in microseconds: the committed fixtures' cosign
    v3 bundle under a key policy, then their Notation envelopes (EC P-256 signed by the root;
    RSA 3072 through an intermediate) under the Notation policy trusting their CA."""
    sigstore, signed = paths.fixture("attestations"), paths.fixture("notation")
    cosign, trusted = policies(
        (sigstore / "alice.pub").read_text(), (signed / "ca.pem").read_bytes()
    )
    image = json.loads((sigstore / "image.json").read_text())["digest"]
    target = json.loads((signed / "target.json").read_text())["digest"]
    bundle = formats.Found(
        bundles.FORMAT, ((sigstore / "v3-signature.sigstore.json").read_bytes(),)
    )
    cases: dict[str, tuple[imagepolicies.CompiledPolicy, str, formats.Found]] = {
        "cosign v3 bundle (key)": (cosign, image, bundle),
        "Notation JWS (EC P-256)": (trusted, target, _notation("jws-ec.sig")),
        "Notation COSE (EC P-256)": (trusted, target, _notation("cose-ec.sig")),
        "Notation JWS (RSA, inter.)": (trusted, target, _notation("jws-rsa-intermediate.sig")),
        "Notation COSE (RSA, inter.)": (trusted, target, _notation("cose-rsa-intermediate.sig")),
    }
    timings = {}
    for name, (policy, digest, found) in cases.items():
        evidence = imagepolicies.Evidence(digest=digest, signatures=(found,))
        decision = imagepolicies.judge(policy, evidence)
        if not decision.passed:
            raise SystemExit(f"{name}: the fixtures did not verify: {decision.message}")
        started = time.perf_counter()
        for _ in range(repeat):
            imagepolicies.judge(policy, evidence)
        timings[name] = (time.perf_counter() - started) / repeat * 1e6
    return timings


def results(runs: int) -> dict[str, Any]:
    """Both measurements as JSON, for ``make bench`` (``benchmarks/run.py``)."""
    return {
        "cases": [
            {"registry": label, "envelope": envelope, "cosign": baseline, "notation": checked}
            for label, envelope, baseline, checked in run(runs)
        ],
        "judgement_us": cpu(),
    }


def table(measured: dict[str, Any]) -> str:
    lines = [
        f"{'registry':16} {'envelope':9} {'cold ms':>16} {'extra':>7} "
        f"{'warm us':>14} {'extra':>6} {'requests':>9} {'round trips':>11}"
    ]
    for case in measured["cases"]:
        baseline, checked = case["cosign"], case["notation"]
        lines.append(
            f"{case['registry']:16} {case['envelope']:9} "
            f"{baseline['cold_ms']:7.1f} ->{checked['cold_ms']:6.1f} "
            f"{checked['cold_ms'] - baseline['cold_ms']:+7.1f} "
            f"{baseline['warm_us']:5.1f} ->{checked['warm_us']:6.1f} "
            f"{checked['warm_us'] - baseline['warm_us']:+6.1f} "
            f"{baseline['requests']:3.0f} ->{checked['requests']:3.0f} "
            f"{baseline['round_trips']:4.0f} ->{checked['round_trips']:3.0f}"
        )
    lines.append("each cell: cosign v3 key signature -> Notation signature (medians)")
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
