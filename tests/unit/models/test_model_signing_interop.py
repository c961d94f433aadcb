# mypy: disable-error-code="no-untyped-call"
# model_signing's public constructors are untyped.
"""Models signed here with the real model_signing package verify in Muster, bit for bit."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path

import model_signing
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from muster.models import files as modelfiles
from muster.signatures import oms as modelsigs
from muster.signatures.rules import oms

pytestmark = pytest.mark.unit

KeyWriter = Callable[..., tuple[Path, Path]]


def sign(
    model: Path,
    signature: Path,
    private_key: Path,
    hashing: model_signing.hashing.Config | None = None,
) -> dict[str, object]:
    config = model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key)
    if hashing is not None:
        config.set_hashing_config(hashing)
    config.sign(model, signature)
    bundle = json.loads(signature.read_text())
    statement: dict[str, object] = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return statement


def subject_digest(statement: dict[str, object]) -> str:
    subjects = statement["subject"]
    assert isinstance(subjects, list)
    return "sha256:" + str(subjects[0]["digest"]["sha256"])


def verify(model: Path, signature: Path, public_key: Path) -> modelfiles.Outcome:
    pem = public_key.read_bytes()
    return modelfiles.verify_signature(
        model, signature, lambda bundle: modelsigs.verify_with_key(bundle, pem)
    )


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_model_signed_by_model_signing_verifies_in_muster(
    model_dir: Path, tmp_path: Path, write_key: KeyWriter, curve: ec.EllipticCurve
) -> None:
    private, public = write_key(curve=curve)
    statement = sign(model_dir, tmp_path / "model.sig", private)
    outcome = verify(model_dir, tmp_path / "model.sig", public)
    assert outcome.passes, outcome.differences
    assert outcome.measured.digest == subject_digest(statement)
    # Muster's digest of the model on its own is the number model_signing signed.
    assert modelfiles.measure(model_dir).digest == subject_digest(statement)
    predicate = statement["predicate"]
    assert isinstance(predicate, dict)
    signed_names = [r["name"] for r in predicate["resources"]]
    assert signed_names == [r.name for r in outcome.measured.resources]
    assert ".git/HEAD" not in signed_names and ".gitattributes" not in signed_names


def test_muster_statement_equals_model_signing_statement(
    model_dir: Path, tmp_path: Path, write_key: KeyWriter
) -> None:
    private, _ = write_key()
    statement = sign(model_dir, tmp_path / "model.sig", private)
    ignored = statement["predicate"]["serialization"]["ignore_paths"]  # type: ignore[index]
    serialization = oms.Serialization(ignore_paths=tuple(ignored))
    mine = modelfiles.measure(model_dir, serialization)
    assert oms.build_statement(mine) == statement


def test_signature_inside_the_model_is_ignored_like_model_signing_cli(
    model_dir: Path, write_key: KeyWriter
) -> None:
    private, public = write_key()
    hashing = model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"])
    statement = sign(model_dir, model_dir / "model.sig", private, hashing)
    outcome = verify(model_dir, model_dir / "model.sig", public)
    assert outcome.passes
    assert outcome.measured.digest == subject_digest(statement)


def test_sharded_signature_verifies(model_dir: Path, tmp_path: Path, write_key: KeyWriter) -> None:
    private, public = write_key()
    hashing = model_signing.hashing.Config().use_shard_serialization(shard_size=4096)
    statement = sign(model_dir, tmp_path / "model.sig", private, hashing)
    outcome = verify(model_dir, tmp_path / "model.sig", public)
    assert outcome.passes, outcome.differences
    assert outcome.measured.digest == subject_digest(statement)
    assert "weights/shard-1.bin:12288:16384" in [r.name for r in outcome.measured.resources]


def test_single_file_model(tmp_path: Path, write_key: KeyWriter) -> None:
    private, public = write_key()
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(os.urandom(3000))
    statement = sign(weights, tmp_path / "model.sig", private)
    outcome = verify(weights, tmp_path / "model.sig", public)
    assert outcome.passes
    assert [r.name for r in outcome.measured.resources] == ["."]
    assert modelfiles.measure(weights).digest == subject_digest(statement)


@pytest.fixture
def signed(model_dir: Path, tmp_path: Path, write_key: KeyWriter) -> tuple[Path, Path, Path]:
    private, public = write_key()
    sign(model_dir, tmp_path / "model.sig", private)
    return model_dir, tmp_path / "model.sig", public


def test_flipped_byte_fails_naming_the_file(signed: tuple[Path, Path, Path]) -> None:
    model, signature, public = signed
    target = model / "weights" / "shard-2.bin"
    data = bytearray(target.read_bytes())
    data[4321] ^= 0x80
    target.write_bytes(bytes(data))
    outcome = verify(model, signature, public)
    assert not outcome.passes
    assert [d.message.split(":")[0] for d in outcome.differences] == ["weights/shard-2.bin"]
    assert outcome.differences[0].message.startswith("weights/shard-2.bin: content changed")


def test_added_file_fails(signed: tuple[Path, Path, Path]) -> None:
    model, signature, public = signed
    (model / "weights" / "backdoor.pt").write_bytes(b"\x80\x04.")
    outcome = verify(model, signature, public)
    assert [d.message for d in outcome.differences] == [
        "weights/backdoor.pt: extra file (in the model, but not signed)"
    ]


def test_removed_file_fails(signed: tuple[Path, Path, Path]) -> None:
    model, signature, public = signed
    (model / "config.json").unlink()
    outcome = verify(model, signature, public)
    assert [d.message for d in outcome.differences] == [
        "config.json: missing (signed, but not in the model)"
    ]


def test_symlink_out_of_the_directory_fails(signed: tuple[Path, Path, Path]) -> None:
    model, signature, public = signed
    (model / "weights" / "shard-2.bin").unlink()
    (model / "weights" / "shard-2.bin").symlink_to("/etc/hostname")
    with pytest.raises(modelfiles.ModelError, match=r"weights/shard-2.bin: symlink escapes"):
        verify(model, signature, public)


def test_signature_by_another_key_fails(
    signed: tuple[Path, Path, Path], write_key: KeyWriter
) -> None:
    model, signature, _ = signed
    _, other = write_key("other")
    with pytest.raises(modelsigs.SignatureError, match="different key"):
        verify(model, signature, other)


def test_tampered_statement_fails(signed: tuple[Path, Path, Path]) -> None:
    model, signature, public = signed
    bundle = json.loads(signature.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"].pop()
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    signature.write_text(json.dumps(bundle))
    with pytest.raises(modelsigs.SignatureError, match="does not verify"):
        verify(model, signature, public)


def test_model_signing_accepts_what_muster_accepts(signed: tuple[Path, Path, Path]) -> None:
    model, signature, public = signed
    assert verify(model, signature, public).passes
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public).verify(
        model, signature
    )
