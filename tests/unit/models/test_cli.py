# mypy: disable-error-code="no-untyped-call"
# model_signing's public constructors are untyped.
"""``muster model digest|verify|scan``: output and exit codes (0 pass, 1 no, 2 bad input)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import model_signing
import pytest

from muster import cli
from tests.paths import fixture
from tests.unit.models.conftest import transparency

pytestmark = pytest.mark.unit

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def invoke(*argv: str | Path) -> tuple[int, str, str]:
        code = cli.main(["model", *map(str, argv)])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def signed(model_dir: Path, tmp_path: Path, write_key: Callable[..., tuple[Path, Path]]) -> Path:
    private, public = write_key()
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).sign(
        model_dir, tmp_path / "model.sig"
    )
    return public


def test_digest_prints_the_oms_root_digest(run: Run, model_dir: Path) -> None:
    code, out, _ = run("digest", model_dir)
    assert code == 0
    expected = model_signing.hashing.Config().hash(model_dir)
    payload = model_signing._signing.signing.Payload(expected)
    assert out.strip() == "sha256:" + payload.statement.pb.subject[0].digest["sha256"]


def test_digest_json(run: Run, model_dir: Path) -> None:
    code, out, _ = run("digest", model_dir, "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["digest"].startswith("sha256:") and data["model"] == "tiny-model"
    assert data["resources"][0]["name"] == ".hidden"


def test_digest_of_a_missing_path_exits_2(run: Run, tmp_path: Path) -> None:
    code, _, err = run("digest", tmp_path / "nope")
    assert code == 2
    assert err.startswith("muster: error: ") and "nope: cannot read" in err
    assert "Traceback" not in err


def test_verify_digest(run: Run, model_dir: Path) -> None:
    _, digest, _ = run("digest", model_dir)
    assert run("verify", model_dir, "--digest", digest.strip())[0] == 0
    (model_dir / "config.json").write_text("{}")
    code, out, _ = run("verify", model_dir, "--digest", digest.strip())
    assert code == 1 and out.startswith("FAIL")
    assert run("verify", model_dir, "--digest", "sha256:xyz")[0] == 2


def test_verify_signature_with_key(run: Run, model_dir: Path, tmp_path: Path, signed: Path) -> None:
    code, out, _ = run("verify", model_dir, "--signature", tmp_path / "model.sig", "--key", signed)
    assert code == 0 and out.startswith("OK ")
    (model_dir / "weights" / "shard-1.bin").write_bytes(b"evil")
    (model_dir / "new.py").write_text("import os")
    code, out, _ = run("verify", model_dir, "--signature", tmp_path / "model.sig", "--key", signed)
    assert code == 1
    assert "weights/shard-1.bin: content changed" in out
    assert "new.py: extra file" in out


def test_verify_signature_json(run: Run, model_dir: Path, tmp_path: Path, signed: Path) -> None:
    (model_dir / "empty").unlink()
    code, out, _ = run(
        "verify",
        model_dir,
        "--signature",
        tmp_path / "model.sig",
        "--key",
        signed,
        "--format",
        "json",
    )
    data = json.loads(out)
    assert code == 1 and data["passes"] is False
    assert data["differences"] == [
        {
            "kind": "missing",
            "name": "empty",
            "expected": data["differences"][0]["expected"],
            "actual": None,
        }
    ]


def test_verify_with_wrong_key_exits_1(
    run: Run,
    model_dir: Path,
    tmp_path: Path,
    signed: Path,
    write_key: Callable[..., tuple[Path, Path]],
) -> None:
    _, other = write_key("other")
    code, out, _ = run("verify", model_dir, "--signature", tmp_path / "model.sig", "--key", other)
    assert code == 1 and "different key" in out


def test_verify_input_errors_exit_2(
    run: Run, model_dir: Path, tmp_path: Path, signed: Path
) -> None:
    sig = tmp_path / "model.sig"
    assert run("verify", model_dir, "--signature", tmp_path / "absent.sig", "--key", signed)[0] == 2
    assert run("verify", model_dir, "--signature", sig)[0] == 2  # no key material
    assert (
        run(
            "verify", model_dir, "--signature", sig, "--key", signed, "--certificate-identity", "x"
        )[0]
        == 2
    )
    assert run("verify", model_dir, "--signature", sig, "--certificate-identity", "x")[0] == 2
    assert run("verify", model_dir, "--signature", sig, "--key", sig)[0] == 2  # not a PEM key
    assert run("verify", model_dir)[0] == 2  # argparse: neither --digest nor --signature


def test_verify_fixture_certificate_and_keyless(run: Run) -> None:
    folder = transparency("v1.1.0-certificate")
    ca = transparency("keys", "certificate", "ca-cert.pem")
    assert (
        run("verify", folder, "--signature", folder / "model.sig", "--certificate-chain", ca)[0]
        == 0
    )
    keyless = transparency("v1.0.0-sigstore")
    args = ["verify", keyless, "--signature", keyless / "model.sig", "--certificate-oidc-issuer"]
    issuer = "https://sigstore.verify.ibm.com/oauth2"
    assert run(*args, issuer, "--certificate-identity", "stefanb@us.ibm.com")[0] == 0
    code, out, _ = run(*args, issuer, "--certificate-identity", "mallory@example.com")
    assert code == 1 and "SANs do not match" in out


def test_scan(run: Run, tmp_path: Path) -> None:
    assert run("scan", fixture("models", "safetensors"))[0] == 0
    code, out, _ = run("scan", fixture("pickles", "picklescan", "data", "malicious2_v4.pkl"))
    assert code == 1 and "dangerous import posix.system" in out
    code, out, _ = run("scan", fixture("pickles"), "--format", "json")
    data = json.loads(out)
    assert code == 1 and data["passes"] is False
    kinds = {f["path"]: f["kind"] for f in data["files"]}
    assert kinds["picklescan/data/benign0_v4.pkl"] == "safe"
    assert kinds["modelscan/password_protected.zip"] == "unscannable"
    assert run("scan", tmp_path / "absent")[0] == 2


def test_ignore_paths_like_model_signing_cli(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Upstream's scripts pass --ignore-paths <dir>/ignore-me, relative to the working dir.
    monkeypatch.chdir(transparency())
    folder = "v1.1.0-elliptic-key"
    key = "keys/certificate/signing-key-pub.pem"
    args = ["verify", folder, "--signature", f"{folder}/model.sig", "--key", key]
    assert run(*args, "--ignore-paths", f"{folder}/ignore-me")[0] == 0
    # A path relative to the model works too; an unknown extra file must be ignored to pass.
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "README.md").write_text("notes")
    args = ["verify", str(copy), "--signature", str(copy / "model.sig"), "--key", key]
    assert run(*args)[0] == 1
    assert run(*args, "--ignore-paths", "README.md")[0] == 0
    assert run(*args, "--ignore-paths", copy / "README.md")[0] == 0


def test_digest_ignore_paths(run: Run, model_dir: Path) -> None:
    _, before, _ = run("digest", model_dir)
    (model_dir / "notes.txt").write_text("x")
    _, after, _ = run("digest", model_dir)
    _, ignored, _ = run("digest", model_dir, "--ignore-paths", "notes.txt")
    assert before == ignored != after
