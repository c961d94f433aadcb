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
import datetime
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, TypeAlias

# ``bundles`` is imported where a bundle is verified: it loads the sigstore library, which a
# legacy signature (and a command's start-up) does without.
from muster.signatures.rules import authorities, bundleformat, cosign, keys, proofs

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
    "check_subject",
    "label",
    "pae",
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
    if payload_type != bundleformat.IN_TOTO_PAYLOAD_TYPE:
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


def _pem_der(pem: bytes) -> bytes:
    # Compare what PEM blocks encode, not their line wrapping.
    match = re.search(rb"-----BEGIN [A-Z ]+-----(.*?)-----END", pem, re.DOTALL)
    if match is None:
        return b""
    try:
        return base64.b64decode(b"".join(match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        return b""


def _check_dsse_entry(body: bytes, layer: cosign.SignatureLayer, signer_pem: bytes) -> None:
    """A Rekor ``dsse`` 0.0.1 entry (what cosign v2 attest logs) must record this payload,
    this one signature and this signer (a key, or the signing certificate)."""
    try:
        entry = json.loads(body)
        if (entry["kind"], entry["apiVersion"]) != ("dsse", "0.0.1"):
            raise proofs.Rejected(
                f"Rekor entry is {entry['kind']}/{entry['apiVersion']}, not dsse/0.0.1 "
                "(cosign attest --rekor-entry-type dsse, its default)"
            )
        spec = entry["spec"]
        payload_hash = spec["payloadHash"]
        recorded = [
            (base64.b64decode(s["signature"], validate=True), base64.b64decode(s["verifier"]))
            for s in spec["signatures"]
        ]
    except proofs.Rejected:
        raise
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise proofs.Rejected("Rekor entry is malformed") from None
    if payload_hash != {"algorithm": "sha256", "value": hashlib.sha256(layer.payload).hexdigest()}:
        raise proofs.Rejected("Rekor entry records a different DSSE payload")
    if len(recorded) != 1 or recorded[0][0] != layer.signature:
        raise proofs.Rejected("Rekor entry records a different DSSE signature")
    if _pem_der(recorded[0][1]) != _pem_der(signer_pem) or not _pem_der(signer_pem):
        raise proofs.Rejected("Rekor entry records a different signer")


def _annotation(item: LegacyAttestation, name: str) -> bytes | None:
    value = item.annotations.get(name)
    return value.encode() if value else None


def _verify_legacy(
    item: LegacyAttestation, *, digest: str, authority: authorities.Authority
) -> Attested:
    authority = authorities.not_notation(authority, "in-toto attestations")
    payload_type, payload, signatures = _envelope(item.envelope)
    signed = pae(payload_type, payload)
    if len(signatures) != 1:
        raise proofs.Rejected("DSSE envelope must hold exactly one signature")
    layer = cosign.SignatureLayer(
        index=item.index,
        payload=payload,
        signature=signatures[0],
        certificate=_annotation(item, cosign.CERTIFICATE_ANNOTATION),
        chain=_annotation(item, cosign.CHAIN_ANNOTATION),
        rekor_bundle=_annotation(item, cosign.BUNDLE_ANNOTATION),
    )
    identity: proofs.CertificateIdentity | None = None
    key_id: str | None = None
    logged: tuple[datetime.datetime, int] | None = None
    sct_checked = False
    if isinstance(authority, authorities.KeyAuthority):
        try:
            keys.verify(authority.key, signatures[0], signed)
        except keys.InvalidSignature:
            raise proofs.Rejected(
                f"DSSE signature does not verify with {keys.describe(authority.key)}"
            ) from None
        if authority.trusted_root is not None:
            rekor_keys = authority.trusted_root.material.rekor_keys
            logged = cosign.verify_logged(
                layer, rekor_keys, keys.pem(authority.key), check_body=_check_dsse_entry
            )
        signer, key_id = keys.describe(authority.key), keys.fingerprint(authority.key)
    else:
        material = authority.trusted_root.material
        identity, when, index = cosign.verify_certified(
            layer,
            identities=authority.identities,
            trust=material,
            message=signed,
            check_body=_check_dsse_entry,
        )
        logged, signer, sct_checked = (when, index), str(identity), bool(material.ct_keys)
    statement = parse_statement(payload_type, payload)
    check_subject(statement, digest)
    proof = proofs.Proof(
        digest=digest,
        signer=signer,
        authority=authority.name,
        format=FORMAT_LEGACY,
        key_id=key_id,
        identity=identity,
        integrated_time=logged[0] if logged else None,
        log_index=logged[1] if logged else None,
        sct_checked=sct_checked,
    )
    return Attested(proof=proof, statement=statement)


def verify(item: Item, *, digest: str, authority: authorities.Authority) -> Attested:
    """The statement ``item`` carries, if ``authority`` signed it and it names ``digest``;
    otherwise :class:`proofs.Rejected` saying why."""
    cosign.check_digest(digest, "image digest")
    if isinstance(item, LegacyAttestation):
        return _verify_legacy(item, digest=digest, authority=authority)
    from muster.signatures.rules import bundles

    proof, document = bundles.verify_statement(item.bundle, digest=digest, authority=authority)
    return Attested(proof=proof, statement=_statement(document))
