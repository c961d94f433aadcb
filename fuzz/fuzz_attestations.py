"""In-toto attestations and their CEL conditions: ``attestations.verify`` over a cosign ``.att``
DSSE envelope, and ``conditions.compile_condition`` and the judgement of a condition over the
statement the envelope carries.

Input layout: ``EXPRESSION \\x00 ENVELOPE`` (without a NUL the whole input is the envelope and a
fixed condition is judged). Documented errors: ``proofs.Rejected`` for envelopes and
statements, ``conditions.InvalidCondition`` for expressions. The authority's key was generated
here and signed nothing: an envelope it verifies is a crash. Judging a compiled condition over
any statement must answer (true, false or why not), never raise.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Iterator

import _fuzzing
import atheris  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric import ec

with atheris.instrument_imports(include=["muster"]):
    from muster.signatures.rules import attestations, authorities, conditions, proofs

_DIGEST = "sha256:" + "5" * 64
_AUTHORITY = authorities.KeyAuthority("fuzz", ec.generate_private_key(ec.SECP256R1()).public_key())
_NOW = datetime.datetime(2026, 12, 6, tzinfo=datetime.UTC)
_DEFAULT = 'predicate.runDetails.builder.id.startsWith("https://github.com/")'


def _envelope(statement: dict[str, object]) -> bytes:
    payload = base64.b64encode(json.dumps(statement).encode()).decode()
    document = {
        "payloadType": "application/vnd.in-toto+json",
        "payload": payload,
        "signatures": [{"keyid": "", "sig": "MEUCIQ=="}],
    }
    return json.dumps(document).encode()


def seeds() -> Iterator[bytes]:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "app", "digest": {"sha256": _DIGEST[7:]}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"runDetails": {"builder": {"id": "https://github.com/acme/ci"}}},
    }
    yield _envelope(statement)
    yield b"predicate.components.exists(c, c.name in ['xz'])\x00" + _envelope(statement)
    yield b'timestamp(predicate.a) > now - duration("24h")\x00' + _envelope(statement)


def _statement(raw: bytes) -> attestations.Statement | None:
    try:
        document = json.loads(raw)
        payload_type, payload = document["payloadType"], base64.b64decode(document["payload"])
        return attestations.parse_statement(payload_type, payload)
    except (ValueError, KeyError, TypeError, RecursionError):
        return None  # the statement's own errors are Rejected, a ValueError


def test_one_input(data: bytes) -> None:
    expression, separator, envelope = data.partition(b"\x00")
    if not separator:
        expression, envelope = _DEFAULT.encode(), data
    item = attestations.LegacyAttestation(index=0, envelope=envelope, annotations={})
    try:
        attestations.verify(item, digest=_DIGEST, authority=_AUTHORITY)
    except proofs.Rejected:
        pass
    else:
        raise _fuzzing.Inconsistent("an envelope verified with a key that signed nothing")
    statement = _statement(envelope)
    if statement is None:
        return
    try:
        condition = conditions.compile_condition("fuzz", expression.decode("utf-8", "replace"))
    except conditions.InvalidCondition:
        return
    try:
        context = conditions._context(statement, _NOW)
    except (ValueError, TypeError, OverflowError, RecursionError):
        return  # judge_one reports such a statement as one CEL cannot read
    failure = conditions._failure(condition, context)
    _fuzzing.check(failure is None or failure.startswith("condition 'fuzz'"), str(failure))


if __name__ == "__main__":
    _fuzzing.main(test_one_input, seeds)
