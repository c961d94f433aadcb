# mypy: disable-error-code="no-untyped-call"
# model_signing's public constructors are untyped.
"""Dataset directories signed with the real ``model_signing`` library, as a data team signs them.

A dataset is files, not weights, but OpenSSF Model Signing hashes any directory the same way:
these helpers write a small corpus (nested splits, a manifest, an empty file), sign it with an
elliptic-curve key and return the signed OMS root digest.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import model_signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["key_pair", "make_dataset", "sign"]


def make_dataset(root: Path) -> Path:
    """A small dataset: train/test splits in nested folders, a card, an empty marker file."""
    (root / "data" / "train").mkdir(parents=True)
    (root / "data" / "test").mkdir(parents=True)
    for split, rows in (("train", 300), ("test", 40)):
        lines = "".join(f'{{"id": {i}, "text": "row {i} of {split}"}}\n' for i in range(rows))
        (root / "data" / split / "part-0000.jsonl").write_text(lines)
    (root / "data" / "train" / "part-0001.parquet").write_bytes(bytes(range(256)) * 40)
    (root / "README.md").write_text("# corpus\nlicense: CC-BY-4.0\n")
    (root / "_SUCCESS").write_bytes(b"")
    return root


def key_pair(
    directory: Path, name: str, curve: ec.EllipticCurve | None = None
) -> tuple[Path, Path]:
    """A fresh EC key pair (P-256 unless ``curve``) as PEM files: (private, public)."""
    key = ec.generate_private_key(curve or ec.SECP256R1())
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def sign(
    dataset: Path,
    signature: Path,
    private_key: Path,
    hashing: model_signing.hashing.Config | None = None,
) -> str:
    """Sign ``dataset`` into ``signature`` with model_signing; returns the signed root digest."""
    config = model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key)
    if hashing is not None:
        config.set_hashing_config(hashing)
    config.sign(dataset, signature)
    bundle = json.loads(signature.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return "sha256:" + str(statement["subject"][0]["digest"]["sha256"])
