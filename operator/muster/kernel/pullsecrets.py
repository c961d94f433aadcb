"""Registry credentials from ``kubernetes.io/dockerconfigjson`` (and legacy ``dockercfg``) data.

Keys are normalised the way the kubelet matches them: scheme and path dropped, Docker Hub's
many names folded into ``docker.io``. Passwords never appear in messages.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

from muster.kernel import references

__all__ = ["InvalidPullSecret", "normalise_registry", "parse"]

_DOCKER_HUB = {"index.docker.io", "registry-1.docker.io", "docker.io", "registry.hub.docker.com"}


class InvalidPullSecret(ValueError):
    """Pull secret data that cannot be read (the message never holds its content)."""


def normalise_registry(key: str) -> str:
    host = key.strip()
    for scheme in ("https://", "http://"):
        host = host.removeprefix(scheme)
    # Then as image references name registries (case, trailing dot, :443), so the keys meet.
    host = references.normalise_registry(host.split("/", 1)[0])
    return "docker.io" if host in _DOCKER_HUB else host


def parse(data: bytes, *, legacy: bool = False) -> dict[str, tuple[str, str]]:
    """``{registry: (username, password)}`` from the decoded secret value."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidPullSecret("pull secret is not JSON") from None
    auths = (
        document
        if legacy
        else (document or {}).get("auths")
        if isinstance(document, dict)
        else None
    )
    if not isinstance(auths, Mapping):
        raise InvalidPullSecret("pull secret has no auths object")
    found: dict[str, tuple[str, str]] = {}
    for key, entry in auths.items():
        if not isinstance(key, str) or not isinstance(entry, Mapping):
            continue
        username, password = entry.get("username"), entry.get("password")
        auth = entry.get("auth")
        if isinstance(auth, str) and auth:
            try:
                decoded = base64.b64decode(auth, validate=True).decode()
            except (binascii.Error, ValueError, UnicodeDecodeError):
                raise InvalidPullSecret(f"pull secret entry for {key!r} has invalid auth") from None
            username, _, password = decoded.partition(":")
        if isinstance(username, str) and isinstance(password, str) and username:
            found.setdefault(normalise_registry(key), (username, password))
    return found
