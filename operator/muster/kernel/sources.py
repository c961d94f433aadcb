"""Where models and datasets are fetched from: storage URIs read as one canonical text.

A Model or Dataset names its sources (`hf://org/name@revision`, `s3://bucket/prefix`, ...); a pod
or a TrainJob names the URI its initializer downloads. The two are compared as canonical text so
that spelling (scheme case, a trailing slash, a default port, KServe's `:revision`) never decides
an admission. The grammar is small and fixed, which is why it is parsed here rather than with a
general URI library: `hf://` and `s3://` are not hierarchical URLs and urllib would accept
anything; https URLs do go through urllib.parse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "DOWNLOADED",
    "SCHEMES",
    "Source",
    "SourceError",
    "matches",
    "parse",
    "trainer_initializer_uris",
]

# Schemes whose bytes an initializer (KServe storage-initializer, Trainer initializers) fetches
# onto a volume before the workload starts; only those need the re-measuring init container.
DOWNLOADED = ("hf", "s3", "gs", "https", "http")
SCHEMES = (*DOWNLOADED, "oci", "pvc")

_HF_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,253}[a-z0-9]$")
_OCI_REPO = re.compile(r"^[a-z0-9][a-z0-9._:-]*(/[a-z0-9][a-z0-9._-]*)+$")
_DIGEST = re.compile(r"^sha(256:[0-9a-f]{64}|512:[0-9a-f]{128})$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DNS_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HEX40 = re.compile(r"^[0-9a-fA-F]{40}$")
_MAX_LENGTH = 2048


class SourceError(ValueError):
    """A source URI that cannot be read; the message says what is wrong with it."""


@dataclass(frozen=True)
class Source:
    scheme: str
    location: str
    revision: str | None
    text: str  # canonical "scheme://location[@revision]"

    @property
    def downloaded(self) -> bool:
        return self.scheme in DOWNLOADED

    @property
    def pinned(self) -> bool:
        """Whether the URI names one version: hf:// and oci:// need a revision (digest);
        s3/gs/http(s) have none to give, the OMS digest is what pins their bytes."""
        if self.scheme == "hf":
            return self.revision is not None
        if self.scheme == "oci":
            return self.revision is not None and _DIGEST.match(self.revision) is not None
        return True


def parse(uri: str) -> Source:
    """The canonical Source of `uri`; SourceError saying what is wrong otherwise."""
    if not isinstance(uri, str):
        raise SourceError(f"a source URI must be a string, not {type(uri).__name__}")
    text = uri.strip()
    if not text:
        raise SourceError("empty source URI")
    if len(text) > _MAX_LENGTH:
        raise SourceError(f"source URI longer than {_MAX_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in text):
        raise SourceError(f"source URI {text!r} contains whitespace or control characters")
    scheme, sep, rest = text.partition("://")
    if not sep or not scheme:
        raise SourceError(
            f"source URI {text!r} has no scheme:// (expected one of {', '.join(SCHEMES)})"
        )
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise SourceError(
            f"source URI {text!r}: unsupported scheme {scheme!r}"
            f" (expected one of {', '.join(SCHEMES)})"
        )
    if scheme == "hf":
        return _hf(text, rest)
    if scheme in ("s3", "gs"):
        return _bucket(text, scheme, rest)
    if scheme in ("http", "https"):
        return _web(text, scheme)
    if scheme == "oci":
        return _oci(text, rest)
    return _pvc(text, rest)


def matches(approved: str, used: str) -> bool:
    """Whether the source a workload downloads (`used`) is the one a Model/Dataset names
    (`approved`): canonical equality; an hf:// source matches only with the same revision, and
    an unpinned hf:// URI matches nothing. Unreadable URIs match nothing."""
    try:
        a, u = parse(approved), parse(used)
    except SourceError:
        return False
    if a.scheme in ("hf", "oci") and not (a.pinned and u.pinned):
        return False
    # parse() lowercases commit ids, so a commit names the same commit in either case.
    return a.text == u.text


def _text(scheme: str, location: str, revision: str | None) -> str:
    return f"{scheme}://{location}" + (f"@{revision}" if revision else "")


def _hf(original: str, rest: str) -> Source:
    """hf://[datasets/|models/]org/name[@revision] (KServe also writes `:revision`)."""
    body = rest.rstrip("/")
    revision: str | None = None
    if "@" in body:
        body, _, revision = body.partition("@")
        if not revision:
            raise SourceError(f"hf source {original!r}: empty revision after '@'")
    elif ":" in body:
        body, _, revision = body.rpartition(":")
        if not revision:
            raise SourceError(f"hf source {original!r}: empty revision after ':'")
    if revision is not None and not _REVISION.match(revision):
        raise SourceError(
            f"hf source {original!r}: revision {revision!r} is not a branch, tag or commit id"
        )
    parts = [p for p in body.split("/")]
    kind = ""
    if parts and parts[0] in ("datasets", "models"):
        kind = parts.pop(0)
    if len(parts) not in (1, 2) or not all(parts):
        raise SourceError(
            f"hf source {original!r}: expected hf://org/name[@revision] or hf://datasets/org/name[@revision]"
        )
    for part in parts:
        if not _HF_PART.match(part) or ".." in part or len(part) > 96:
            raise SourceError(
                f"hf source {original!r}: {part!r} is not a valid Hugging Face repository name part"
            )
    # models/ is the default repository type on the Hub: hf://models/a/b is hf://a/b.
    location = "/".join((["datasets"] if kind == "datasets" else []) + parts)
    if revision is not None and _HEX40.match(revision):
        revision = revision.lower()
    return Source("hf", location, revision, _text("hf", location, revision))


def _bucket(original: str, scheme: str, rest: str) -> Source:
    bucket, _, key = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise SourceError(f"{scheme} source {original!r}: {bucket!r} is not a valid bucket name")
    key = key.strip("/")
    if "//" in key or any(seg in (".", "..") for seg in key.split("/")):
        raise SourceError(
            f"{scheme} source {original!r}: the object path has empty, '.' or '..' segments"
        )
    location = f"{bucket}/{key}" if key else bucket
    return Source(scheme, location, None, _text(scheme, location, None))


def _web(original: str, scheme: str) -> Source:
    try:
        parts = urlsplit(original)
        port = parts.port
    except ValueError as exc:
        raise SourceError(f"{scheme} source {original!r}: {exc}") from None
    host = (parts.hostname or "").lower()
    if not host:
        raise SourceError(f"{scheme} source {original!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise SourceError(
            f"{scheme} source {original!r}: credentials do not belong in a source URI"
        )
    if parts.fragment:
        raise SourceError(
            f"{scheme} source {original!r}: a fragment is not part of what is downloaded"
        )
    default = 443 if scheme == "https" else 80
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != default:
        netloc = f"{netloc}:{port}"
    path = parts.path.rstrip("/")
    if any(seg in (".", "..") for seg in path.split("/")):
        raise SourceError(f"{scheme} source {original!r}: the path has '.' or '..' segments")
    canonical = urlunsplit((scheme, netloc, path, parts.query, ""))
    location = canonical.split("://", 1)[1]
    return Source(scheme, location, None, canonical)


def _oci(original: str, rest: str) -> Source:
    body = rest
    revision: str | None = None
    if "@" in body:
        body, _, revision = body.partition("@")
        if not _DIGEST.match(revision):
            raise SourceError(
                f"oci source {original!r}: {revision!r} is not a sha256/sha512 digest"
            )
    else:
        head, sep, tag = body.rpartition(":")
        if sep and "/" not in tag:
            if not _TAG.match(tag):
                raise SourceError(f"oci source {original!r}: {tag!r} is not a valid tag")
            body, revision = head, tag
    if not _OCI_REPO.match(body):
        raise SourceError(
            f"oci source {original!r}: expected oci://registry/repository[@sha256:...]"
        )
    return Source("oci", body, revision, _text("oci", body, revision))


def _pvc(original: str, rest: str) -> Source:
    name, _, path = rest.partition("/")
    if not _DNS_NAME.match(name):
        raise SourceError(f"pvc source {original!r}: {name!r} is not a valid claim name")
    path = path.strip("/")
    if any(seg in ("", ".", "..") for seg in path.split("/")) and path:
        raise SourceError(f"pvc source {original!r}: the path has empty, '.' or '..' segments")
    location = f"{name}/{path}" if path else name
    return Source("pvc", location, None, _text("pvc", location, None))


def _string_at(obj: Mapping[str, object], *path: str) -> str | None:
    node: object = obj
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node if isinstance(node, str) and node.strip() else None


def trainer_initializer_uris(obj: Mapping[str, object]) -> dict[str, str]:
    """The storage URIs a Kubeflow TrainJob's initializers download: {"dataset": uri, "model": uri}
    (absent keys when not set). trainer.kubeflow.org/v1alpha1 (Trainer v2.1+) writes
    spec.initializer.{dataset,model}.storageUri; the older v2alpha1 API wrote
    spec.datasetConfig.storageUri and spec.modelConfig.input.storageUri. The newer field wins."""
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return {}
    found: dict[str, str] = {}
    dataset = _string_at(spec, "initializer", "dataset", "storageUri") or _string_at(
        spec, "datasetConfig", "storageUri"
    )
    model = _string_at(spec, "initializer", "model", "storageUri") or _string_at(
        spec, "modelConfig", "input", "storageUri"
    )
    if dataset:
        found["dataset"] = dataset.strip()
    if model:
        found["model"] = model.strip()
    return found
