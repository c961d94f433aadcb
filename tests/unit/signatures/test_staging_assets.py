"""sigstore-python's staging bundles, verified with the staging trusted root Muster ships.

The expected outcomes are those of sigstore-python's own unit tests (see the fixtures' MANIFEST).
"""

from __future__ import annotations

import pytest

from tests.paths import fixture
from tests.unit.signatures.conftest import run_cli

pytestmark = pytest.mark.unit

GITHUB = "https://github.com/login/oauth"
A_TXT = "sha256:a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf"

# (bundle, artifact file or digest, identity, issuer, expected exit code, message part)
CASES = [
    ("bundle.txt.sigstore", "bundle.txt", "a@tny.town", GITHUB, 0, "signed by a@tny.town"),
    ("bundle_v3.txt.sigstore", "bundle_v3.txt", "william@yossarian.net", GITHUB, 0, "OK"),
    ("bundle_v3_alt.txt.sigstore", "bundle_v3_alt.txt", "william@yossarian.net", GITHUB, 0, "OK"),
    ("staging-rekor-v2.txt.sigstore.json", "staging-rekor-v2.txt", "jku@goto.fi", GITHUB, 0, "OK"),
    ("a.dsse.staging-rekor-v2.txt.sigstore.json", A_TXT, ".*", ".*", 0, "OK"),
    (
        "tsa/bundle.txt.sigstore",
        "tsa/bundle.txt",
        "alexis.challande@trailofbits.com",
        "https://accounts.google.com",
        0,
        "OK",
    ),
    ("bundle.txt.sigstore", "bundle.txt", "someone@else.example", GITHUB, 1, "expected someone"),
    (
        "bundle_cve_2022_36056.txt.sigstore",
        "bundle_cve_2022_36056.txt",
        ".*",
        ".*",
        1,
        "inconsistent",
    ),
    ("tsa/bundle.duplicate.sigstore", "tsa/bundle.txt", ".*", ".*", 1, "duplicate timestamp"),
    ("tsa/bundle.many_timestamp.sigstore", "tsa/bundle.txt", ".*", ".*", 1, "too many"),
    ("tsa/bundle.txt.late_timestamp.sigstore", "tsa/bundle.txt", ".*", ".*", 1, "not valid"),
    ("bundle_no_checkpoint.txt.sigstore", "bundle_no_checkpoint.txt", ".*", ".*", 1, "checkpoint"),
    ("bundle_no_log_entry.txt.sigstore", "bundle_no_log_entry.txt", ".*", ".*", 1, "log entry"),
    (
        "bundle_v3_no_signed_time.txt.sigstore.json",
        "bundle_v3_no_signed_time.txt",
        ".*",
        ".*",
        1,
        "inclusion promise or signed timestamp",
    ),
    (
        "bundle_invalid_version.txt.sigstore",
        "bundle_invalid_version.txt",
        ".*",
        ".*",
        1,
        "mediaType",
    ),
    ("bundle_no_cert_v1.txt.sigstore", "bundle_no_cert_v1.txt", ".*", ".*", 1, "certificate chain"),
]


@pytest.mark.parametrize(
    ("bundle", "artifact", "identity", "issuer", "code", "message"),
    CASES,
    ids=[f"{case[0]}-{case[4]}" for case in CASES],
)
def test_staging_bundle(
    bundle: str, artifact: str, identity: str, issuer: str, code: int, message: str
) -> None:
    assets = fixture("sigstore", "sigstore-python", "assets")
    exact = "*" not in identity
    argv = [
        "sigstore",
        "verify-bundle",
        "--staging",
        "--bundle",
        str(assets / bundle),
        "--certificate-identity" if exact else "--certificate-identity-regexp",
        identity,
        "--certificate-oidc-issuer" if exact else "--certificate-oidc-issuer-regexp",
        issuer,
        artifact if artifact.startswith("sha256:") else str(assets / artifact),
    ]
    result = run_cli(argv)
    assert result.code == code, result.stdout + result.stderr
    assert message in result.stdout
