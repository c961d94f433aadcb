"""OMS (OpenSSF model signing) statements: ``oms.statement_from_payload``.

Documented error: ``oms.OmsError``. An accepted v1.0 statement's subject digest is the root
digest of the resources it lists, and no resource is listed twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import _fuzzing
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["muster"]):
    from muster.signatures.rules import oms


def seeds() -> Iterator[bytes]:
    resources = [
        oms.Resource("model.safetensors", "sha256", "a" * 64),
        oms.Resource("config.json", "sha256", "b" * 64),
    ]
    for serialization in (
        oms.Serialization(method="files", hash_type="sha256"),
        oms.Serialization(method="shards", hash_type="sha256", shard_size=1000),
        oms.Serialization(method="files", hash_type="blake2b"),
        oms.Serialization(method="files", hash_type="blake3"),
    ):
        listed = resources
        if serialization.method == "shards":
            listed = [oms.Resource(f"{r.name}:0:1000", "sha256", r.digest) for r in resources]
        manifest = oms.Manifest.build("model", listed, serialization)
        yield json.dumps(oms.build_statement(manifest)).encode()


def test_one_input(data: bytes) -> None:
    try:
        manifest = oms.statement_from_payload(oms.PAYLOAD_TYPE, data)
    except oms.OmsError as error:
        _fuzzing.check(bool(str(error)), "OmsError without a message")
        return
    names = [r.name for r in manifest.resources]
    _fuzzing.check(len(set(names)) == len(names), "a resource is listed twice")
    statement = json.loads(data)
    if statement.get("predicateType") == oms.PREDICATE_TYPE:
        # The subject digest covers the resources in the order they were signed.
        signed = [
            oms.Resource(item["name"], item["algorithm"], item["digest"].lower())
            for item in statement["predicate"]["resources"]
        ]
        subject = statement["subject"][0]["digest"]["sha256"].lower()
        _fuzzing.check(
            oms.root_digest(signed) == subject,
            "accepted a statement whose resources do not hash to its subject",
        )
        _fuzzing.check(
            sorted(signed, key=lambda r: r.name)
            == sorted(manifest.resources, key=lambda r: r.name),
            "the manifest's resources differ from the signed ones",
        )


if __name__ == "__main__":
    _fuzzing.main(test_one_input, seeds)
