"""Every sigstore-conformance bundle-verify case, run through the CLI as the suite runs clients.

The suite passes ``--key`` when the case has ``key.pub``, otherwise the identity and issuer
(overridden by the case's ``identity``/``issuer`` files); ``--trusted-root`` only when the case
ships one (else the production root); the artifact once by path and once as ``sha256:<hex>``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.paths import fixture
from tests.unit.signatures.conftest import run_cli

pytestmark = pytest.mark.unit

CONFORMANCE = fixture("sigstore", "conformance")
EXPECTED: dict[str, Any] = json.loads((CONFORMANCE / "EXPECTED.json").read_text())
CASES: list[dict[str, Any]] = EXPECTED["cases"]


def _arguments(case: dict[str, Any], *, by_digest: bool) -> list[str]:
    folder = CONFORMANCE / "bundle-verify" / case["case"]
    artifact = (
        CONFORMANCE / "bundle-verify" / "a.txt"  # the suite's default artifact
        if case["artifact"] == "a.txt"
        else CONFORMANCE / "bundle-verify" / case["artifact"]
    )
    argv = ["sigstore", "verify-bundle", "--bundle", str(folder / "bundle.sigstore.json")]
    if (folder / "key.pub").exists():
        argv += ["--key", str(folder / "key.pub")]
    else:
        argv += [
            "--certificate-identity",
            case["identity"],
            "--certificate-oidc-issuer",
            case["issuer"],
        ]
    if (folder / "trusted_root.json").exists():
        argv += ["--trusted-root", str(folder / "trusted_root.json")]
    if by_digest:
        argv.append(f"sha256:{hashlib.sha256(Path(artifact).read_bytes()).hexdigest()}")
    else:
        argv.append(str(artifact))
    return argv


def test_the_case_list_is_complete_and_consistent() -> None:
    on_disk = {path.name for path in (CONFORMANCE / "bundle-verify").iterdir() if path.is_dir()}
    assert {case["case"] for case in CASES} == on_disk
    # MANIFEST.md speaks of 70 cases; the snapshot on disk and EXPECTED.json hold these 47.
    assert len(CASES) == 47
    assert sum(case["expected"] == "pass" for case in CASES) == 12
    for case in CASES:
        assert (case["expected"] == "fail") == case["case"].endswith("_fail"), case["case"]


@pytest.mark.parametrize("by_digest", [False, True], ids=["path", "digest"])
@pytest.mark.parametrize("case", CASES, ids=[case["case"] for case in CASES])
def test_conformance_case(case: dict[str, Any], by_digest: bool) -> None:
    result = run_cli(_arguments(case, by_digest=by_digest))
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    if case["expected"] == "pass":
        assert result.code == 0, output
        assert result.stdout.startswith("OK: "), output
        assert "signed by" in result.stdout
    else:
        # The suite only asks for a non-zero exit; Muster says 1 (rejected) or 2 (bad input).
        assert result.code in (1, 2), output
        assert output.strip(), "a failure must say why"
        assert len(output.strip().splitlines()) == 1, output


def test_wrong_key_case_is_refused_as_bad_input() -> None:
    # Its key.pub is corrupted on purpose: an unusable key is an error (2), not a verdict.
    case = next(case for case in CASES if case["case"] == "managed-key-wrong-key_fail")
    result = run_cli(_arguments(case, by_digest=False))
    assert result.code == 2
    assert "key" in result.stderr and "not a valid key" in result.stderr


def test_json_output_for_a_verified_and_a_rejected_bundle() -> None:
    happy = next(case for case in CASES if case["case"] == "happy-path-v0.3-new-mediaType")
    result = run_cli([*_arguments(happy, by_digest=True), "--format", "json"])
    document = json.loads(result.stdout)
    assert result.code == 0
    assert document["verified"] is True
    assert document["signer"].startswith(happy["identity"])
    assert document["integrated_time"] is not None

    mismatch = next(case for case in CASES if case["case"] == "signature-mismatch_fail")
    result = run_cli([*_arguments(mismatch, by_digest=True), "--format", "json"])
    document = json.loads(result.stdout)
    assert result.code == 1
    assert document["verified"] is False
    assert "Signature is invalid" in document["reason"]


def test_identity_mismatch_rejects_a_happy_bundle() -> None:
    happy = next(case for case in CASES if case["case"] == "happy-path-v0.2")
    argv = _arguments(happy, by_digest=False)
    argv[argv.index(happy["identity"])] = (
        "https://github.com/someone/else/.github/workflows/x.yml@refs/heads/main"
    )
    result = run_cli(argv)
    assert result.code == 1
    assert "expected https://github.com/someone/else" in result.stdout


def test_identity_regexp_must_match_in_full() -> None:
    happy = next(case for case in CASES if case["case"] == "happy-path-v0.2")
    argv = _arguments(happy, by_digest=False)
    position = argv.index("--certificate-identity")
    argv[position : position + 2] = ["--certificate-identity-regexp", "extremely-dangerous"]
    assert run_cli(argv).code == 1
    argv[position + 1] = r"https://github\.com/sigstore-conformance/.*"
    assert run_cli(argv).code == 0


def test_a_digest_that_is_also_a_file_is_read_as_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    happy = next(case for case in CASES if case["case"] == "happy-path-v0.1")
    argv = _arguments(happy, by_digest=True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / argv[-1]).write_bytes(b"not the artifact")
    assert run_cli(argv).code == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--key", "k.pub", "--certificate-identity", "x"], "not both"),
        (["--certificate-identity", "x"], "--certificate-oidc-issuer"),
        (["--certificate-oidc-issuer", "x"], "--certificate-identity"),
    ],
)
def test_bad_argument_combinations_are_errors(extra: list[str], message: str) -> None:
    result = run_cli(["sigstore", "verify-bundle", "--bundle", "b.json", *extra, "a.txt"])
    assert result.code == 2
    assert message in result.stderr


def test_unreadable_files_are_errors(tmp_path: Path) -> None:
    result = run_cli(
        [
            "sigstore",
            "verify-bundle",
            "--bundle",
            str(tmp_path / "missing.json"),
            "--certificate-identity",
            "a@b.c",
            "--certificate-oidc-issuer",
            "https://issuer",
            str(CONFORMANCE / "a.txt"),
        ]
    )
    assert result.code == 2
    assert "cannot read bundle" in result.stderr


def test_sigstore_without_an_action_prints_usage() -> None:
    result = run_cli(["sigstore"])
    assert result.code == 2
    assert "verify-bundle" in result.stdout + result.stderr
