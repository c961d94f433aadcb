"""Sigstore bundles (v0.1 to v0.3), as cosign v3 attaches them to images and as other clients
write them for files.

Keyless bundles go through the ``sigstore`` library's verifier with a trusted root that the
caller supplies (never a TUF refresh: air-gapped clusters bring their own). Three corrections
over sigstore 4.5 that the Sigstore conformance suite demands are made in :class:`_Verifier`:
``intoto`` v0.0.2 log entries, trust-root validity windows for Fulcio CAs, and inclusive
timestamp-authority validity ends. Key-based bundles (a public-key hint, no certificate) are
checked here with ``cryptography``, their log entries with the library's Merkle, checkpoint and
SET code. Image bundles must carry an in-toto statement whose subject is the image digest.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rfc3161_client import TimeStampResponse, VerifierBuilder, decode_timestamp_response
from rfc3161_client import VerificationError as Rfc3161Error
from sigstore import dsse as sigstore_dsse
from sigstore import errors as sigstore_errors
from sigstore import models as sigstore_models
from sigstore._internal import timestamp as sigstore_timestamp
from sigstore._internal import trust as sigstore_trust
from sigstore.hashes import Hashed
from sigstore.verify import verifier as sigstore_verifier
from sigstore_models.bundle import v1 as bundle_v1
from sigstore_models.common.v1 import HashAlgorithm

from muster.kernel import messages
from muster.signatures.rules import authorities, bundleformat, cosign, keys, proofs, trust

__all__ = [
    "COSIGN_SIGN_PREDICATE",
    "FORMAT",
    "IN_TOTO_PAYLOAD_TYPE",
    "MAX_BUNDLE_BYTES",
    "Artifact",
    "verify_artifact",
    "verify_image",
]

COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
# Named where the format is, which loads without the sigstore library (command start-up).
IN_TOTO_PAYLOAD_TYPE = bundleformat.IN_TOTO_PAYLOAD_TYPE
FORMAT_NAME = bundleformat.FORMAT_NAME
MAX_BUNDLE_BYTES = bundleformat.MAX_BUNDLE_BYTES
_MAX_TIMESTAMPS = 32  # as sigstore-go and sigstore-python, against denial of service

_SigstoreRoot = sigstore_models.TrustedRoot

_BUNDLE_MEDIA_TYPES = frozenset(kind.value for kind in sigstore_models.Bundle.BundleType)
_PARSE_ERRORS = trust.parse_errors()


@dataclasses.dataclass(frozen=True, slots=True)
class Artifact:
    """What a bundle must cover: a SHA-256 digest, and the bytes themselves when known."""

    sha256: bytes
    data: bytes | None = None

    def __post_init__(self) -> None:
        if len(self.sha256) != 32:
            raise ValueError("artifact SHA-256 digest must be 32 bytes")

    @classmethod
    def from_bytes(cls, data: bytes) -> Artifact:
        return cls(sha256=hashlib.sha256(data).digest(), data=data)

    @classmethod
    def from_digest(cls, digest: str) -> Artifact:
        """``sha256:<hex>`` as written by the conformance client protocol and OCI."""
        algorithm, _, hexpart = digest.partition(":")
        if algorithm != "sha256" or len(hexpart) != 64:
            raise ValueError(f"digest {digest!r} is not sha256:<64 hex>")
        try:
            return cls(sha256=bytes.fromhex(hexpart))
        except ValueError:
            raise ValueError(f"digest {digest!r} is not hexadecimal") from None

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256.hex()}"


# ---------------------------------------------------------------------------------------------
# Keyless: sigstore's verifier, with the corrections the conformance suite asks for


class _IdentityPolicy:
    """A sigstore verification policy over Muster identities (issuer always required)."""

    def __init__(self, identities: Sequence[authorities.Identity]) -> None:
        self.identities = tuple(identities)
        self.matched: proofs.CertificateIdentity | None = None

    def verify(self, cert: x509.Certificate) -> None:
        identity = authorities.certificate_identity(cert)
        if not any(expected.matches(identity) for expected in self.identities):
            expected_text = "; ".join(str(expected) for expected in self.identities)
            raise sigstore_errors.VerificationError(
                f"signed by {identity}, expected {expected_text}"
            )
        self.matched = identity


def _verify_timestamp(
    trusted_root: _SigstoreRoot, response: TimeStampResponse, signature: bytes
) -> datetime.datetime | None:
    """The time an RFC 3161 timestamp over ``signature`` vouches for, if a trusted TSA signed it."""
    for authority in trusted_root.get_timestamp_authorities():
        certificates = authority.certificates(allow_expired=True)
        if len(certificates) < 2:
            continue  # a leaf and a root at least
        builder = (
            VerifierBuilder()
            .tsa_certificate(certificates[0])
            .add_root_certificate(certificates[-1])
        )
        for certificate in certificates[1:-1]:
            builder = builder.add_intermediate_certificate(certificate)
        try:
            builder.build().verify_message(response, signature)
        except Rfc3161Error:
            continue
        when = response.tst_info.gen_time
        if trust.within(when, authority.validity_period_start, authority.validity_period_end):
            return when
    return None


class _Verifier(sigstore_verifier.Verifier):
    """sigstore's verifier with three conformance fixes; see the module docstring."""

    def _verify_signed_timestamp(
        self, timestamp_response: TimeStampResponse, message: bytes
    ) -> sigstore_timestamp.TimestampVerificationResult | None:
        when = _verify_timestamp(self._trusted_root, timestamp_response, message)
        if when is None:
            return None
        return sigstore_timestamp.TimestampVerificationResult(
            source=sigstore_timestamp.TimestampSource.TIMESTAMP_AUTHORITY, time=when
        )

    def _establish_time(
        self, bundle: sigstore_models.Bundle
    ) -> list[sigstore_timestamp.TimestampVerificationResult]:
        results: list[sigstore_timestamp.TimestampVerificationResult] = []
        if bundle.verification_material.timestamp_verification_data:
            if not self._trusted_root.get_timestamp_authorities():
                raise sigstore_errors.VerificationError(
                    "bundle has a signed timestamp but the trusted root lists no TSA"
                )
            results.extend(self._verify_timestamp_authority(bundle))
        entry = bundle.log_entry._inner
        if entry.integrated_time and entry.inclusion_promise:
            kind = (entry.kind_version.kind, entry.kind_version.version)
            # Rekor v1 entries carry a signed integrated time; intoto v0.0.2 is one of them.
            if kind not in {("dsse", "0.0.1"), ("hashedrekord", "0.0.1"), ("intoto", "0.0.2")}:
                raise sigstore_errors.VerificationError(
                    f"integrated time is not supported for {kind[0]}/{kind[1]} entries"
                )
            results.append(
                sigstore_timestamp.TimestampVerificationResult(
                    source=sigstore_timestamp.TimestampSource.TRANSPARENCY_SERVICE,
                    time=datetime.datetime.fromtimestamp(entry.integrated_time, tz=datetime.UTC),
                )
            )
        if not results:  # Rekor v2 entries have no signed time: only a trusted TSA gives one
            raise sigstore_errors.VerificationError(
                "no verified signing time: no signed timestamp is from a timestamp authority "
                "of the trusted root, and the log entry has no signed integrated time"
            )
        return results

    def _verify_chain_at_time(
        self,
        certificate: x509.Certificate,
        timestamp_result: sigstore_timestamp.TimestampVerificationResult,
    ) -> list[x509.Certificate]:
        # Only CAs whose trust-root validity window covers the signing time may anchor a chain.
        when = timestamp_result.time
        anchors = []
        for inner in self._trusted_root._inner.certificate_authorities:
            authority = sigstore_trust.CertificateAuthority(inner)
            if trust.within(when, authority.validity_period_start, authority.validity_period_end):
                anchors.append(authority)
        if not anchors:
            raise sigstore_errors.CertValidationError(
                "no Fulcio CA in the trusted root was valid at the signing time"
            )
        try:
            authorities = [
                trust.CertificateAuthority(tuple(a.certificates(allow_expired=True)))
                for a in anchors
            ]
            chain = cosign.verify_certificate(certificate, [], when=when, authorities=authorities)
        except proofs.Rejected as error:
            raise sigstore_errors.CertValidationError(str(error)) from None
        return list(chain[1:])

    def verify_dsse(self, bundle: sigstore_models.Bundle, policy: Any) -> tuple[str, bytes]:
        self._verify_common_signing_cert(bundle, policy)
        envelope = bundle._dsse_envelope
        if envelope is None:
            raise sigstore_errors.VerificationError("bundle has no DSSE envelope")
        public = bundle.signing_certificate.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise sigstore_errors.VerificationError("signing certificate key is not ECDSA")
        sigstore_dsse._verify(public, envelope)
        kind = bundle.log_entry._inner.kind_version
        if (kind.kind, kind.version) == ("intoto", "0.0.2"):
            _check_intoto_entry(
                bundle.log_entry._inner.canonicalized_body,
                envelope,
                bundle.signing_certificate,
            )
        elif (kind.kind, kind.version) == ("hashedrekord", "0.0.2"):
            sigstore_verifier._validate_hashedrekord_v002_dsse_entry_body(bundle)
        elif (kind.kind, kind.version) == ("dsse", "0.0.1"):
            sigstore_verifier._validate_dsse_v001_entry_body(bundle)
        else:
            raise sigstore_errors.VerificationError(
                f"unsupported DSSE log entry type {kind.kind}/{kind.version}"
            )
        return envelope._inner.payload_type, envelope._inner.payload


def _check_intoto_entry(
    body: bytes, envelope: sigstore_dsse.Envelope, certificate: x509.Certificate
) -> None:
    """The intoto v0.0.2 entry must record this payload, this signature and this certificate."""
    entry = json.loads(body)
    try:
        # The bundle's kindVersion is not signed; the logged body is.
        if (entry["kind"], entry["apiVersion"]) != ("intoto", "0.0.2"):
            raise sigstore_errors.VerificationError("log entry body is not intoto v0.0.2")
        content = entry["spec"]["content"]
        payload_hash = content["payloadHash"]
        recorded = content["envelope"]["signatures"]
    except (KeyError, TypeError):
        raise sigstore_errors.VerificationError("intoto log entry is incomplete") from None
    payload = envelope._inner.payload
    if payload_hash != {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}:
        raise sigstore_errors.VerificationError("log entry records a different DSSE payload")
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
    expected = [(envelope.signature, _pem_block_der(certificate_pem))]
    actual = []
    try:
        for signature in recorded:
            # intoto v0.0.2 stores each signature base64-encoded twice.
            raw = base64.b64decode(base64.b64decode(signature["sig"], validate=True))
            signer = _pem_block_der(base64.b64decode(signature["publicKey"], validate=True))
            actual.append((raw, signer))
    except (KeyError, TypeError, binascii.Error, ValueError):
        raise sigstore_errors.VerificationError(
            "intoto log entry signatures are malformed"
        ) from None
    if actual != expected:
        raise sigstore_errors.VerificationError("log entry records different DSSE signatures")


def _pem_block_der(pem: bytes) -> bytes:
    lines = [line.strip() for line in pem.strip().splitlines()]
    if (
        len(lines) < 3
        or not lines[0].startswith(b"-----BEGIN")
        or not lines[-1].startswith(b"-----END")
    ):
        return b""
    try:
        return base64.b64decode(b"".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        return b""


# ---------------------------------------------------------------------------------------------
# Statements


def _statement(payload_type: str, payload: bytes) -> dict[str, Any]:
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise proofs.Rejected(f"DSSE payload type is {payload_type!r}, not an in-toto statement")
    try:
        statement = json.loads(payload)
    except (ValueError, RecursionError):
        raise proofs.Rejected("in-toto statement is not valid JSON") from None
    if not isinstance(statement, dict):
        raise proofs.Rejected("in-toto statement is not a JSON object")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise proofs.Rejected("in-toto statement has no subject")
    return statement


def _check_subject(statement: dict[str, Any], algorithm: str, hexdigest: str) -> None:
    for subject in statement["subject"]:
        digests = subject.get("digest") if isinstance(subject, dict) else None
        if isinstance(digests, dict) and digests.get(algorithm) == hexdigest:
            return
    raise proofs.Rejected(f"in-toto statement has no subject with digest {algorithm}:{hexdigest}")


def _check_predicate(statement: dict[str, Any], predicate_type: str) -> None:
    found = statement.get("predicateType")
    if found != predicate_type:
        raise proofs.Rejected(f"statement predicate type is {found!r}, expected {predicate_type!r}")


# ---------------------------------------------------------------------------------------------
# Verification


@dataclasses.dataclass(frozen=True, slots=True)
class _Checked:
    signer: str
    statement: dict[str, Any] | None
    integrated_time: datetime.datetime | None
    log_index: int | None
    sct_checked: bool = False
    key_id: str | None = None
    identity: proofs.CertificateIdentity | None = None


def _size_checked(bundle: bytes | str) -> bytes:
    raw = bundle.encode() if isinstance(bundle, str) else bundle
    if not isinstance(raw, bytes | bytearray):
        raise proofs.Rejected("bundle must be bytes")
    if len(raw) > MAX_BUNDLE_BYTES:
        raise proofs.Rejected(f"bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    return bytes(raw)


def _keyless(
    bundle: bytes | str,
    artifact: Artifact | None,
    identities: Sequence[authorities.Identity],
    trusted_root: _SigstoreRoot,
) -> _Checked:
    raw = _size_checked(bundle)
    try:
        parsed = sigstore_models.Bundle.from_json(_protojson_defaults(raw))
    except _PARSE_ERRORS as error:
        raise proofs.Rejected(f"bundle is invalid: {messages.first_line(error)}") from None
    _check_log_listed(parsed.log_entry._inner.log_id.key_id, trusted_root)
    policy = _IdentityPolicy(identities)
    statement = None
    try:
        verifier = _Verifier(trusted_root=trusted_root)
        if parsed._dsse_envelope is not None:
            payload_type, payload = verifier.verify_dsse(parsed, policy)
            statement = _statement(payload_type, payload)
        elif artifact is None:
            raise proofs.Rejected("image bundles must carry a DSSE in-toto statement")
        else:
            hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=artifact.sha256)
            verifier.verify_artifact(hashed, parsed, policy)
    except proofs.Rejected:
        raise
    except _PARSE_ERRORS as error:
        raise proofs.Rejected(messages.first_line(error)) from None
    if policy.matched is None:  # the verifier must have consulted the policy
        raise proofs.Rejected("certificate identity was not checked")
    entry = parsed.log_entry._inner
    return _Checked(
        signer=str(policy.matched),
        statement=statement,
        integrated_time=(
            datetime.datetime.fromtimestamp(entry.integrated_time, tz=datetime.UTC)
            if entry.integrated_time
            else None
        ),
        log_index=entry.log_index,
        sct_checked=True,  # sigstore's verifier always checks the embedded SCT
        identity=policy.matched,
    )


def _protojson_defaults(raw: bytes) -> bytes:
    """Put back the log entry fields protojson leaves out when they hold their default.

    cosign writes a log's first entry without ``logIndex`` (0) and a one-leaf tree's proof
    without ``hashes`` ([]); the parsers require both. Anything unparsable is left as it is,
    for the parser to refuse.
    """
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return raw
    material = document.get("verificationMaterial") if isinstance(document, dict) else None
    entries = material.get("tlogEntries") if isinstance(material, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict):
            entry.setdefault("logIndex", "0")
            proof = entry.get("inclusionProof")
            if isinstance(proof, dict):
                proof.setdefault("logIndex", "0")
                proof.setdefault("hashes", [])
    return json.dumps(document).encode()


def _check_log_listed(log_id: bytes, trusted_root: _SigstoreRoot) -> None:
    """Name the log when the root does not list it (sigstore would say "invalid signature")."""
    if all(log.log_id.key_id != log_id for log in trusted_root._inner.tlogs):
        raise proofs.Rejected(
            f"the transparency log entry is from log {log_id.hex()}, which the trusted root "
            "does not list"
        )


def _keyed(
    bundle: bytes | str,
    artifact: Artifact | None,
    key: keys.PublicKey,
    trusted_root: _SigstoreRoot | None,
) -> _Checked:
    raw = _size_checked(bundle)
    try:
        document = json.loads(_protojson_defaults(raw))
        material = document.get("verificationMaterial") if isinstance(document, dict) else None
        if isinstance(material, dict):
            # protojson omits empty lists: cosign's --tlog-upload=false bundles have none.
            material.setdefault("tlogEntries", [])
        inner = bundle_v1.Bundle.from_json(json.dumps(document))
    except _PARSE_ERRORS as error:
        raise proofs.Rejected(f"bundle is invalid: {messages.first_line(error)}") from None
    if inner.media_type not in _BUNDLE_MEDIA_TYPES:
        raise proofs.Rejected(f"bundle media type {inner.media_type!r} is not supported")
    material = inner.verification_material
    if material.public_key is None:
        raise proofs.Rejected("bundle is certificate-based (keyless); verify it with an identity")
    statement = None
    if inner.dsse_envelope is not None:
        envelope = inner.dsse_envelope
        if len(envelope.signatures) != 1 or not envelope.signatures[0].sig:
            raise proofs.Rejected("DSSE envelope must hold exactly one signature")
        signature = envelope.signatures[0].sig
        pae = sigstore_dsse._pae(envelope.payload_type, envelope.payload)
        try:
            keys.verify(key, signature, pae)
        except keys.InvalidSignature as error:
            raise proofs.Rejected(f"DSSE {error}") from None
        statement = _statement(envelope.payload_type, envelope.payload)
        expected: _Expected = _Expected(
            signature=signature,
            payload_sha256=hashlib.sha256(envelope.payload).digest(),
            pae_sha256=hashlib.sha256(pae).digest(),
        )
    elif inner.message_signature is not None:
        if artifact is None:
            raise proofs.Rejected("image bundles must carry a DSSE in-toto statement")
        message = inner.message_signature
        signature = message.signature
        if message.message_digest is not None and (
            message.message_digest.algorithm != HashAlgorithm.SHA2_256
            or message.message_digest.digest != artifact.sha256
        ):
            raise proofs.Rejected("bundle signs a different artifact digest")
        try:
            if artifact.data is not None and not isinstance(key, ec.EllipticCurvePublicKey):
                keys.verify(key, signature, artifact.data)
            else:
                keys.verify_digest(key, signature, artifact.sha256, "sha256")
        except keys.InvalidSignature as error:
            raise proofs.Rejected(str(error)) from None
        expected = _Expected(signature=signature, artifact_sha256=artifact.sha256)
    else:
        raise proofs.Rejected("bundle holds neither a message signature nor a DSSE envelope")
    integrated, index = None, None
    if trusted_root is not None:
        integrated, index = _check_log_entries(inner, key, expected, trusted_root)
    return _Checked(
        signer=keys.describe(key),
        statement=statement,
        integrated_time=integrated,
        log_index=index,
        key_id=keys.fingerprint(key),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Expected:
    """What a log entry must record for the signature at hand."""

    signature: bytes
    artifact_sha256: bytes | None = None
    payload_sha256: bytes | None = None
    pae_sha256: bytes | None = None


def _check_log_entries(
    inner: bundle_v1.Bundle, key: keys.PublicKey, expected: _Expected, trusted_root: _SigstoreRoot
) -> tuple[datetime.datetime | None, int]:
    entries = inner.verification_material.tlog_entries
    if not entries:
        raise proofs.Rejected("bundle has no transparency log entry")
    if len(entries) != 1:
        raise proofs.Rejected("bundle must hold exactly one transparency log entry")
    try:
        entry = sigstore_models.TransparencyLogEntry(entries[0])
        entry._verify(trusted_root.rekor_keyring(sigstore_trust.KeyringPurpose.VERIFY))
    except _PARSE_ERRORS as error:
        raise proofs.Rejected(
            f"transparency log entry is invalid: {messages.first_line(error)}"
        ) from None
    _check_recorded(entries[0].kind_version, entries[0].canonicalized_body, key, expected)
    timestamps = inner.verification_material.timestamp_verification_data
    responses = timestamps.rfc3161_timestamps if timestamps else []
    if len(responses) > _MAX_TIMESTAMPS:
        raise proofs.Rejected("bundle holds too many signed timestamps")
    for response in responses:
        try:
            decoded = decode_timestamp_response(response.signed_timestamp)
        except _PARSE_ERRORS as error:
            raise proofs.Rejected(
                f"signed timestamp is invalid: {messages.first_line(error)}"
            ) from None
        if _verify_timestamp(trusted_root, decoded, expected.signature) is None:
            raise proofs.Rejected("signed timestamp is not from a trusted timestamp authority")
    when = (
        datetime.datetime.fromtimestamp(entries[0].integrated_time, tz=datetime.UTC)
        if entries[0].integrated_time and entries[0].inclusion_promise
        else None
    )
    return when, entries[0].log_index


def _check_recorded(
    kind_version: Any, body: bytes, key: keys.PublicKey, expected: _Expected
) -> None:
    """The log entry must record this very signature, by this key, over this content."""
    kind = (kind_version.kind, kind_version.version)
    try:
        entry = json.loads(body)
        # The bundle's kindVersion is not signed; the logged body is.
        if (entry["kind"], entry["apiVersion"]) != kind:
            raise proofs.Rejected("log entry body is of another kind than the bundle says")
        spec = entry["spec"]
        if kind == ("hashedrekord", "0.0.1"):
            digest = bytes.fromhex(spec["data"]["hash"]["value"])
            algorithm = spec["data"]["hash"]["algorithm"]
            recorded = [(spec["signature"]["content"], spec["signature"]["publicKey"]["content"])]
            covered = expected.artifact_sha256
            ok_algorithm = algorithm == "sha256"
        elif kind == ("hashedrekord", "0.0.2"):
            record = spec["hashedRekordV002"]
            digest = base64.b64decode(record["data"]["digest"], validate=True)
            ok_algorithm = record["data"]["algorithm"] == "SHA2_256"
            verifier = record["signature"]["verifier"]["publicKey"]["rawBytes"]
            recorded = [(record["signature"]["content"], verifier)]
            covered = expected.artifact_sha256 or expected.pae_sha256
        elif kind == ("dsse", "0.0.1"):
            digest = bytes.fromhex(spec["payloadHash"]["value"])
            ok_algorithm = spec["payloadHash"]["algorithm"] == "sha256"
            recorded = [(s["signature"], s["verifier"]) for s in spec["signatures"]]
            covered = expected.payload_sha256
        elif kind == ("intoto", "0.0.2"):
            content = spec["content"]
            digest = bytes.fromhex(content["payloadHash"]["value"])
            ok_algorithm = content["payloadHash"]["algorithm"] == "sha256"
            recorded = [
                (base64.b64decode(s["sig"]).decode(), s["publicKey"])
                for s in content["envelope"]["signatures"]
            ]
            covered = expected.payload_sha256
        else:
            raise proofs.Rejected(f"log entry kind {kind[0]}/{kind[1]} is not supported")
        if not ok_algorithm or covered is None or digest != covered:
            raise proofs.Rejected("log entry records different content")
        if len(recorded) != 1:
            raise proofs.Rejected("log entry must record exactly one signature")
        signature_b64, signer_b64 = recorded[0]
        if base64.b64decode(signature_b64, validate=True) != expected.signature:
            raise proofs.Rejected("log entry records a different signature")
        signer = base64.b64decode(signer_b64, validate=True)
        recorded_key = keys.load(signer)
    except proofs.Rejected:
        raise
    except (KeyError, TypeError, ValueError, binascii.Error, UnicodeDecodeError):
        raise proofs.Rejected("log entry body is malformed or does not match the bundle") from None
    if not keys.same(recorded_key, key):
        raise proofs.Rejected("log entry records a different signing key")


def _sigstore_root(root: trust.TrustedRoot | None) -> _SigstoreRoot | None:
    if root is None:
        return None
    if root.sigstore is None:
        raise proofs.Rejected(
            "the trusted root was given as PEM certificates and keys, which verify legacy "
            "signatures only; bundles need a trusted_root.json"
        )
    return root.sigstore


def _proof(checked: _Checked, digest: str, authority: str = "") -> proofs.Proof:
    return proofs.Proof(
        digest=digest,
        signer=checked.signer,
        authority=authority,
        format=FORMAT_NAME,
        key_id=checked.key_id,
        identity=checked.identity,
        integrated_time=checked.integrated_time,
        log_index=checked.log_index,
        sct_checked=checked.sct_checked,
    )


def verify_artifact(
    bundle: bytes | str,
    artifact: Artifact,
    *,
    identities: Sequence[authorities.Identity] = (),
    key: keys.PublicKey | None = None,
    trusted_root: trust.TrustedRoot | None = None,
) -> proofs.Proof:
    """Verify a bundle over a file (by digest), keyless by identity or with a key."""
    if key is not None and identities:
        raise authorities.InvalidPolicy("verify with a key or with identities, not both")
    root = _sigstore_root(trusted_root)
    if key is not None:
        checked = _keyed(bundle, artifact, key, root)
    elif identities:
        if root is None:
            raise authorities.InvalidPolicy("keyless verification needs a trusted root")
        checked = _keyless(bundle, artifact, identities, root)
    else:
        raise authorities.InvalidPolicy("give a key or at least one identity to verify with")
    if checked.statement is not None:
        _check_subject(checked.statement, "sha256", artifact.sha256.hex())
    return _proof(checked, artifact.digest)


def verify_image(
    bundle: bytes | str,
    *,
    digest: str,
    authority: authorities.Authority,
    predicate_type: str = COSIGN_SIGN_PREDICATE,
) -> proofs.Proof:
    """Verify a cosign v3 image bundle: its statement must name ``digest`` and the predicate."""
    cosign.check_digest(digest, "image digest")
    authority = authorities.not_notation(authority, "Sigstore bundles")
    if isinstance(authority, authorities.KeyAuthority):
        checked = _keyed(bundle, None, authority.key, _sigstore_root(authority.trusted_root))
    else:
        root = _sigstore_root(authority.trusted_root)
        if root is None:  # the type rules it out; never verify without a root
            raise proofs.Rejected("keyless verification needs a trusted root")
        checked = _keyless(bundle, None, authority.identities, root)
    if checked.statement is None:
        raise proofs.Rejected("image bundles must carry a DSSE in-toto statement")
    _check_predicate(checked.statement, predicate_type)
    algorithm, _, hexdigest = digest.partition(":")
    _check_subject(checked.statement, algorithm, hexdigest)
    return _proof(checked, digest, authority.name)


def verify_statement(
    bundle: bytes | str, *, digest: str, authority: authorities.Authority
) -> tuple[proofs.Proof, dict[str, Any]]:
    """Verify a cosign v3 attestation bundle: its signer and that its statement names
    ``digest``; the statement is returned for the caller to judge its predicate."""
    cosign.check_digest(digest, "image digest")
    authority = authorities.not_notation(authority, "Sigstore bundles")
    if isinstance(authority, authorities.KeyAuthority):
        checked = _keyed(bundle, None, authority.key, _sigstore_root(authority.trusted_root))
    else:
        root = _sigstore_root(authority.trusted_root)
        if root is None:
            raise proofs.Rejected("keyless verification needs a trusted root")
        checked = _keyless(bundle, None, authority.identities, root)
    if checked.statement is None:
        raise proofs.Rejected("attestation bundles must carry a DSSE in-toto statement")
    algorithm, _, hexdigest = digest.partition(":")
    _check_subject(checked.statement, algorithm, hexdigest)
    return _proof(checked, digest, authority.name), checked.statement


# The format, as the fetchers give it (:mod:`muster.signatures.referrers`, which imports this
# module on the first bundle it finds).
FORMAT = bundleformat.BundleFormat(verify_image)
