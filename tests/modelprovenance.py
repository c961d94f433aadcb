"""Model provenance made by the real cosign: ``cosign attest-blob --hash <OMS digest>`` writes a
Sigstore bundle whose DSSE envelope holds an in-toto statement about the model's OMS root digest,
as a CI job attesting the model it trained would (no transparency log, key-based)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests import attesting, peers

SLSA_V1 = attesting.SLSA_V1
BUILDER = "https://github.com/acme/models/.github/workflows/train.yml@refs/heads/main"
SOURCE = "git+https://github.com/acme/models@refs/heads/main"


def slsa_v1(builder: str = BUILDER) -> dict[str, Any]:
    """SLSA provenance v1 as GitHub's attest-build-provenance writes it, for a training job."""
    predicate = attesting.slsa_v1(builder=builder)
    predicate["buildDefinition"]["externalParameters"]["workflow"]["repository"] = (
        "https://github.com/acme/models"
    )
    predicate["buildDefinition"]["resolvedDependencies"] = [
        {"uri": SOURCE, "digest": {"gitCommit": "0c1f4f3c8a1e2b7d9c6f0a5e1b3d7c9f2a4e6b8d"}},
        {
            "uri": "hf://datasets/acme/corpus@v3",
            "digest": {"sha256": "ab" * 32},
        },
    ]
    return predicate


def attest(
    key: Path,
    digest: str,
    workdir: Path,
    predicate: dict[str, Any] | None = None,
    *,
    kind: str = "slsaprovenance1",
    name: str = "model",
) -> str:
    """The bundle (JSON text) ``cosign attest-blob`` writes over the OMS ``digest``."""
    algorithm, _, hexdigest = digest.partition(":")
    assert algorithm == "sha256", digest
    text = json.dumps(predicate if predicate is not None else slsa_v1())
    tag = hashlib.sha256(f"{text}{key}{digest}{kind}{name}".encode()).hexdigest()[:12]
    predicate_file = workdir / f"predicate-{tag}.json"
    predicate_file.write_text(text)
    bundle = workdir / f"provenance-{tag}.sigstore.json"
    peers.run_tool(
        "cosign",
        "attest-blob",
        f"--key={key}",
        f"--type={kind}",
        f"--predicate={predicate_file}",
        f"--hash={hexdigest}",
        f"--bundle={bundle}",
        "--new-bundle-format",
        "--tlog-upload=false",
        "--use-signing-config=false",
        "-y",
        name,
        env=attesting.COSIGN_ENV,
    )
    return bundle.read_text()
