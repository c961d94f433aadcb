"""Docker credential helpers: which helper serves a registry, and what its answer means.

The protocol (``docker-credential-<name> get``, as docker/docker-credential-helpers' ``client``
package speaks it): the server URL on stdin, and on success a JSON object
``{"ServerURL", "Username", "Secret"}`` on stdout; a helper with nothing for the server exits
non-zero and prints ``credentials not found in native keychain``. Helpers return no expiry, so
callers keep an answer for a configured time. Nothing here ever puts a helper's output into a
message: on failure it may hold a secret.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
from collections.abc import Iterable

from muster.kernel import references

__all__ = [
    "NOT_FOUND",
    "HelperAnswerInvalid",
    "HelperRule",
    "executable",
    "helper_for",
    "parse_answer",
    "parse_rule",
    "server_url",
]

NOT_FOUND = "credentials not found in native keychain"
_SCHEME = re.compile(r"^https?://", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# What Docker sends for Docker Hub; helpers key Hub credentials by it.
_DOCKER_HUB_URL = "https://index.docker.io/v1/"


class HelperAnswerInvalid(ValueError):
    """A helper's answer that is not usable credentials (the message never holds the answer)."""


@dataclasses.dataclass(frozen=True)
class HelperRule:
    """Registries ``pattern`` names (an exact host or a glob) use ``docker-credential-<helper>``."""

    pattern: str
    helper: str

    @property
    def is_glob(self) -> bool:
        return any(ch in self.pattern for ch in "*?[")


def _pattern(registry: str) -> str:
    host = _SCHEME.sub("", registry.strip())
    return references.normalise_registry(host.split("/", 1)[0])


def parse_rule(text: str) -> HelperRule:
    """``REGISTRY=NAME``; ``ValueError`` saying what is wrong."""
    registry, sep, name = text.partition("=")
    registry, name = registry.strip(), name.strip()
    if not sep or not registry or not name:
        raise ValueError(f"{text!r} is not REGISTRY=NAME")
    name = name.removeprefix("docker-credential-")
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a credential helper name (letters, digits, . _ -)")
    pattern = _pattern(registry)
    if not pattern:
        raise ValueError(f"{text!r} names no registry")
    return HelperRule(pattern, name)


def helper_for(rules: Iterable[HelperRule], registry: str) -> str | None:
    """The helper for ``registry`` (a normalised host): an exact rule wins over globs, then
    the first glob that matches, in the order given."""
    host = references.normalise_registry(registry)
    listed = list(rules)
    for rule in listed:
        if not rule.is_glob and rule.pattern == host:
            return rule.helper
    for rule in listed:
        if rule.is_glob and fnmatch.fnmatchcase(host, rule.pattern):
            return rule.helper
    return None


def executable(helper: str) -> str:
    return f"docker-credential-{helper}"


def server_url(registry: str) -> str:
    """What a helper is asked about: the host, as Docker asks (Docker Hub by its v1 URL)."""
    host = references.normalise_registry(registry)
    return _DOCKER_HUB_URL if host == references.DEFAULT_REGISTRY else host


def parse_answer(stdout: bytes, helper: str) -> tuple[str, str]:
    """``(username, secret)`` from a successful ``get``."""
    name = executable(helper)
    try:
        answer = json.loads(stdout)
    except (ValueError, UnicodeDecodeError):
        raise HelperAnswerInvalid(f"{name} answered something that is not JSON") from None
    if not isinstance(answer, dict):
        raise HelperAnswerInvalid(f"{name} answered JSON that is not an object")
    username, secret = answer.get("Username"), answer.get("Secret")
    if not isinstance(username, str) or not isinstance(secret, str) or not secret:
        raise HelperAnswerInvalid(f"{name} answered no Username and Secret strings")
    if username == "<token>":
        # An OAuth2 identity (refresh) token, which Docker exchanges at the token service;
        # the helpers for ECR, Artifact Registry and ACR return usernames and passwords.
        raise HelperAnswerInvalid(f"{name} answered an identity token, which is not supported")
    if not username:
        raise HelperAnswerInvalid(f"{name} answered an empty Username")
    return username, secret
