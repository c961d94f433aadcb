"""In-toto attestations on images, in both formats cosign writes, verified to one statement.

cosign v2 (``cosign attest``) appends a layer to the ``sha256-<hex>.att`` manifest beside the
image: the layer blob is a DSSE envelope (``application/vnd.dsse.envelope.v1+json``) whose
payload is an in-toto statement, and the layer's ``predicateType`` annotation names its
predicate. cosign v3 attaches a Sigstore bundle holding the DSSE envelope as an OCI referrer
(verified by :mod:`muster.signatures.rules.bundles`). Either way an attestation counts only
when an authority of the policy signed it and its statement's subject names the admitted
digest: a statement about another image proves nothing about this one.

Pure: the fetcher (:mod:`muster.signatures.attestationsigs`) hands over what the registry held;
the predicate is judged by the image policy's conditions, not here.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Mapping
from typing import Any, TypeAlias

from muster.signatures.rules import authorities, bundles, cosign, keys, proofs

__all__ = [
    "DSSE_MEDIA_TYPE",
    "FORMAT_LEGACY",
    "MAX_ENVELOPE_BYTES",
    "PREDICATE_ANNOTATION",
    "PREDICATE_TYPES",
    "Attested",
    "BundleAttestation",
    "Item",
    "LegacyAttestation",
    "Statement",
    "parse_statement",
    "predicate_type_of",
    "verify",
]

DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
PREDICATE_ANNOTATION = "predicateType"
FORMAT_LEGACY = "cosign-attestation"
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024
_MAX_SIGNATURES = 8
STATEMENT_TYPES = frozenset(
    {"https://in-toto.io/Statement/v0.1", "https://in-toto.io/Statement/v1"}
)

# cosign's ``--type`` names and the predicate types they write, so a policy may say either.
PREDICATE_TYPES: Mapping[str, str] = {
    "slsaprovenance": "https://slsa.dev/provenance/v0.2",
    "slsaprovenance02": "https://slsa.dev/provenance/v0.2",
    "slsaprovenance1": "https://slsa.dev/provenance/v1",
    "spdx": "https://spdx.dev/Document",
    "spdxjson": "https://spdx.dev/Document",
    "cyclonedx": "https://cyclonedx.org/bom",
    "vuln": "https://cosign.sigstore.dev/attestation/vuln/v1",
    "openvex": "https://openvex.dev/ns",
    "custom": "https://cosign.sigstore.dev/attestation/v1",
}


def predicate_type_of(name: str) -> str:
    """The predicate type a policy means: a cosign ``--type`` name or the type itself."""
    return PREDICATE_TYPES.get(name, name)


@dataclasses.dataclass(frozen=True, slots=True)
class Statement:
    """A verified in-toto statement: what the CEL conditions see."""

    predicate_type: str
    document: Mapping[str, Any]  # the whole statement, as JSON

    @property
    def predicate(self) -> Any:
        return self.document.get("predicate")


@dataclasses.dataclass(frozen=True, slots=True)
class Attested:
    """A statement that counts: signed by ``proof``'s authority, about ``proof.digest``."""

    proof: proofs.Proof
    statement: Statement


@dataclasses.dataclass(frozen=True, slots=True)
class LegacyAttestation:
    """One layer of a ``.att`` manifest: the DSSE envelope blob and the layer's annotations."""

    index: int
    envelope: bytes
    annotations: Mapping[str, str]

    @property
    def predicate_type(self) -> str | None:
        return self.annotations.get(PREDICATE_ANNOTATION)


@dataclasses.dataclass(frozen=True, slots=True)
class BundleAttestation:
    """A Sigstore bundle referring to the image, and the predicate type its manifest names."""

    bundle: bytes
    predicate_type: str | None = None


Item: TypeAlias = LegacyAttestation | BundleAttestation


def label(item: Item, position: int) -> str:
    if isinstance(item, LegacyAttestation):
        return f"attestation layer {item.index + 1}"
    return f"attestation bundle {position + 1}"


def parse_statement(payload_type: str, payload: bytes) -> Statement:
    """An in-toto statement from a DSSE payload, or :class:`proofs.Rejected`."""
    if payload_type != bundles.IN_TOTO_PAYLOAD_TYPE:
        raise proofs.Rejected(f"DSSE payload type is {payload_type!r}, not an in-toto statement")
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        raise proofs.Rejected("in-toto statement is not valid JSON") from None
    return _statement(document)


def _statement(document: object) -> Statement:
    if not isinstance(document, dict):
        raise proofs.Rejected("in-toto statement is not a JSON object")
    if document.get("_type") not in STATEMENT_TYPES:
        raise proofs.Rejected(f"statement type {document.get('_type')!r} is not in-toto's")
    predicate_type = document.get("predicateType")
    if not isinstance(predicate_type, str) or not predicate_type:
        raise proofs.Rejected("in-toto statement has no predicateType")
    return Statement(predicate_type=predicate_type, document=document)


def check_subject(statement: Statement, digest: str) -> None:
    """The statement must name ``digest`` among its subjects."""
    algorithm, _, hexdigest = digest.partition(":")
    subjects = statement.document.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise proofs.Rejected("in-toto statement has no subject")
    for subject in subjects:
        digests = subject.get("digest") if isinstance(subject, dict) else None
        if isinstance(digests, dict) and digests.get(algorithm) == hexdigest:
            return
    named = ", ".join(
        f"{name}:{value}"
        for subject in subjects[:3]
        if isinstance(subject, dict) and isinstance(subject.get("digest"), dict)
        for name, value in list(subject["digest"].items())[:1]
    )
    raise proofs.Rejected(f"statement is about {named or 'no digest'}, not the image {digest}")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def _envelope(raw: bytes) -> tuple[str, bytes, list[bytes]]:
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise proofs.Rejected(f"DSSE envelope is larger than {MAX_ENVELOPE_BYTES} bytes")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise proofs.Rejected("DSSE envelope is not valid JSON") from None
    if not isinstance(document, dict):
        raise proofs.Rejected("DSSE envelope is not a JSON object")
    payload_type, payload, signatures = (
        document.get(name) for name in ("payloadType", "payload", "signatures")
    )
    if not isinstance(payload_type, str) or not isinstance(payload, str):
        raise proofs.Rejected("DSSE envelope lacks payloadType or payload")
    if not isinstance(signatures, list) or not signatures:
        raise proofs.Rejected("DSSE envelope holds no signature")
    try:
        body = base64.b64decode(payload, validate=True)
        sigs = [
            base64.b64decode(entry["sig"], validate=True)
            for entry in signatures[:_MAX_SIGNATURES]
            if isinstance(entry, dict) and isinstance(entry.get("sig"), str)
        ]
    except (binascii.Error, ValueError):
        raise proofs.Rejected("DSSE envelope holds invalid base64") from None
    return payload_type, body, sigs


def _verify_legacy(
    item: LegacyAttestation, *, digest: str, authority: authorities.Authority
) -> Attested:
    authority = authorities.not_notation(authority, "in-toto attestations")
    if not isinstance(authority, authorities.KeyAuthority):
        # cosign v2 keyless attestations carry a Fulcio certificate and an intoto Rekor entry;
        # refused, not guessed at, until their log proof is checked here.
        raise proofs.Rejected(
            "keyless legacy (.att) attestations are not verified; attach them as cosign v3 "
            "bundles (cosign attest with cosign 3)"
        )
    if authority.trusted_root is not None:
        raise proofs.Rejected(
            "the authority requires a transparency-log entry, which legacy (.att) attestations "
            "are not checked for; attach them as cosign v3 bundles"
        )
    payload_type, payload, signatures = _envelope(item.envelope)
    signed = pae(payload_type, payload)
    for signature in signatures:
        try:
            keys.verify(authority.key, signature, signed)
            break
        except keys.InvalidSignature:
            continue
    else:
        raise proofs.Rejected(f"DSSE signature does not verify with {keys.describe(authority.key)}")
    statement = parse_statement(payload_type, payload)
    check_subject(statement, digest)
    proof = proofs.Proof(
        digest=digest,
        signer=keys.describe(authority.key),
        authority=authority.name,
        format=FORMAT_LEGACY,
        key_id=keys.fingerprint(authority.key),
    )
    return Attested(proof=proof, statement=statement)


def verify(item: Item, *, digest: str, authority: authorities.Authority) -> Attested:
    """The statement ``item`` carries, if ``authority`` signed it and it names ``digest``;
    otherwise :class:`proofs.Rejected` saying why."""
    cosign.check_digest(digest, "image digest")
    if isinstance(item, LegacyAttestation):
        return _verify_legacy(item, digest=digest, authority=authority)
    proof, document = bundles.verify_statement(item.bundle, digest=digest, authority=authority)
    return Attested(proof=proof, statement=_statement(document))
