"""A local Sigstore for keyless tests: Fulcio, a CT log, Rekor v1 and v2, a timestamp authority.

Keyless signing needs a certificate from Fulcio (with the OIDC issuer and subject an identity
token proved), an SCT from a CT log, and a transparency-log entry (Rekor v1 with a signed
integrated time, or Rekor v2 with an RFC 3161 timestamp); none of the public services may be
reached from the tests. :class:`LocalSigstore` stands in for them with throwaway keys: it
issues Fulcio-shaped certificates (issuer extensions 1.3.6.1.4.1.57264.1.1 and .1.8, SAN,
code-signing EKU, an embedded SCT its CT log key signed), serves the Rekor v1 and v2 APIs and
a timestamp authority that the real cosign v3 uploads to (``--signing-config``), and writes the
``trusted_root.json`` naming its CA, log keys and TSA. Nothing here is a mock of Muster: it is
the outside world Muster verifies, and the real ``cosign verify`` accepts what it makes.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import hashlib
import http.server
import json
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import rfc8785
from asn1crypto import algos, cms, core, tsp  # type: ignore[import-untyped]
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["GITHUB_ISSUER", "KeylessSigner", "LocalSigstore", "local_sigstore"]

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_SCT_LIST = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
_START = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)


def _der(key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_id(key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> bytes:
    """RFC 6962 log id: the SHA-256 of the key's DER SubjectPublicKeyInfo."""
    return hashlib.sha256(_der(key)).digest()


def _der_utf8(text: str) -> bytes:
    raw = text.encode()
    if len(raw) >= 128:
        raise ValueError("issuer too long for this helper")
    return bytes([0x0C, len(raw)]) + raw


def _der_octets(raw: bytes) -> bytes:
    if len(raw) < 128:
        return bytes([0x04, len(raw)]) + raw
    length = len(raw).to_bytes((len(raw).bit_length() + 7) // 8, "big")
    return bytes([0x04, 0x80 | len(length)]) + length + raw


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _ca_certificate(
    key: ec.EllipticCurvePrivateKey, common_name: str, now: datetime.datetime
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "muster-tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )


def _tsa_certificate(
    key: ec.EllipticCurvePrivateKey, root: x509.Certificate, root_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    """A timestamping leaf: RFC 3161 wants the timeStamping EKU, critical and alone."""
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "muster-tests timestamping")])
        )
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(root.not_valid_before_utc)
        .not_valid_after(root.not_valid_after_utc)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )


@dataclasses.dataclass(frozen=True)
class KeylessSigner:
    """What an OIDC login at Fulcio would have given a signer: a key and its certificate."""

    key: Path  # PEM private key, unencrypted (cosign reads it with COSIGN_PASSWORD="")
    certificate: Path  # PEM leaf
    chain: Path  # PEM CA chain, root last
    subject: str
    issuer: str


class LocalSigstore:
    """Fulcio, CT log and Rekor, standing in for Sigstore's public instances."""

    def __init__(self, workdir: Path, *, name: str = "local", earlier: int = 5) -> None:
        self.workdir = workdir
        self.name = name
        now = datetime.datetime.now(datetime.UTC)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _ca_certificate(self.ca_key, f"{name} fulcio", now)
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        self.rekor_url = f"https://rekor.{name}.test"
        # Canonicalized bodies in log order; ``earlier`` entries first, as any real log has
        # (with none, the first entry has index 0 and no proof hashes: protojson omits both).
        self.entries: list[bytes] = [f"earlier entry {i}".encode() for i in range(earlier)]
        # Rekor v2 (rekor-tiles): an Ed25519 checkpoint key, its log id the signed-note key id.
        self.rekor_v2_key = ed25519.Ed25519PrivateKey.generate()
        self.rekor_v2_origin = f"rekor-v2.{name}.test"
        self.v2_entries: list[bytes] = [f"earlier v2 entry {i}".encode() for i in range(earlier)]
        # A timestamp authority: Rekor v2 entries carry no signed time, an RFC 3161 stamp does.
        self.tsa_root_key = ec.generate_private_key(ec.SECP256R1())
        self.tsa_root = _ca_certificate(self.tsa_root_key, f"{name} tsa root", now)
        self.tsa_key = ec.generate_private_key(ec.SECP256R1())
        self.tsa_certificate = _tsa_certificate(self.tsa_key, self.tsa_root, self.tsa_root_key)
        self.service_url = f"https://services.{name}.test"  # local_sigstore serves it
        self._lock = threading.Lock()

    # -- Fulcio ----------------------------------------------------------------------------

    def issue(
        self,
        subject: str,
        issuer: str = GITHUB_ISSUER,
        *,
        label: str = "signer",
        lifetime: datetime.timedelta = datetime.timedelta(minutes=10),
    ) -> KeylessSigner:
        """A short-lived Fulcio-shaped certificate for ``subject`` (an email or a URI)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=30)
        san: x509.GeneralName = (
            x509.UniformResourceIdentifier(subject)
            if "://" in subject
            else x509.RFC822Name(subject)
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))  # Fulcio leaves the subject empty; the SAN names
            .issuer_name(self.ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + lifetime)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(x509.UnrecognizedExtension(_ISSUER_V1, issuer.encode()), False)
            .add_extension(x509.UnrecognizedExtension(_ISSUER_V2, _der_utf8(issuer)), False)
        )
        # The CT log signs the precertificate (the TBS without the SCT list); the SCT list is
        # then the last extension, so removing it gives back exactly the bytes signed.
        precertificate = builder.sign(self.ca_key, hashes.SHA256())
        sct = self._sct(precertificate.tbs_certificate_bytes, now)
        certificate = builder.add_extension(
            x509.UnrecognizedExtension(_SCT_LIST, _der_octets(sct)), critical=False
        ).sign(self.ca_key, hashes.SHA256())
        if certificate.tbs_precertificate_bytes != precertificate.tbs_certificate_bytes:
            raise AssertionError("precertificate bytes differ from what the CT log signed")
        paths = KeylessSigner(
            key=self.workdir / f"{label}.key",
            certificate=self.workdir / f"{label}.crt",
            chain=self.workdir / f"{self.name}-fulcio-chain.crt",
            subject=subject,
            issuer=issuer,
        )
        paths.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        paths.certificate.write_bytes(_pem(certificate))
        paths.chain.write_bytes(_pem(self.ca))
        return paths

    def _sct(self, tbs: bytes, when: datetime.datetime) -> bytes:
        """An RFC 6962 SignedCertificateTimestampList holding one precertificate SCT."""
        timestamp = int(when.timestamp() * 1000)
        issuer_key_hash = _key_id(self.ca_key.public_key())
        signed = (
            struct.pack("!BBQH", 0, 0, timestamp, 1)
            + issuer_key_hash
            + len(tbs).to_bytes(3, "big")
            + tbs
            + struct.pack("!H", 0)
        )
        signature = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        sct = (
            struct.pack("!B", 0)
            + _key_id(self.ct_key.public_key())
            + struct.pack("!QH", timestamp, 0)
            + struct.pack("!BBH", 4, 3, len(signature))  # sha256, ecdsa
            + signature
        )
        entry = struct.pack("!H", len(sct)) + sct
        return struct.pack("!H", len(entry)) + entry

    # -- Rekor -----------------------------------------------------------------------------

    def log(self, body: bytes) -> dict[str, Any]:
        """Append a canonicalized entry body; return Rekor v1's answer for it (LogEntryAnon)."""
        with self._lock:
            self.entries.append(body)
            index = len(self.entries) - 1
            leaves = [hashlib.sha256(b"\x00" + entry).digest() for entry in self.entries]
        root, proof = _inclusion(leaves, index)
        integrated = int(datetime.datetime.now(datetime.UTC).timestamp())
        log_id = _key_id(self.rekor_key.public_key()).hex()
        promise = rfc8785.dumps(
            {
                "body": base64.b64encode(body).decode(),
                "integratedTime": integrated,
                "logID": log_id,
                "logIndex": index,
            }
        )
        origin = f"rekor.{self.name}.test - 1"
        note = f"{origin}\n{len(leaves)}\n{base64.b64encode(root).decode()}\n"
        signature = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        hint = bytes.fromhex(log_id)[:4]
        checkpoint = (
            f"{note}\n\u2014 rekor.{self.name}.test {base64.b64encode(hint + signature).decode()}\n"
        )
        return {
            "body": base64.b64encode(body).decode(),
            "integratedTime": integrated,
            "logID": log_id,
            "logIndex": index,
            "verification": {
                "signedEntryTimestamp": base64.b64encode(
                    self.rekor_key.sign(promise, ec.ECDSA(hashes.SHA256()))
                ).decode(),
                "inclusionProof": {
                    "logIndex": index,
                    "treeSize": len(leaves),
                    "rootHash": root.hex(),
                    "hashes": [h.hex() for h in proof],
                    "checkpoint": checkpoint,
                },
            },
        }

    def log_v2(self, body: bytes) -> dict[str, Any]:
        """Append an entry to the Rekor v2 log; return its TransparencyLogEntry (protojson)."""
        with self._lock:
            self.v2_entries.append(body)
            index = len(self.v2_entries) - 1
            leaves = [hashlib.sha256(b"\x00" + entry).digest() for entry in self.v2_entries]
        root, proof = _inclusion(leaves, index)
        note = f"{self.rekor_v2_origin}\n{len(leaves)}\n{base64.b64encode(root).decode()}\n"
        signature = self.rekor_v2_key.sign(note.encode())
        log_id = self.rekor_v2_log_id
        signed = base64.b64encode(log_id[:4] + signature).decode()
        kind = json.loads(body)
        return {
            "logIndex": str(index),
            "logId": {"keyId": base64.b64encode(log_id).decode()},
            "kindVersion": {"kind": kind["kind"], "version": kind["apiVersion"]},
            "inclusionProof": {
                "logIndex": str(index),
                "rootHash": base64.b64encode(root).decode(),
                "treeSize": str(len(leaves)),
                "hashes": [base64.b64encode(h).decode() for h in proof],
                "checkpoint": {"envelope": f"{note}\n\u2014 {self.rekor_v2_origin} {signed}\n"},
            },
            "canonicalizedBody": base64.b64encode(body).decode(),
        }

    @property
    def rekor_v2_log_id(self) -> bytes:
        """The C2SP signed-note key id (Ed25519): SHA-256(name, newline, 0x01, raw key)."""
        raw = self.rekor_v2_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return hashlib.sha256(self.rekor_v2_origin.encode() + b"\n\x01" + raw).digest()

    # -- Timestamp authority ---------------------------------------------------------------

    def timestamp(self, request: bytes) -> bytes:
        """An RFC 3161 TimeStampResp (status granted) for a DER TimeStampReq."""
        query = tsp.TimeStampReq.load(request)
        info = tsp.TSTInfo(
            {
                "version": "v1",
                "policy": "1.3.6.1.4.1.57264.2",
                "message_imprint": query["message_imprint"],
                "serial_number": x509.random_serial_number(),
                "gen_time": datetime.datetime.now(datetime.UTC).replace(microsecond=0),
                "nonce": query["nonce"].native,
            }
        )
        content = info.dump()
        certificate = asn1_x509.Certificate.load(
            self.tsa_certificate.public_bytes(serialization.Encoding.DER)
        )
        attributes = cms.CMSAttributes(
            [
                cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
                cms.CMSAttribute(
                    {"type": "message_digest", "values": [hashlib.sha256(content).digest()]}
                ),
                cms.CMSAttribute(
                    {
                        "type": "signing_certificate_v2",
                        "values": [
                            {"certs": [{"cert_hash": hashlib.sha256(certificate.dump()).digest()}]}
                        ],
                    }
                ),
            ]
        )
        signature = self.tsa_key.sign(attributes.dump(), ec.ECDSA(hashes.SHA256()))
        signer = cms.SignerInfo(
            {
                "version": "v1",
                "sid": cms.SignerIdentifier(
                    {
                        "issuer_and_serial_number": {
                            "issuer": certificate.issuer,
                            "serial_number": certificate.serial_number,
                        }
                    }
                ),
                "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                "signed_attrs": attributes,
                "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}),
                "signature": signature,
            }
        )
        signed_data = cms.SignedData(
            {
                "version": "v3",
                "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
                "encap_content_info": {
                    "content_type": "tst_info",
                    "content": core.ParsableOctetString(content),
                },
                "certificates": [certificate] if query["cert_req"].native else [],
                "signer_infos": [signer],
            }
        )
        token = cms.ContentInfo({"content_type": "signed_data", "content": signed_data})
        response = tsp.TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token})
        return bytes(response.dump())

    # -- Trust -----------------------------------------------------------------------------

    def trusted_root(self) -> dict[str, Any]:
        """The ``trusted_root.json`` a cluster would hold for this Sigstore."""

        def log(
            url: str,
            key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
            log_id: bytes | None = None,
        ) -> dict[str, Any]:
            ecdsa = isinstance(key, ec.EllipticCurvePrivateKey)
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": base64.b64encode(_der(key.public_key())).decode(),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256" if ecdsa else "PKIX_ED25519",
                    "validFor": {"start": _START.strftime("%Y-%m-%dT%H:%M:%SZ")},
                },
                "logId": {"keyId": base64.b64encode(log_id or _key_id(key.public_key())).decode()},
            }

        def chain(*certificates: x509.Certificate) -> dict[str, Any]:
            return {
                "certificates": [
                    {
                        "rawBytes": base64.b64encode(
                            c.public_bytes(serialization.Encoding.DER)
                        ).decode()
                    }
                    for c in certificates
                ]
            }

        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [
                log(self.rekor_url, self.rekor_key),
                log(f"https://{self.rekor_v2_origin}", self.rekor_v2_key, self.rekor_v2_log_id),
            ],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "muster-tests", "commonName": f"{self.name}"},
                    "uri": f"https://fulcio.{self.name}.test",
                    "certChain": chain(self.ca),
                    "validFor": {"start": _START.strftime("%Y-%m-%dT%H:%M:%SZ")},
                }
            ],
            "ctlogs": [log(f"https://ctfe.{self.name}.test", self.ct_key)],
            "timestampAuthorities": [
                {
                    "subject": {"organization": "muster-tests", "commonName": f"{self.name} tsa"},
                    "uri": f"https://tsa.{self.name}.test",
                    "certChain": chain(self.tsa_certificate, self.tsa_root),
                    "validFor": {"start": _START.strftime("%Y-%m-%dT%H:%M:%SZ")},
                }
            ],
        }

    def trusted_root_json(self) -> str:
        return json.dumps(self.trusted_root(), indent=2)


def _hash_children(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _root(leaves: list[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash."""
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return _hash_children(_root(leaves[:split]), _root(leaves[split:]))


def _inclusion(leaves: list[bytes], index: int) -> tuple[bytes, list[bytes]]:
    """The tree's root and the RFC 6962 audit path of leaf ``index``."""

    def path(index: int, leaves: list[bytes]) -> list[bytes]:
        if len(leaves) <= 1:
            return []
        split = 1 << ((len(leaves) - 1).bit_length() - 1)
        if index < split:
            return [*path(index, leaves[:split]), _root(leaves[split:])]
        return [*path(index - split, leaves[split:]), _root(leaves[:split])]

    return _root(leaves), path(index, leaves)


def _canonical_entry(proposed: dict[str, Any]) -> bytes:
    """The body Rekor v1 logs for a proposed ``dsse`` or ``hashedrekord`` 0.0.1 entry."""
    kind, spec = proposed["kind"], proposed["spec"]
    if kind == "dsse":
        content = spec["proposedContent"]
        envelope = json.loads(content["envelope"])
        payload = base64.b64decode(envelope["payload"])
        verifiers = content["verifiers"]
        body = {
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(content["envelope"].encode()).hexdigest(),
                },
                "payloadHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(payload).hexdigest(),
                },
                "signatures": [
                    {"signature": signature["sig"], "verifier": verifiers[0]}
                    for signature in envelope["signatures"]
                ],
            },
        }
    elif kind == "hashedrekord":
        body = {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": spec}
    else:
        raise ValueError(f"this Rekor logs dsse and hashedrekord entries, not {kind}")
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def _canonical_v2_entry(request: dict[str, Any]) -> bytes:
    """The body Rekor v2 logs for a CreateEntryRequest (protojson)."""
    if "hashedRekordRequestV002" in request:
        proposed = request["hashedRekordRequestV002"]
        spec: dict[str, Any] = {
            "hashedRekordV002": {
                "data": {"algorithm": "SHA2_256", "digest": proposed["digest"]},
                "signature": proposed["signature"],
            }
        }
        kind = "hashedrekord"
    elif "dsseRequestV002" in request:
        proposed = request["dsseRequestV002"]
        payload = base64.b64decode(proposed["envelope"]["payload"])
        spec = {
            "dsseV002": {
                "payloadHash": {
                    "algorithm": "SHA2_256",
                    "digest": base64.b64encode(hashlib.sha256(payload).digest()).decode(),
                },
                "signatures": [
                    {"content": signature["sig"], "verifier": proposed["verifiers"][0]}
                    for signature in proposed["envelope"]["signatures"]
                ],
            }
        }
        kind = "dsse"
    else:
        raise ValueError(f"unknown Rekor v2 request {sorted(request)}")
    body = {"apiVersion": "0.0.2", "kind": kind, "spec": spec}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


@contextlib.contextmanager
def local_sigstore(
    workdir: Path, *, name: str = "local", earlier: int = 5
) -> Iterator[LocalSigstore]:
    """A :class:`LocalSigstore` whose Rekor v1 and v2 APIs and timestamp authority answer on
    a loopback port (:attr:`LocalSigstore.service_url`)."""
    sigstore = LocalSigstore(workdir, name=name, earlier=earlier)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = self.rfile.read(int(self.headers["Content-Length"]))
            headers: dict[str, str] = {}
            try:
                if self.path == "/api/v1/log/entries":
                    body = _canonical_entry(json.loads(request))
                    uuid = hashlib.sha256(b"\x00" + body).hexdigest()
                    answer = json.dumps({uuid: sigstore.log(body)}).encode()
                    # sigstore-go picks the entry out of the answer by this header.
                    headers = {"ETag": uuid, "Location": f"/api/v1/log/entries/{uuid}"}
                    kind = "application/json"
                elif self.path == "/api/v2/log/entries":
                    entry = sigstore.log_v2(_canonical_v2_entry(json.loads(request)))
                    answer = json.dumps(entry).encode()
                    kind = "application/json"
                elif self.path == "/api/v1/timestamp":
                    answer = sigstore.timestamp(request)
                    kind = "application/timestamp-reply"
                else:
                    self.send_error(404)
                    return
            except (KeyError, TypeError, ValueError) as error:
                self.send_error(400, str(error))
                return
            self._answer(201 if kind == "application/json" else 200, kind, answer, headers)

        def _answer(self, status: int, kind: str, answer: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(answer)))
            for header, value in headers.items():
                self.send_header(header, value)
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sigstore.service_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sigstore
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def signing_config(sigstore: LocalSigstore, *, rekor: int = 1) -> str:
    """A cosign v3 ``--signing-config`` that logs to the local Rekor (v1, or v2 with the local
    timestamp authority, as cosign 3.0.5 and later do with Sigstore's) and nowhere else."""
    start = {"start": _START.strftime("%Y-%m-%dT%H:%M:%SZ")}
    service = {"validFor": start, "operator": "muster-tests"}
    url = sigstore.service_url
    return json.dumps(
        {
            "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
            "caUrls": [
                {"url": f"https://fulcio.{sigstore.name}.test", "majorApiVersion": 1, **service}
            ],
            "oidcUrls": [],
            "rekorTlogUrls": [{"url": url, "majorApiVersion": rekor, **service}],
            "tsaUrls": (
                [{"url": f"{url}/api/v1/timestamp", "majorApiVersion": 1, **service}]
                if rekor == 2
                else []
            ),
            "rekorTlogConfig": {"selector": "ANY"},
            "tsaConfig": {"selector": "ANY"},
        }
    )


def sign_image(sigstore: LocalSigstore, signer: KeylessSigner, ref: str, *, rekor: int = 1) -> None:
    """Sign ``ref`` (by digest) as keyless cosign v3 does, with the real cosign: a v0.3 bundle
    over the cosign/sign/v1 statement, the Fulcio-shaped certificate in it, its DSSE entry
    logged in the local Rekor (``rekor`` 1, or 2 with a signed timestamp), attached as an OCI
    referrer (or the tag fallback)."""
    from tests import peers  # here, not at the top: peers is only needed for signing

    env = {"COSIGN_PASSWORD": ""}
    imported = signer.key.with_name(f"{signer.key.stem}-cosign")
    if not imported.with_suffix(".key").exists():
        # cosign reads keys in its own encrypted format only.
        peers.run_tool(
            "cosign",
            "import-key-pair",
            f"--key={signer.key}",
            f"--output-key-prefix={imported}",
            "-y",
            env=env,
        )
    config = sigstore.workdir / f"{sigstore.name}-signing-config-v{rekor}.json"
    config.write_text(signing_config(sigstore, rekor=rekor))
    root = sigstore.workdir / f"{sigstore.name}-trusted_root.json"
    root.write_text(sigstore.trusted_root_json())
    # The leaf alone: cosign writes a v0.3 bundle's certificate then, as with Fulcio.
    peers.run_tool(
        "cosign",
        "sign",
        f"--key={imported.with_suffix('.key')}",
        f"--certificate={signer.certificate}",
        f"--signing-config={config}",
        f"--trusted-root={root}",
        "--allow-http-registry",
        "-y",
        ref,
        env=env,
    )
