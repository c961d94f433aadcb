"""What the scan relay answers: the registry endpoint on loopback that trivy pulls images from.

trivy never connects to a registry itself. Each scan gets a relay (``vulnerabilities/relay.py``)
on ``127.0.0.1`` that serves exactly the image being scanned, under
``127.0.0.1:PORT/<token>/<repository>``, and fetches every manifest and blob with Muster's own
registry client: the same egress rules (``kernel/egress.py``: allow and deny lists, every
resolved address checked and the connection pinned to it), the same redirect and token-realm
checks, the same TLS and ``--insecure-registry`` handling.

Why not an HTTP CONNECT proxy in front of trivy: Go's proxy rules (``HTTPS_PROXY``, which trivy
honours) never send a request for ``localhost`` or a loopback address through the proxy, so a
redirect or token realm naming ``127.0.0.1`` would be followed straight there; and inside a
CONNECT tunnel the proxy sees neither redirects nor realms. trivy's proxy variables still point
at the relay, which refuses every proxied request, so nothing else trivy might try goes out.

The pure parts live here: which paths the relay serves (:func:`parse_path`), which of them a
scan's token permits (:func:`route_refusal`), and how trivy names what it pulls.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from muster.kernel import references

__all__ = [
    "Route",
    "Upstream",
    "is_ping",
    "parse_path",
    "proxy_refusal",
    "relay_reference",
    "route_refusal",
    "upstream_of",
]

Kind = Literal["manifests", "blobs"]

_TOKEN = re.compile(r"^[0-9a-f]{32}$")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^([a-z0-9]+):([a-f0-9]+)$")


@dataclasses.dataclass(frozen=True)
class Upstream:
    """The one repository a token opens, in the registry it really lives in."""

    registry: str
    repository: str
    # Manifests by tag too (the vulnerability DB repository); images are read by digest only.
    tags: bool = False

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"


@dataclasses.dataclass(frozen=True)
class Route:
    """``/v2/<token>/<repository>/<kind>/<reference>``."""

    token: str
    repository: str
    kind: Kind
    reference: str


def _is_digest(text: str) -> bool:
    match = _DIGEST.match(text)
    return match is not None and references.DIGEST_ALGORITHMS.get(match[1]) == len(match[2])


def is_ping(path: str) -> bool:
    """The API version check every client sends first."""
    return path in ("/v2", "/v2/")


def parse_path(path: str) -> Route | None:
    """The manifest or blob read a path asks for, or None for anything a pull never asks."""
    if not path.startswith("/v2/"):
        return None
    head, _, reference = path[len("/v2/") :].rpartition("/")
    name, _, kind = head.rpartition("/")
    token, _, repository = name.partition("/")
    if kind not in ("manifests", "blobs") or not _TOKEN.match(token):
        return None
    if not _REPOSITORY.match(repository):
        return None
    if not (_is_digest(reference) or (kind == "manifests" and _TAG.match(reference))):
        return None
    narrowed: Kind = "manifests" if kind == "manifests" else "blobs"  # checked above
    return Route(token=token, repository=repository, kind=narrowed, reference=reference)


def route_refusal(upstream: Upstream | None, route: Route) -> str | None:
    """Why the relay must not fetch what ``route`` asks, or None when the token permits it."""
    if upstream is None:
        return "the scan relay has no scan under this token (unknown or finished)"
    if route.repository != upstream.repository:
        return f"this scan reads {upstream.name} only, not repository {route.repository!r}"
    if route.kind == "manifests" and not upstream.tags and not _is_digest(route.reference):
        return f"images are scanned by digest only, not by tag {route.reference!r}"
    return None


def proxy_refusal(method: str, target: str) -> str:
    """The refusal of a request trivy sent to the relay as its HTTP(S) proxy."""
    shown = target[:200] or "an unnamed host"
    return (
        f"trivy tried to reach {shown} ({method}) outside the scan relay; scans reach "
        "registries only through Muster's registry client"
    )


def relay_reference(relay_host: str, token: str, upstream: Upstream, reference: str | None) -> str:
    """How trivy names ``upstream`` at ``reference``: a digest, a tag (the DB), or None for
    the repository alone (trivy picks the DB's tag itself)."""
    name = f"{relay_host}/{token}/{upstream.repository}"
    if reference is None:
        return name
    return f"{name}{'@' if _is_digest(reference) else ':'}{reference}"


def upstream_of(text: str, *, tags: bool = False) -> tuple[Upstream, str | None]:
    """The upstream of an image or repository reference, and its digest or tag if it names one.

    ``references.InvalidReference`` when the runtime would refuse the reference too."""
    parsed = references.parse(text)
    upstream = Upstream(registry=parsed.registry, repository=parsed.repository, tags=tags)
    # The parser reads a missing tag as "latest"; trivy has its own default for the DB.
    written_tag = ":" in text.rpartition("/")[2].partition("@")[0]
    return upstream, parsed.digest or (parsed.tag if written_tag else None)
