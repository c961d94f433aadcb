"""The OpenSSF Model Signing (OMS) format, bit for bit as ``model_signing`` 1.x writes it.

A model is a directory (or one file). Every file becomes a resource descriptor
``{name, algorithm, digest}`` named by its POSIX path relative to the model root (``.``
when the model is a single file). Descriptors are ordered the way ``model_signing``
orders ``PurePosixPath`` objects (component by component, not as raw strings), and the
root digest -- the in-toto subject digest -- is SHA-256 over the concatenated *raw* bytes
of the resource digests in that order.

Signatures are Sigstore bundles holding a DSSE envelope whose payload is an in-toto
Statement v1 with predicate type ``https://model_signing/signature/v1.0``; the pre-1.0
predicate ``https://model_signing/Digests/v0.1`` (one subject per file) is still read.
Everything here is pure: bytes and strings in, frozen values out.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, Literal

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_IGNORED_PATHS",
    "DEFAULT_SHARD_SIZE",
    "HASHING_ALGORITHMS",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "PREDICATE_TYPE_COMPAT",
    "STATEMENT_TYPE",
    "Difference",
    "Manifest",
    "OmsError",
    "Resource",
    "Serialization",
    "build_statement",
    "compare",
    "format_digest",
    "is_ignored",
    "manifest_from_statement",
    "normalize_ignore_path",
    "pae",
    "pae_compat",
    "parse_digest",
    "root_digest",
    "serialization_for",
    "serialization_of_bundle",
    "shard_bounds",
    "sort_key",
    "statement_from_payload",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
PREDICATE_TYPE_COMPAT = "https://model_signing/Digests/v0.1"  # model_signing v0.2.x
PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"

# model_signing ignores these at the top of the model unless told otherwise; a path
# ignores itself and everything below it (``Path.is_relative_to``), nothing else.
DEFAULT_IGNORED_PATHS: tuple[str, ...] = (".git", ".gitattributes", ".github", ".gitignore")
DEFAULT_CHUNK_SIZE = 1 << 20  # model_signing reads 1 MiB at a time
DEFAULT_SHARD_SIZE = 1_000_000_000  # model_signing's shard size when sharding is chosen

# model_signing 1.1's hashing choices (``hashing_algorithm``), mapped to the hash_type its
# manifest records: its BLAKE2 engine is named blake2b, so "blake2" never appears in a manifest.
HASHING_ALGORITHMS: Mapping[str, str] = {
    "sha256": "sha256",
    "blake2": "blake2b",
    "blake3": "blake3",
}
# hash_type names as they appear in a predicate, mapped to the algorithm that hashes resources
# ("blake2" is read too: older writers used it).
_ALGORITHMS: Mapping[str, str] = {
    "sha256": "sha256",
    "blake2b": "blake2b",
    "blake2": "blake2b",
    "blake3": "blake3",
}
_HEX = re.compile(r"[0-9a-f]+")


class OmsError(ValueError):
    """A statement, digest or manifest that is not valid OMS; the message says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class Resource:
    """One file (or file shard) of a model: ``name`` relative to the root, hex ``digest``."""

    name: str
    algorithm: str
    digest: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "algorithm": self.algorithm, "digest": self.digest}


@dataclasses.dataclass(frozen=True, slots=True)
class Serialization:
    """How the manifest was made: ``predicate.serialization`` of a signature."""

    method: Literal["files", "shards"] = "files"
    hash_type: str = "sha256"
    allow_symlinks: bool = False
    shard_size: int | None = None
    ignore_paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.method == "shards" and (self.shard_size is None or self.shard_size <= 0):
            raise OmsError("shard serialization needs a positive shard_size")
        if self.hash_type not in _ALGORITHMS:
            raise OmsError(
                f"hash type {self.hash_type!r} is not supported (sha256, blake2b, blake3)"
            )
        if self.method == "shards" and self.algorithm == "blake3":
            # model_signing hashes blake3 by files even when asked for shards, and its verifier
            # does the same, so a shards/blake3 manifest never verifies there: nor here.
            raise OmsError("blake3 is never sharded by model_signing: use files serialization")

    @property
    def algorithm(self) -> str:
        """The algorithm that hashes each resource: sha256, blake2b or blake3."""
        return _ALGORITHMS[self.hash_type]

    @property
    def hashing_algorithm(self) -> str:
        """The algorithm as model_signing's ``hashing_algorithm`` (and Muster's CLI) names it."""
        return next(name for name, algo in HASHING_ALGORITHMS.items() if algo == self.algorithm)

    @property
    def hashing(self) -> Serialization:
        """Only how resources are hashed (method, algorithm, shard size), not which files."""
        return Serialization(self.method, self.hash_type, shard_size=self.shard_size)

    @property
    def resource_algorithm(self) -> str:
        """The ``algorithm`` of each resource, as model_signing names it."""
        if self.method == "shards":
            return f"{self.algorithm}-sharded-{self.shard_size}"
        return self.algorithm

    def to_json(self) -> dict[str, Any]:
        # Key order follows model_signing's serialization_parameters.
        out: dict[str, Any] = {"method": self.method, "hash_type": self.hash_type}
        if self.method == "shards":
            out["shard_size"] = self.shard_size
        out["allow_symlinks"] = self.allow_symlinks
        if self.ignore_paths:
            out["ignore_paths"] = list(self.ignore_paths)
        return out

    @classmethod
    def from_json(cls, data: object) -> Serialization:
        if not isinstance(data, Mapping):
            raise OmsError("predicate.serialization is not an object")
        method = data.get("method")
        if method not in ("files", "shards"):
            raise OmsError(f"serialization method {method!r} is not supported")
        hash_type = data.get("hash_type")
        if not isinstance(hash_type, str):
            raise OmsError("serialization.hash_type is missing")
        allow = data.get("allow_symlinks", False)
        # v0.2 compat wrote the string "false"; treat only a real true as true.
        allow_symlinks = allow is True or (isinstance(allow, str) and allow.lower() == "true")
        shard_size = data.get("shard_size")
        # Signed statements pass through protobuf's Struct, which writes 1000000000.0.
        if isinstance(shard_size, float) and shard_size.is_integer():
            shard_size = int(shard_size)
        if shard_size is not None and (
            isinstance(shard_size, bool) or not isinstance(shard_size, int)
        ):
            raise OmsError("serialization.shard_size is not an integer")
        ignore = data.get("ignore_paths", [])
        if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
            raise OmsError("serialization.ignore_paths is not a list of strings")
        return cls(
            method=method,
            hash_type=hash_type,
            allow_symlinks=allow_symlinks,
            shard_size=shard_size if method == "shards" else None,
            ignore_paths=tuple(ignore),
        )


def serialization_for(
    hashing_algorithm: str = "sha256",
    shard_size: int | None = None,
    *,
    allow_symlinks: bool = False,
    ignore_paths: Sequence[str] = (),
) -> Serialization:
    """The serialization model_signing's ``hashing.Config`` records for these choices.

    ``shard_size`` asks for shard serialization (``use_shard_serialization``); blake3 ignores
    it and hashes whole files, as model_signing does (BLAKE3 is parallel within a file).
    """
    hash_type = HASHING_ALGORITHMS.get(hashing_algorithm)
    if hash_type is None:
        raise OmsError(
            f"hashing algorithm {hashing_algorithm!r} is not supported "
            f"({', '.join(HASHING_ALGORITHMS)})"
        )
    shards = shard_size is not None and hash_type != "blake3"
    return Serialization(
        method="shards" if shards else "files",
        hash_type=hash_type,
        allow_symlinks=allow_symlinks,
        shard_size=shard_size if shards else None,
        ignore_paths=tuple(ignore_paths),
    )


def sort_key(name: str, method: str = "files") -> tuple[Any, ...]:
    """Order of resources: ``PurePosixPath`` order (by components), shards by offsets."""
    if method == "shards":
        path, start, end = _split_shard(name)
        return (PurePosixPath(path).parts, start, end)
    return (PurePosixPath(name).parts,)


def _split_shard(name: str) -> tuple[str, int, int]:
    parts = name.split(":")
    if len(parts) != 3:
        raise OmsError(f"shard resource {name!r} is not PATH:START:END")
    try:
        return parts[0], int(parts[1]), int(parts[2])
    except ValueError:
        raise OmsError(f"shard resource {name!r} has non-integer offsets") from None


def root_digest(resources: Iterable[Resource]) -> str:
    """SHA-256 over the raw resource digests, in the order given (hex)."""
    hasher = hashlib.sha256()
    for resource in resources:
        hasher.update(bytes.fromhex(resource.digest))
    return hasher.hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Manifest:
    """A model's resources in canonical order, with how they were serialized."""

    model_name: str
    resources: tuple[Resource, ...]
    serialization: Serialization = Serialization()

    @classmethod
    def build(
        cls, model_name: str, resources: Iterable[Resource], serialization: Serialization
    ) -> Manifest:
        ordered = sorted(resources, key=lambda r: sort_key(r.name, serialization.method))
        names = [r.name for r in ordered]
        if len(set(names)) != len(names):
            raise OmsError("manifest lists the same resource twice")
        return cls(model_name, tuple(ordered), serialization)

    @property
    def digest(self) -> str:
        """The subject digest as ``sha256:<hex>``."""
        return format_digest(root_digest(self.resources))

    def by_name(self) -> dict[str, Resource]:
        return {r.name: r for r in self.resources}


def format_digest(hex_digest: str) -> str:
    return f"sha256:{hex_digest}"


def parse_digest(text: str) -> str:
    """``sha256:<hex>`` (or bare hex) to lowercase hex; anything else is an error."""
    value = text.strip()
    algorithm, sep, rest = value.partition(":")
    if sep:
        if algorithm.lower() != "sha256":
            raise OmsError(f"digest {text!r}: only sha256 root digests exist in OMS")
        value = rest
    value = value.lower()
    if len(value) != 64 or not _HEX.fullmatch(value):
        raise OmsError(f"digest {text!r} is not 64 hex characters")
    return value


def normalize_ignore_path(path: str) -> str:
    """An ignore path as model_signing sees it relative to the root (``.git/`` -> ``.git``)."""
    normal = posixpath.normpath(path.replace("\\", "/"))
    return "" if normal == "." else normal


def is_ignored(relative: str, ignore_paths: Iterable[str]) -> bool:
    """Whether ``relative`` (POSIX, from the root) is an ignore path or lies below one."""
    for raw in ignore_paths:
        ignored = normalize_ignore_path(raw)
        if ignored.startswith("../") or ignored == "..":
            continue  # model_signing drops ignore paths outside the model
        if ignored == "" or relative == ignored or relative.startswith(ignored + "/"):
            return True
    return False


def shard_bounds(size: int, shard_size: int) -> list[tuple[int, int]]:
    """Shards of a file of ``size`` bytes; an empty file has none (as in model_signing)."""
    return [(start, min(start + shard_size, size)) for start in range(0, size, shard_size)]


def build_statement(manifest: Manifest) -> dict[str, Any]:
    """The in-toto Statement v1 that model_signing signs for ``manifest``."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": manifest.model_name, "digest": {"sha256": root_digest(manifest.resources)}}
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": manifest.serialization.to_json(),
            "resources": [r.to_json() for r in manifest.resources],
        },
    }


def statement_from_payload(payload_type: str, payload: bytes) -> Manifest:
    """Check a DSSE payload is an OMS in-toto statement and read its manifest."""
    if payload_type != PAYLOAD_TYPE:
        raise OmsError(f"DSSE payload type is {payload_type!r}, expected {PAYLOAD_TYPE!r}")
    try:
        statement = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OmsError(f"DSSE payload is not JSON: {error}") from None
    return manifest_from_statement(statement)


def serialization_of_bundle(bundle: Mapping[str, Any]) -> Serialization:
    """How the statement in a signature bundle hashed the model, read without verifying it.

    Only for choosing how to re-measure bytes against a digest that is trusted on its own;
    a signature is verified elsewhere before anything it says is believed.
    """
    envelope = bundle.get("dsseEnvelope")
    if not isinstance(envelope, Mapping) or not isinstance(envelope.get("payload"), str):
        raise OmsError("bundle has no DSSE envelope payload")
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
    except binascii.Error:
        raise OmsError("DSSE payload is not base64") from None
    return statement_from_payload(str(envelope.get("payloadType")), payload).serialization


def manifest_from_statement(statement: object) -> Manifest:
    """The manifest an in-toto statement signs, checking the subject digest matches it."""
    if not isinstance(statement, Mapping):
        raise OmsError("statement is not a JSON object")
    if statement.get("_type") != STATEMENT_TYPE:
        raise OmsError(f"statement _type is {statement.get('_type')!r}, expected {STATEMENT_TYPE}")
    predicate_type = statement.get("predicateType")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise OmsError("statement has no subject")
    if predicate_type == PREDICATE_TYPE_COMPAT:
        return _manifest_from_compat(subjects)
    if predicate_type != PREDICATE_TYPE:
        raise OmsError(f"predicate type {predicate_type!r} is not an OMS model signature")
    if len(subjects) != 1:
        raise OmsError(f"expected one subject, got {len(subjects)}")
    name, expected = _subject(subjects[0])
    predicate = statement.get("predicate")
    if not isinstance(predicate, Mapping):
        raise OmsError("statement has no predicate")
    serialization = Serialization.from_json(predicate.get("serialization"))
    raw = predicate.get("resources")
    if not isinstance(raw, list):
        raise OmsError("predicate.resources is not a list")
    resources = [_resource(item) for item in raw]
    # The subject digest covers the resources in the order they were signed.
    obtained = root_digest(resources)
    if obtained != expected:
        raise OmsError(
            f"statement is inconsistent: subject digest is sha256:{expected} "
            f"but its resources hash to sha256:{obtained}"
        )
    return Manifest.build(name, resources, serialization)


def _manifest_from_compat(subjects: Sequence[object]) -> Manifest:
    serialization = Serialization(method="files", hash_type="sha256")
    resources = []
    for subject in subjects:
        name, digest = _subject(subject)
        resources.append(Resource(name, "sha256", digest))
    return Manifest.build("compat-undefined-not-present", resources, serialization)


def _subject(subject: object) -> tuple[str, str]:
    if not isinstance(subject, Mapping):
        raise OmsError("statement subject is not an object")
    name = subject.get("name")
    digest = subject.get("digest")
    if not isinstance(name, str) or not isinstance(digest, Mapping):
        raise OmsError("statement subject lacks a name or digest")
    value = digest.get("sha256")
    if not isinstance(value, str) or not _HEX.fullmatch(value.lower()) or len(value) != 64:
        raise OmsError(f"subject {name!r} has no sha256 digest")
    return name, value.lower()


def _resource(item: object) -> Resource:
    if not isinstance(item, Mapping):
        raise OmsError("predicate resource is not an object")
    name, algorithm, digest = item.get("name"), item.get("algorithm"), item.get("digest")
    if not (isinstance(name, str) and isinstance(algorithm, str) and isinstance(digest, str)):
        raise OmsError("predicate resource lacks name, algorithm or digest")
    digest = digest.lower()
    if not digest or len(digest) % 2 or not _HEX.fullmatch(digest):
        raise OmsError(f"resource {name!r} digest is not hex")
    return Resource(name, algorithm, digest)


@dataclasses.dataclass(frozen=True, slots=True)
class Difference:
    """One way the measured model differs from the signed one."""

    kind: Literal["changed", "missing", "extra"]
    name: str
    expected: str | None = None
    actual: str | None = None

    @property
    def message(self) -> str:
        if self.kind == "changed":
            return f"{self.name}: content changed (expected {self.expected}, found {self.actual})"
        if self.kind == "missing":
            return f"{self.name}: missing (signed, but not in the model)"
        return f"{self.name}: extra file (in the model, but not signed)"

    def to_json(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "name": self.name,
            "expected": self.expected,
            "actual": self.actual,
        }


def compare(expected: Manifest, actual: Manifest) -> tuple[Difference, ...]:
    """Every difference between two manifests, sorted by resource order; empty means equal.

    Like model_signing, two resources are the same when name and digest bytes are equal;
    an algorithm mismatch counts as a change.
    """
    want, have = expected.by_name(), actual.by_name()
    method = expected.serialization.method
    found: list[Difference] = []
    for name in sorted(want.keys() | have.keys(), key=lambda n: _safe_sort_key(n, method)):
        if name not in have:
            found.append(Difference("missing", name, expected=want[name].digest))
        elif name not in want:
            found.append(Difference("extra", name, actual=have[name].digest))
        elif (want[name].algorithm, want[name].digest) != (have[name].algorithm, have[name].digest):
            found.append(
                Difference(
                    "changed",
                    name,
                    expected=f"{want[name].algorithm}:{want[name].digest}",
                    actual=f"{have[name].algorithm}:{have[name].digest}",
                )
            )
    return tuple(found)


def _safe_sort_key(name: str, method: str) -> tuple[Any, ...]:
    try:
        return sort_key(name, method)
    except OmsError:
        return (PurePosixPath(name).parts,)


def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """DSSE v1 pre-authentication encoding, what the envelope signature covers."""
    header = f"DSSEv1 {len(payload_type)} {payload_type} {len(payload)}"
    return header.encode() + b" " + payload


def pae_compat(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """The PAE of model_signing before 1.0, which embedded ``repr(bytes)``; still verified."""
    return f"DSSEV1 {len(payload_type)} {payload_type} {len(payload)} {payload!r}".encode()
