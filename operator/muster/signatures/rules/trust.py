"""Trust material: a Sigstore ``trusted_root.json`` parsed once, for every signature format.

Sigstore bundles are checked by the ``sigstore`` library, which wants its own ``TrustedRoot``;
legacy cosign signatures are checked here, against the Fulcio CAs, Rekor keys and CT log keys
of the same document (:class:`TrustMaterial`). :func:`load_trusted_root` parses the document
once and gives both views, so an image policy, a Model and the CLI read a root the same way.
Nothing is fetched or refreshed: air-gapped clusters bring their own root.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cryptography import x509

from muster.kernel import messages
from muster.signatures.rules import keys

if TYPE_CHECKING:
    # Imported where a trusted_root.json is parsed: the library loads its HTTP clients too,
    # and a key-signed image (``muster image verify``, every start) needs none of it.
    from sigstore import models as sigstore_models
    from sigstore_models.trustroot import v1 as trustroot_v1

__all__ = [
    "PARSE_ERRORS",
    "CertificateAuthority",
    "InvalidTrustRoot",
    "LogKey",
    "TrustMaterial",
    "TrustedRoot",
    "load_trusted_root",
    "parse_errors",
    "within",
]

# What a malformed document can make the parsers raise: a corrupted certificate can carry an
# impossible X.509 version, which cryptography raises as InvalidVersion (not a ValueError).
# The sigstore library's own errors are added where it is imported (:func:`parse_errors`).
PARSE_ERRORS = (
    x509.InvalidVersion,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
)


class InvalidTrustRoot(ValueError):
    """A trusted root, CA certificate or log key that cannot be used.

    ``cause`` is the parser's own error when there was one: callers that word the problem
    their own way (a Model's status) quote it.
    """

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


@dataclasses.dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A Fulcio CA: its certificates (root last) and when it may have issued certificates."""

    certificates: tuple[x509.Certificate, ...]
    valid_from: datetime.datetime | None = None
    valid_until: datetime.datetime | None = None

    def valid_at(self, when: datetime.datetime) -> bool:
        return within(when, self.valid_from, self.valid_until)


@dataclasses.dataclass(frozen=True, slots=True)
class LogKey:
    """A transparency log's (Rekor's or a CT log's) public key and its validity window."""

    key: keys.PublicKey
    valid_from: datetime.datetime | None = None
    valid_until: datetime.datetime | None = None

    @property
    def log_id(self) -> str:
        return keys.fingerprint(self.key)

    def valid_at(self, when: datetime.datetime) -> bool:
        return within(when, self.valid_from, self.valid_until)


def within(
    when: datetime.datetime, start: datetime.datetime | None, end: datetime.datetime | None
) -> bool:
    """Validity windows are closed intervals (protobuf-specs TimeRange): the end still counts."""
    return (start is None or start <= when) and (end is None or when <= end)


@dataclasses.dataclass(frozen=True, slots=True)
class TrustMaterial:
    """What legacy keyless verification trusts: Fulcio CAs, Rekor keys and CT log keys."""

    authorities: tuple[CertificateAuthority, ...]
    rekor_keys: tuple[LogKey, ...]
    ct_keys: tuple[LogKey, ...] = ()

    def __post_init__(self) -> None:
        if not self.authorities:
            raise InvalidTrustRoot("trust material has no Fulcio certificate authority")
        if not self.rekor_keys:
            raise InvalidTrustRoot("trust material has no Rekor public key")

    @classmethod
    def from_pem(
        cls,
        *,
        fulcio: Sequence[bytes | str],
        rekor: Sequence[bytes | str],
        ct: Sequence[bytes | str] = (),
    ) -> TrustMaterial:
        """Trust material from PEM CA certificates and PEM log keys (no validity windows)."""
        authorities = tuple(
            CertificateAuthority(certificates=_load_certificates(pem, "Fulcio CA"))
            for pem in fulcio
        )
        return cls(
            authorities=authorities,
            rekor_keys=tuple(LogKey(key=_load_log_key(pem, "Rekor")) for pem in rekor),
            ct_keys=tuple(LogKey(key=_load_log_key(pem, "CT log")) for pem in ct),
        )


@dataclasses.dataclass(frozen=True, eq=False)
class TrustedRoot:
    """One trusted root, parsed once: ``sigstore`` for bundles, :attr:`material` for legacy.

    A root given as PEM certificates and keys (:meth:`from_material`) has no ``sigstore`` view
    and verifies legacy signatures only.
    """

    sigstore: sigstore_models.TrustedRoot | None
    pem_material: TrustMaterial | None = None

    @classmethod
    def from_material(cls, material: TrustMaterial) -> TrustedRoot:
        return cls(sigstore=None, pem_material=material)

    @functools.cached_property
    def material(self) -> TrustMaterial:
        """The Fulcio CAs and log keys, derived once; raises :class:`InvalidTrustRoot`.

        Derived on first use: a root the sigstore verifier accepts may still lack what legacy
        verification needs (a Rekor key), and only legacy verification must refuse it.
        """
        if self.pem_material is not None:
            return self.pem_material
        if self.sigstore is None:  # from_material rules this out
            raise InvalidTrustRoot("trusted root holds no trust material")
        return _material(self.sigstore._inner)


def load_trusted_root(data: bytes | str, *, trust_config: bool = False) -> TrustedRoot:
    """Parse a Sigstore ``trusted_root.json``; raise :class:`InvalidTrustRoot` saying why not.

    With ``trust_config`` a ``ClientTrustConfig`` is accepted too, for its ``trustedRoot``
    member: its signing config (whose schema has changed across releases) matters only for
    signing, so it is not parsed.
    """
    from sigstore import models as sigstore_models
    from sigstore_models.trustroot import v1 as trustroot_v1

    try:
        if trust_config:
            document = json.loads(data)
            if isinstance(document, dict) and isinstance(document.get("trustedRoot"), dict):
                document = document["trustedRoot"]
            data = json.dumps(document)
        return TrustedRoot(sigstore_models.TrustedRoot(trustroot_v1.TrustedRoot.from_json(data)))
    except parse_errors() as error:
        raise InvalidTrustRoot(
            f"trusted root is invalid: {messages.first_line(error)}", error
        ) from None


def parse_errors() -> tuple[type[BaseException], ...]:
    """:data:`PARSE_ERRORS` and the sigstore library's base error, for its parsers."""
    from sigstore import errors as sigstore_errors

    return (sigstore_errors.Error, *PARSE_ERRORS)


def _material(root: trustroot_v1.TrustedRoot) -> TrustMaterial:
    if not root.media_type.startswith("application/vnd.dev.sigstore.trustedroot"):
        raise InvalidTrustRoot(f"trusted root has media type {root.media_type!r}")
    authorities = []
    for authority in root.certificate_authorities:
        certificates = tuple(
            _load_der_certificate(cert.raw_bytes) for cert in authority.cert_chain.certificates
        )
        if not certificates:
            continue
        authorities.append(
            CertificateAuthority(
                certificates=certificates,
                valid_from=authority.valid_for.start,
                valid_until=authority.valid_for.end,
            )
        )
    return TrustMaterial(
        authorities=tuple(authorities),
        rekor_keys=_log_keys(root.tlogs, "Rekor"),
        ct_keys=_log_keys(root.ctlogs, "CT log"),
    )


def _log_keys(logs: Sequence[Any], what: str) -> tuple[LogKey, ...]:
    found = []
    for log in logs:
        public = log.public_key
        if public.raw_bytes is None:
            continue
        window = public.valid_for
        found.append(
            LogKey(
                key=_load_log_key(public.raw_bytes, what),
                valid_from=window.start if window else None,
                valid_until=window.end if window else None,
            )
        )
    return tuple(found)


def _load_log_key(data: bytes | str, what: str) -> keys.PublicKey:
    try:
        return keys.load(data)
    except keys.InvalidKey as error:
        raise InvalidTrustRoot(f"{what} key: {error}") from None


def _load_der_certificate(data: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError as error:
        raise InvalidTrustRoot(f"certificate is invalid: {messages.first_line(error)}") from None


def _load_certificates(data: bytes | str, what: str) -> tuple[x509.Certificate, ...]:
    raw = data.encode() if isinstance(data, str) else data
    try:
        certificates = tuple(x509.load_pem_x509_certificates(raw))
    except ValueError as error:
        raise InvalidTrustRoot(f"{what} PEM is invalid: {messages.first_line(error)}") from None
    if not certificates:
        raise InvalidTrustRoot(f"{what} PEM holds no certificate")
    return certificates
