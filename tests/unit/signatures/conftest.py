"""Shared material for the signature tests: the real captures and a way to run the CLI."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from muster.signatures.rules import authorities, keys, trust
from tests.commandline import muster
from tests.paths import fixture

ALICE_DIGEST = "sha256:071bf7a986f1ca9cb2a1f0bc8392822a7777f90d58f2d2c6f271913e08de7c81"
KEYLESS_DIGEST = "sha256:31dc72a13a0c34b40eb95419d2b2fd67320c856baf3b72da518023ee8d370aee"


@dataclasses.dataclass(frozen=True)
class Capture:
    """A signature manifest and the blobs it points at, as the registry client will hand them."""

    manifest: dict[str, object]
    blobs: dict[str, bytes]


def _testimage() -> Path:
    return fixture("sigstore", "connaisseur", "securesystemsengineering", "testimage")


def _blobs() -> dict[str, bytes]:
    # Blob files are named "<digest>.json" by the mock registry they were captured for.
    return {
        path.name.removesuffix(".json"): path.read_bytes()
        for path in (_testimage() / "blobs").iterdir()
    }


def signature_manifest(digest: str) -> Capture:
    name = digest.replace(":", "-") + ".sig.json"
    manifest = json.loads((_testimage() / "manifests" / name).read_text())
    return Capture(manifest=manifest, blobs=_blobs())


@pytest.fixture
def alice_capture() -> Capture:
    return signature_manifest(ALICE_DIGEST)


@pytest.fixture
def keyless_capture() -> Capture:
    return signature_manifest(KEYLESS_DIGEST)


def connaisseur_key(name: str) -> keys.PublicKey:
    return keys.load(fixture("sigstore", "connaisseur", f"{name}.key").read_bytes())


@pytest.fixture(scope="session")
def keyless_trust() -> trust.TrustMaterial:
    """The keyless trust material of Connaisseur's 11_keyless.yaml (parsed here, not in core)."""
    config = yaml.safe_load(fixture("sigstore", "connaisseur", "11_keyless.yaml").read_text())
    host = config["host"]
    return trust.TrustMaterial.from_pem(
        fulcio=[host["fulcioCert"]], rekor=[host["rekorPubkey"]], ct=[host["ctLogPubkey"]]
    )


@pytest.fixture(scope="session")
def keyless_roots() -> dict[str, authorities.Identity]:
    """11_keyless.yaml's trust roots as Muster identities.

    Connaisseur's regexps are unanchored (Go MatchString); Muster full-matches, so the same
    intent reads ``.*(?:philipp).*``.
    """
    config = yaml.safe_load(fixture("sigstore", "connaisseur", "11_keyless.yaml").read_text())
    identities = {}
    for root in config["trustRoots"]:
        keyless = root["keyless"]
        identities[root["name"]] = authorities.Identity(
            issuer_regexp=f".*(?:{keyless['issuerRegex']}).*",
            subject=keyless.get("subject"),
            subject_regexp=(
                f".*(?:{keyless['subjectRegex']}).*" if "subjectRegex" in keyless else None
            ),
        )
    return identities


@dataclasses.dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(argv: Sequence[str]) -> CliResult:
    """Run ``muster <argv>`` through the real entry point, capturing the output."""
    code, stdout, stderr = muster(*argv)
    return CliResult(code=code, stdout=stdout, stderr=stderr)
