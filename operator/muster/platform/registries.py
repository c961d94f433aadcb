"""An OCI distribution client that is correct, bounded and polite to registries.

- Content is checked against the digest it was fetched by (and a tag's answer against the
  ``Docker-Content-Digest`` the registry claims), so a registry cannot substitute bytes.
- Every read is capped: manifests and blobs larger than the configured limits are refused
  before they are buffered.
- Bearer-token and basic auth, with tokens cached per registry and scope; credentials are never
  sent across a redirect to another host, never logged.
- Retries with exponential backoff on 429 and 5xx, honouring ``Retry-After``; one pooled
  connection set per client, reused across requests.
- At most ``max_requests_per_registry`` requests in flight to one registry, shared by every
  client of the process and granted round robin between requesters (one admission each), so
  a pod of a hundred images neither floods a registry nor makes another pod wait behind it.
- Egress is checked (``kernel/egress.py``): registry hosts against the allow/deny lists, and every
  address a host name resolves to against the loopback/private/link-local/metadata rule. The
  checking resolver hands aiohttp exactly the addresses it checked, so the connection is pinned
  to them (no second lookup that DNS rebinding could answer differently). Redirect targets and
  token services are checked the same way.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import ipaddress
import json
import logging
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.abc

from muster.kernel import credhelpers as helperrules
from muster.kernel import egress, pullsecrets, references
from muster.platform import connections, credhelpers, statechanges

__all__ = [
    "BlobTooLarge",
    "Credentials",
    "CredentialsFile",
    "DigestMismatch",
    "Manifest",
    "NotFound",
    "ReferrersSupport",
    "Refused",
    "RegistryClient",
    "RegistryError",
    "RegistrySettings",
    "RequestObserver",
    "RequestSlots",
    "RoundTrips",
    "Sink",
    "Unauthorized",
    "Unavailable",
    "check_files",
    "request_outcome",
    "requester",
]

logger = logging.getLogger("muster.registries")

MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_API_HOSTS = {"docker.io": "registry-1.docker.io"}
MAX_URL_VERDICTS = 256  # egress verdicts a client remembers (registries, redirect hosts)
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(Exception):
    """A registry could not give what was asked; the message names registry and object."""


class NotFound(RegistryError):
    pass


class Unauthorized(RegistryError):
    pass


class BlobTooLarge(RegistryError):
    pass


class DigestMismatch(RegistryError):
    pass


class Unavailable(RegistryError):
    """Still failing after the allowed retries (5xx, 429, timeouts, refused connections)."""


class Refused(RegistryError):
    """Muster will not connect there: a denied host or a forbidden address (never retried)."""


@dataclasses.dataclass(frozen=True)
class Credentials:
    username: str
    password: str = dataclasses.field(repr=False)


CredentialSource = Callable[[str], Credentials | None]


class CredentialsFile:
    """Operator-level credentials from a ``dockerconfigjson`` file (e.g. a mounted Secret).

    Used for a registry only when the pod's own pull secrets have none for it. The file is
    re-read when it changes (a Secret update swaps the mounted file), and an unreadable new
    version keeps the last good one, so a bad edit never drops credentials mid-flight.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._entries: dict[str, Credentials] = {}
        self.load()  # the first read must succeed: a bad file is a start-up error

    def load(self) -> None:
        """Read the file now; ``ValueError`` naming the file (never its content) if unusable."""
        try:
            stat = self.path.stat()
            data = self.path.read_bytes()
        except OSError as error:
            raise ValueError(
                f"registry credentials file {self.path}: {error.strerror or error}"
            ) from None
        try:
            parsed = pullsecrets.parse(data)
        except pullsecrets.InvalidPullSecret as error:
            raise ValueError(f"registry credentials file {self.path}: {error}") from None
        self._entries = {
            registry: Credentials(username, password)
            for registry, (username, password) in parsed.items()
        }
        self._stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except OSError:
            return
        if (stat.st_ino, stat.st_mtime_ns, stat.st_size) == self._stamp:
            return
        try:
            self.load()
        except ValueError as error:
            logger.warning("%s; keeping the previous credentials", error)

    @property
    def registries(self) -> frozenset[str]:
        self._refresh()
        return frozenset(self._entries)

    def __call__(self, registry: str) -> Credentials | None:
        self._refresh()
        return self._entries.get(pullsecrets.normalise_registry(registry))


def check_files(ca_file: Path | None, credentials_file: Path | None) -> None:
    """``ValueError`` naming the option and file when a CA bundle or credentials file is unusable.

    Called at start-up, so a typo fails the command instead of every later registry request.
    """
    if ca_file is not None:
        try:
            ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as error:
            reason = getattr(error, "strerror", None) or getattr(error, "reason", None) or error
            raise ValueError(
                f"--registry-ca-file {ca_file}: not a readable PEM CA bundle ({reason})"
            ) from None
    if credentials_file is not None:
        try:
            CredentialsFile(credentials_file)
        except ValueError as error:
            raise ValueError(f"--registry-credentials: {error}") from None


@dataclasses.dataclass(frozen=True)
class RegistrySettings:
    # Registries spoken to over plain HTTP (local development and tests only).
    insecure_registries: frozenset[str] = frozenset()
    ca_file: Path | None = None
    # Operator-level dockerconfigjson: used when the pod's pull secrets have nothing for a host.
    credentials_file: Path | None = None
    # Docker credential helpers per registry (exact host or glob), asked when the pod's pull
    # secrets have nothing for a host, before ``credentials_file``; their answers are kept for
    # ``credential_helper_ttl`` seconds, or until the registry refuses them.
    credential_helpers: tuple[helperrules.HelperRule, ...] = ()
    credential_helper_ttl: float = 600.0
    credential_helper_timeout: float = 10.0
    request_timeout: float = 5.0
    max_attempts: int = 3
    backoff_base: float = 0.1
    max_retry_after: float = 5.0
    max_manifest_bytes: int = 4 * 1024 * 1024
    max_blob_bytes: int = 16 * 1024 * 1024
    max_redirects: int = 3
    user_agent: str = "muster"
    # How long what a registry's answers showed about its OCI referrers API is trusted.
    referrers_api_ttl: float = 600.0
    # Requests in flight to one registry at once, over every client of the process.
    max_requests_per_registry: int = 16
    # Egress (kernel/egress.py): host globs allowed / denied, and whether loopback and private
    # addresses are fine for every host. Insecure registries count as explicitly configured.
    allow_hosts: tuple[str, ...] = ()
    deny_hosts: tuple[str, ...] = ()
    allow_private: bool = False
    private_networks: bool = True

    @property
    def egress(self) -> egress.EgressPolicy:
        return egress.EgressPolicy(
            allow=self.allow_hosts,
            deny=self.deny_hosts,
            allow_private=self.allow_private,
            private_networks=self.private_networks,
            explicit=self.insecure_registries,
        )


@dataclasses.dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    raw: bytes

    def json(self) -> dict[str, Any]:
        parsed = json.loads(self.raw)
        if not isinstance(parsed, dict):
            raise RegistryError(f"manifest {self.digest} is not a JSON object")
        return parsed


@dataclasses.dataclass
class RequestStats:
    """Round trips made, so callers (and benchmarks) can see what a verification cost."""

    requests: int = 0
    token_requests: int = 0
    retries: int = 0


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _check_digest(expected: str, data: bytes, what: str) -> None:
    algorithm, _, _ = expected.partition(":")
    if algorithm not in ("sha256", "sha384", "sha512"):
        raise DigestMismatch(f"{what}: unsupported digest algorithm {algorithm!r}")
    actual = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
    if actual != expected:
        raise DigestMismatch(f"{what}: content digest {actual} does not match {expected}")


RequestObserver = Callable[[str, str, float], None]
# Takes a streamed body chunk by chunk (RegistryClient.blob_stream); may raise to stop the stream.
Sink = Callable[[bytes], Awaitable[None]]


class ReferrersSupport:
    """Which registries answer the OCI 1.1 referrers API, as their own answers showed.

    A registry of unknown support is asked both ways at once (the API and the ``sha256-<hex>``
    fallback tag), so learning costs no extra round trip; once known, only the right request is
    sent. Entries expire (``ttl``), so an upgraded registry is noticed. A wrong belief can only
    hide signatures (a denial, never an allow), and a registry believed to have the API that
    answers as if it had none is asked for the fallback tag at once. Shared by every client of
    a process: support is a property of the registry, not of whoever's credentials.
    """

    MAX_REGISTRIES = 1024

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._known: dict[str, tuple[bool, float]] = {}

    def get(self, registry: str) -> bool | None:
        entry = self._known.get(registry)
        if entry is None:
            return None
        supported, expires = entry
        if expires <= self._clock():
            del self._known[registry]
            return None
        return supported

    def put(self, registry: str, supported: bool) -> None:
        self._known.pop(registry, None)
        self._known[registry] = (supported, self._clock() + self.ttl)
        while len(self._known) > self.MAX_REGISTRIES:
            del self._known[next(iter(self._known))]


# Who a registry request is made for (an admission sets a fresh key for its pod); requests of
# different requesters waiting for one registry are served round robin. Tasks inherit it.
requester: contextvars.ContextVar[Hashable | None] = contextvars.ContextVar(
    "muster_registry_requester", default=None
)


class RequestSlots:
    """At most ``limit`` requests in flight per registry, granted fairly between requesters.

    Waiting requests are queued per requester (:data:`requester`), and a freed slot goes to
    the requester at the head of the line, which then moves to its back: a pod whose hundred
    images queue three hundred requests delays a one-image pod behind it by one request per
    stage, not by all of them. Shared by every client of a process, like
    :class:`ReferrersSupport`: the bound is the registry's, whoever's credentials are sent.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_requests_per_registry must be at least 1, not {limit}")
        self.limit = limit
        self._in_flight: collections.Counter[str] = collections.Counter()
        # Per registry: the requesters waiting, in turn order, each with its waiters in order.
        self._waiting: dict[str, dict[Hashable, collections.deque[asyncio.Future[None]]]] = {}

    def in_flight(self, registry: str) -> int:
        return self._in_flight[registry]

    @contextlib.asynccontextmanager
    async def slot(self, registry: str) -> AsyncIterator[None]:
        await self._acquire(registry, requester.get())
        try:
            yield
        finally:
            self._release(registry)

    async def _acquire(self, registry: str, who: Hashable | None) -> None:
        if self._in_flight[registry] < self.limit and not self._waiting.get(registry):
            self._in_flight[registry] += 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(registry, {}).setdefault(who, collections.deque()).append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release(registry)  # granted as it was cancelled: hand the slot on
            raise

    def _release(self, registry: str) -> None:
        self._in_flight[registry] -= 1
        waiting = self._waiting.get(registry)
        while waiting and self._in_flight[registry] < self.limit:
            who = next(iter(waiting))
            line = waiting.pop(who)
            granted = line.popleft()
            if line:
                waiting[who] = line  # back of the turn order
            if granted.done():
                continue  # its waiter was cancelled
            granted.set_result(None)
            self._in_flight[registry] += 1
        if not waiting:
            self._waiting.pop(registry, None)
        if not self._in_flight[registry]:
            del self._in_flight[registry]


class RoundTrips:
    """A request observer that measures what lookups cost: requests, and sequential depth.

    The depth is the longest chain of requests each started after the previous one ended,
    i.e. the round trips a caller waited for one after another (requests sent in parallel
    count once). For one lookup that is exact; for several independent lookups at once it is
    an upper bound (one lookup's request may happen to start after another's ended). For
    benchmarks and tests; it keeps at most ``limit`` requests.
    """

    def __init__(self, then: RequestObserver | None = None, limit: int = 10_000) -> None:
        self.then = then
        self.limit = limit
        self._finished: list[tuple[float, float, int]] = []  # (start, end, depth), by end
        self.requests = 0

    def __call__(self, registry: str, outcome: str, seconds: float) -> None:
        end = time.perf_counter()
        start = end - seconds
        self.requests += 1
        if len(self._finished) < self.limit:
            before = [depth for _, ended, depth in self._finished if ended <= start]
            self._finished.append((start, end, 1 + max(before, default=0)))
        if self.then is not None:
            self.then(registry, outcome, seconds)

    @property
    def depth(self) -> int:
        return max((depth for _, _, depth in self._finished), default=0)

    @property
    def spans(self) -> list[tuple[float, float]]:
        """(start, end) of each request, in ``time.perf_counter`` seconds, in order of end."""
        return [(start, end) for start, end, _ in self._finished]

    def reset(self) -> None:
        self._finished.clear()
        self.requests = 0


def request_outcome(status: int) -> str:
    """A bounded name for an HTTP answer, for metrics: success, not_found, unauthorized, ..."""
    if status < 400:
        return "success"
    if status == 404:
        return "not_found"
    if status in (401, 403):
        return "unauthorized"
    if status == 429:
        return "throttled"
    if status >= 500:
        return "server_error"
    return "error"


class RegistryClient:
    """One client per process (or per test): it owns a pooled HTTP session and a token cache."""

    def __init__(
        self,
        settings: RegistrySettings | None = None,
        credentials: CredentialSource | None = None,
        *,
        operator_credentials: CredentialSource | None = None,
        helpers: credhelpers.CredentialHelpers | None = None,
        referrers_support: ReferrersSupport | None = None,
        slots: RequestSlots | None = None,
    ) -> None:
        self.settings = settings or RegistrySettings()
        self.referrers_support = referrers_support or ReferrersSupport(
            self.settings.referrers_api_ttl
        )
        # Shared with the clients made from this one (other pull secrets, same registries).
        self.slots = slots or RequestSlots(self.settings.max_requests_per_registry)
        self._credentials = credentials or (lambda _registry: None)
        # The fallback for registries ``credentials`` has nothing for: given (shared with the
        # client it came from), or read from ``settings.credentials_file``.
        self.operator_credentials: CredentialSource | None = operator_credentials or (
            CredentialsFile(self.settings.credentials_file)
            if self.settings.credentials_file is not None
            else None
        )
        # Credential helpers, shared like ``operator_credentials``: one cache of their answers.
        self.helpers: credhelpers.CredentialHelpers | None = helpers or (
            credhelpers.CredentialHelpers(
                self.settings.credential_helpers,
                ttl=self.settings.credential_helper_ttl,
                timeout=self.settings.credential_helper_timeout,
            )
            if self.settings.credential_helpers
            else None
        )
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        # The egress verdict of each (registry, scheme, host) a URL went to: the settings are
        # frozen and the checks pure, so one verdict holds for the client's life. Addresses a
        # host name resolves to are still checked at every resolution (CheckedResolver).
        self._egress = self.settings.egress
        self._url_verdicts: dict[tuple[str, str, str], str | None] = {}
        self.stats = RequestStats()
        # Told about every HTTP round trip: (registry, outcome, seconds); see request_outcome.
        self.observer: RequestObserver | None = None

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Without a CA bundle of ours, aiohttp's own verifying context (the system's CA
            # certificates, which it loaded on import): loading them again costs a command's
            # start-up tens of milliseconds. Both are ssl.create_default_context().
            context: ssl.SSLContext | bool = (
                _tls_context(self.settings.ca_file) if self.settings.ca_file else True
            )
            self._session = aiohttp.ClientSession(
                connector=connections.tcp_connector(
                    ssl=context,
                    limit=max(100, self.settings.max_requests_per_registry),
                    # The slots bound requests per registry; connections must not be fewer.
                    limit_per_host=self.settings.max_requests_per_registry,
                    resolver=CheckedResolver(self.settings.egress),
                ),
                timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout),
                headers={"User-Agent": self.settings.user_agent},
            )
        return self._session

    def _base(self, registry: str) -> str:
        scheme = "http" if registry in self.settings.insecure_registries else "https"
        return f"{scheme}://{_API_HOSTS.get(registry, registry)}"

    # -- public API -------------------------------------------------------------------------

    async def manifest(
        self,
        registry: str,
        repository: str,
        reference: str,
        accept: tuple[str, ...] = MANIFEST_MEDIA_TYPES,
    ) -> Manifest:
        """GET a manifest by tag or digest; its bytes are checked against the digest."""
        what = f"manifest {registry}/{repository}:{reference}"
        status, headers, body = await self._request(
            "GET",
            registry,
            repository,
            f"/v2/{repository}/manifests/{reference}",
            accept=", ".join(accept),
            limit=self.settings.max_manifest_bytes,
            what=what,
        )
        if status == 404:
            raise NotFound(f"{what} does not exist")
        if status != 200:
            raise RegistryError(f"{what}: registry answered HTTP {status}")
        if references.DIGEST_ALGORITHMS.get(reference.partition(":")[0]) and ":" in reference:
            _check_digest(reference, body, what)
            digest = reference
        else:
            digest = _sha256(body)
            claimed = headers.get("Docker-Content-Digest")
            if claimed and claimed.startswith("sha256:") and claimed != digest:
                raise DigestMismatch(f"{what}: registry claims {claimed} but content is {digest}")
        media_type = headers.get("Content-Type", "").split(";")[0].strip()
        try:
            declared = json.loads(body).get("mediaType")
        except (ValueError, AttributeError):
            raise RegistryError(f"{what} is not a JSON document") from None
        return Manifest(digest=digest, media_type=declared or media_type, raw=body)

    async def resolve(self, reference: references.ImageReference) -> str:
        """The digest a reference names now (its own digest if pinned)."""
        if reference.digest is not None:
            return reference.digest
        manifest = await self.manifest(
            reference.registry, reference.repository, reference.tag or references.DEFAULT_TAG
        )
        return manifest.digest

    async def blob(
        self, registry: str, repository: str, digest: str, max_bytes: int | None = None
    ) -> bytes:
        what = f"blob {registry}/{repository}@{digest}"
        status, _, body = await self._request(
            "GET",
            registry,
            repository,
            f"/v2/{repository}/blobs/{digest}",
            accept="*/*",
            limit=max_bytes or self.settings.max_blob_bytes,
            what=what,
        )
        if status == 404:
            raise NotFound(f"{what} does not exist")
        if status != 200:
            raise RegistryError(f"{what}: registry answered HTTP {status}")
        _check_digest(digest, body, what)
        return body

    async def blob_stream(
        self, registry: str, repository: str, digest: str, sink: Sink, *, max_bytes: int
    ) -> int:
        """Pass a blob to ``sink`` as it arrives, never buffered whole (layers for a scan); its
        size. The digest is checked over the streamed bytes: on a mismatch ``DigestMismatch``
        is raised after the last chunk, so the caller must not trust what it passed on before
        this returns. A stream cut short is ``Unavailable`` and never retried (a retry would
        repeat chunks the sink already has); each read may stall ``request_timeout`` at most."""
        what = f"blob {registry}/{repository}@{digest}"
        algorithm = digest.partition(":")[0]
        if algorithm not in ("sha256", "sha384", "sha512"):
            raise DigestMismatch(f"{what}: unsupported digest algorithm {algorithm!r}")
        hasher = hashlib.new(algorithm)
        size = 0

        async def checked(chunk: bytes) -> None:
            nonlocal size
            hasher.update(chunk)
            size += len(chunk)
            await sink(chunk)

        status, _, _ = await self._request(
            "GET",
            registry,
            repository,
            f"/v2/{repository}/blobs/{digest}",
            accept="*/*",
            limit=max_bytes,
            what=what,
            sink=checked,
        )
        if status == 404:
            raise NotFound(f"{what} does not exist")
        if status != 200:
            raise RegistryError(f"{what}: registry answered HTTP {status}")
        actual = f"{algorithm}:{hasher.hexdigest()}"
        if actual != digest:
            raise DigestMismatch(f"{what}: content digest {actual} does not match {digest}")
        return size

    async def referrers(
        self, registry: str, repository: str, digest: str, artifact_type: str | None = None
    ) -> list[dict[str, Any]]:
        """Descriptors of manifests whose subject is ``digest``: the OCI 1.1 referrers API,
        or the ``sha256-<hex>`` tag fallback index on registries without it.

        One round trip: a registry whose support is not known yet is asked both ways at once
        (see :class:`ReferrersSupport`)."""
        supported = self.referrers_support.get(registry)
        if supported is False:
            descriptors = await self._fallback_referrers(registry, repository, digest)
        elif supported is True:
            found = await self._api_referrers(registry, repository, digest, artifact_type)
            if found is None:  # it has no API after all (a rollback, a proxy in front)
                found = await self._fallback_referrers(registry, repository, digest)
            descriptors = found
        else:
            fallback = asyncio.ensure_future(self._fallback_referrers(registry, repository, digest))
            try:
                found = await self._api_referrers(registry, repository, digest, artifact_type)
            except BaseException:
                fallback.cancel()
                with contextlib.suppress(BaseException):
                    await fallback
                raise
            if found is None:
                descriptors = await fallback
            else:
                with contextlib.suppress(RegistryError):
                    await fallback  # sent in parallel; its answer is not needed
                descriptors = found
        if artifact_type is None:
            return descriptors
        return [d for d in descriptors if d.get("artifactType") == artifact_type]

    async def _api_referrers(
        self, registry: str, repository: str, digest: str, artifact_type: str | None
    ) -> list[dict[str, Any]] | None:
        """The referrers API's answer; None (and remembered) when the registry has no API."""
        what = f"referrers of {registry}/{repository}@{digest}"
        query = f"?artifactType={urllib.parse.quote(artifact_type)}" if artifact_type else ""
        status, headers, body = await self._request(
            "GET",
            registry,
            repository,
            f"/v2/{repository}/referrers/{digest}{query}",
            accept=OCI_INDEX,
            limit=self.settings.max_manifest_bytes,
            what=what,
        )
        if status == 200 and headers.get("Content-Type", "").startswith(OCI_INDEX):
            descriptors = _descriptors(body, what)
            self.referrers_support.put(registry, True)
            return descriptors
        if status in (200, 404, 405, 400):
            # No referrers API here: cosign and oras push an index under the fallback tag.
            # Remembered only when the answer is unambiguous: a registry WITH the API answers
            # 404 NAME_UNKNOWN for a repository it does not hold, which says nothing.
            if status in (200, 405) or (status == 404 and not _distribution_error(body)):
                self.referrers_support.put(registry, False)
            return None
        raise RegistryError(f"{what}: registry answered HTTP {status}")

    async def _fallback_referrers(
        self, registry: str, repository: str, digest: str
    ) -> list[dict[str, Any]]:
        what = f"referrers of {registry}/{repository}@{digest}"
        algorithm, _, hexdigest = digest.partition(":")
        try:
            index = await self.manifest(
                registry, repository, f"{algorithm}-{hexdigest}", accept=(OCI_INDEX,)
            )
        except NotFound:
            return []
        return _descriptors(index.raw, what)

    # -- transport --------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        registry: str,
        repository: str,
        path: str,
        *,
        accept: str,
        limit: int,
        what: str,
        sink: Sink | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        scope = f"repository:{repository}:pull"
        attempt = 0
        authorized_retry = False
        helper_refreshed = False
        while True:
            attempt += 1
            try:
                status, headers, body = await self._send(
                    method, self._base(registry) + path, registry, scope, accept, limit, what, sink
                )
            except (TimeoutError, aiohttp.ClientConnectionError) as error:
                if attempt >= self.settings.max_attempts:
                    raise Unavailable(
                        f"{what}: registry unreachable after {attempt} attempts "
                        f"({type(error).__name__}: {error})"
                    ) from None
                self.stats.retries += 1
                await asyncio.sleep(self.settings.backoff_base * 2 ** (attempt - 1))
                continue
            if status == 401 and not authorized_retry:
                authorized_retry = True
                attempt -= 1  # authentication is not a failed attempt
                await self._authenticate(registry, scope, headers.get("WWW-Authenticate", ""), what)
                continue
            if status == 401 and not helper_refreshed and self._helper_serves(registry):
                # A helper's kept answer the registry refuses (rotated, expired early): ask the
                # helper again, once.
                helper_refreshed = True
                attempt -= 1
                await self._authenticate(
                    registry, scope, headers.get("WWW-Authenticate", ""), what, refresh=True
                )
                continue
            if status == 401 or status == 403:
                raise Unauthorized(f"{what}: registry refused access (HTTP {status})")
            if status in _RETRY_STATUSES:
                if attempt >= self.settings.max_attempts:
                    raise Unavailable(f"{what}: registry answered HTTP {status} {attempt} times")
                self.stats.retries += 1
                await asyncio.sleep(self._retry_delay(headers, attempt))
                continue
            return status, headers, body

    def _retry_delay(self, headers: Mapping[str, str], attempt: int) -> float:
        retry_after = headers.get("Retry-After", "")
        if retry_after.strip().isdigit():
            return min(float(retry_after), self.settings.max_retry_after)
        return float(self.settings.backoff_base * 2 ** (attempt - 1))

    async def _send(
        self,
        method: str,
        url: str,
        registry: str,
        scope: str,
        accept: str,
        limit: int,
        what: str,
        sink: Sink | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        origin = urllib.parse.urlsplit(url).netloc
        # A streamed body may take longer than one request's total timeout: bound each read.
        streaming: dict[str, Any] = {}
        if sink is not None:
            streaming["timeout"] = aiohttp.ClientTimeout(
                total=None,
                connect=self.settings.request_timeout,
                sock_read=self.settings.request_timeout,
            )
        for _ in range(self.settings.max_redirects + 1):
            self._check_url(url, registry, what)
            headers = {"Accept": accept}
            # Credentials only ever go to the registry itself, never across a redirect.
            if urllib.parse.urlsplit(url).netloc == origin:
                authorization = self._authorization(registry, scope)
                if authorization:
                    headers["Authorization"] = authorization
            self.stats.requests += 1
            # Timed (for the observer) from the slot on: waiting for it is not the request.
            async with self.slots.slot(registry):
                answer = await self._exchange(
                    method, url, headers, streaming, limit, what, sink, registry
                )
            if isinstance(answer, str):
                url = answer  # redirected
                continue
            return answer
        raise RegistryError(f"{what}: more than {self.settings.max_redirects} redirects")

    async def _exchange(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        streaming: Mapping[str, Any],
        limit: int,
        what: str,
        sink: Sink | None,
        registry: str,
    ) -> tuple[int, Mapping[str, str], bytes] | str:
        """One HTTP request and its answer read within the limits; a redirect's target URL."""
        started = time.perf_counter()
        outcome = "unreachable"
        statechanges.read()  # its answer may fill what the gates read
        try:
            async with self._client().request(
                method, url, headers=headers, allow_redirects=False, **streaming
            ) as response:
                outcome = request_outcome(response.status)
                if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                    return urllib.parse.urljoin(url, response.headers["Location"])
                if response.status == 404:  # its error code tells what was not found
                    return 404, response.headers, await response.content.read(4096)
                if response.status != 200:
                    return response.status, response.headers, b""
                length = response.content_length
                if length is not None and length > limit:
                    raise BlobTooLarge(f"{what} is {length} bytes, over the limit of {limit}")
                if sink is not None:
                    await _stream(response, sink, limit, what)
                    return response.status, response.headers, b""
                body = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > limit:
                        raise BlobTooLarge(f"{what} is over the limit of {limit} bytes")
                return response.status, response.headers, bytes(body)
        finally:
            statechanges.read()
            if self.observer is not None:
                self.observer(registry, outcome, time.perf_counter() - started)

    def _authorization(self, registry: str, scope: str) -> str | None:
        token = self._tokens.get((registry, scope))
        if token is not None:
            value, expires = token
            if expires > time.monotonic():
                return value
            del self._tokens[(registry, scope)]
        return None

    def _helper_serves(self, registry: str) -> bool:
        """Whether a helper answers for ``registry`` (the pod's own secrets come first)."""
        return (
            self.helpers is not None
            and self.helpers.helper_for(registry) is not None
            and self._credentials(registry) is None
        )

    async def _credentials_for(
        self, registry: str, what: str, *, refresh: bool = False
    ) -> tuple[Credentials | None, float]:
        """Who vouches for us at ``registry``, and until when (``time.monotonic``): the pod's
        own pull secrets, else its credential helper, else the operator's credentials file."""
        credentials = self._credentials(registry)
        if credentials is not None:
            return credentials, float("inf")
        if self.helpers is not None and self.helpers.helper_for(registry) is not None:
            if refresh:
                self.helpers.forget(registry)
            try:
                answer = await self.helpers.get(registry)
            except credhelpers.HelperFailed as error:
                raise Unauthorized(f"{what}: {error}") from None
            if answer is not None:
                expires = self.helpers.expires(registry)
                return Credentials(*answer), float("inf") if expires is None else expires
        if self.operator_credentials is not None:
            return self.operator_credentials(registry), float("inf")
        return None, float("inf")

    async def _authenticate(
        self, registry: str, scope: str, challenge: str, what: str, *, refresh: bool = False
    ) -> None:
        scheme, _, params_text = challenge.partition(" ")
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        credentials, valid_until = await self._credentials_for(registry, what, refresh=refresh)
        if scheme.lower() == "basic":
            if credentials is None:
                raise Unauthorized(
                    f"{what}: registry requires credentials and none are configured for it"
                )
            # A helper's answer is sent only while it is kept, then the helper is asked again.
            self._tokens[(registry, scope)] = (_basic(credentials), valid_until)
            return
        if scheme.lower() != "bearer" or "realm" not in params:
            raise Unauthorized(f"{what}: unsupported authentication challenge {scheme!r}")
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        url = f"{params['realm']}?{urllib.parse.urlencode(query)}"
        headers = {"Authorization": _basic(credentials)} if credentials else {}
        self._check_url(url, registry, what)
        self.stats.token_requests += 1
        # No redirects: the credentials go to the token service named by the challenge only.
        refused, raw = False, b""
        try:
            async with self._client().get(url, headers=headers, allow_redirects=False) as answered:
                if answered.status == 401 and not refresh and self._helper_serves(registry):
                    refused = True  # the helper's kept answer: asked again below, once
                elif answered.status != 200:
                    raise Unauthorized(f"{what}: token service answered HTTP {answered.status}")
                else:
                    raw = await answered.content.read(64 * 1024)
        except (TimeoutError, aiohttp.ClientError) as error:
            # Unreachable is a registry error like any other, never a crash of the caller.
            raise Unavailable(
                f"{what}: token service unreachable ({type(error).__name__}: {error})"
            ) from None
        if refused:
            await self._authenticate(registry, scope, challenge, what, refresh=True)
            return
        try:
            answer = json.loads(raw)
            token = answer.get("token") or answer.get("access_token")
            lifetime = float(answer.get("expires_in", 60))
        except (ValueError, AttributeError, TypeError):
            raise Unauthorized(f"{what}: token service answered something unreadable") from None
        if not isinstance(token, str) or not token:
            raise Unauthorized(f"{what}: token service gave no token")
        # Renew a little early so a token never expires between check and use.
        self._tokens[(registry, scope)] = (
            f"Bearer {token}",
            time.monotonic() + max(lifetime - 5, 1),
        )

    def _check_url(self, url: str, registry: str, what: str) -> None:
        """Refuse a URL before connecting: the registry named in the reference must pass the
        allow/deny lists, any host contacted (redirects, token services) the deny list, and an
        IP-literal host the address rule (host names are checked by :class:`CheckedResolver`)."""
        parts = urllib.parse.urlsplit(url)
        key = (registry, parts.scheme, parts.netloc)
        if key in self._url_verdicts:
            refusal = self._url_verdicts[key]
        else:
            refusal = self._url_refusal(registry, parts.scheme, parts.netloc)
            if len(self._url_verdicts) >= MAX_URL_VERDICTS:
                self._url_verdicts.clear()
            self._url_verdicts[key] = refusal
        if refusal is not None:
            raise Refused(f"{what}: {refusal}")

    def _url_refusal(self, registry: str, scheme: str, netloc: str) -> str | None:
        policy = self._egress
        host, port = egress.split_host(registry)
        refusal = egress.host_refusal(policy, host, port)
        if refusal is None and scheme not in ("http", "https"):
            refusal = f"scheme {scheme!r} is not HTTP(S)"
        target, target_port = egress.split_host(netloc)
        if refusal is None and (target, target_port) != (host, port):
            refusal = egress.host_refusal(
                dataclasses.replace(policy, allow=()), target, target_port
            )
        if refusal is None and _is_ip(target):
            refusal = egress.address_refusal(policy, target, target_port, target)
        return refusal


@functools.lru_cache(maxsize=8)
def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """One verifying context per CA bundle, shared by every client of the process: loading the
    system's CA certificates takes tens of milliseconds, which a cold lookup with a new set of
    pull secrets (a new client) would otherwise pay. A changed CA file needs a restart, as it
    did before (each client kept the context it was created with)."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class CheckedResolver(aiohttp.abc.AbstractResolver):
    """Resolves like aiohttp's default resolver, then checks EVERY address against the egress
    rule: one forbidden address refuses the host (a name that resolves to a public and an
    internal address is suspicious, not half-usable). aiohttp connects only to the addresses
    returned here, so the connection is pinned to what was checked."""

    def __init__(
        self, policy: egress.EgressPolicy, inner: aiohttp.abc.AbstractResolver | None = None
    ) -> None:
        self.policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        if self._inner is None:
            self._inner = aiohttp.ThreadedResolver()
        results = await self._inner.resolve(host, port, family)
        if not results:
            raise Refused(f"registry host {host!r} resolved to no address")
        for result in results:
            refusal = egress.address_refusal(self.policy, host, port or None, result["host"])
            if refusal is not None:
                raise Refused(refusal)
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


async def _stream(response: aiohttp.ClientResponse, sink: Sink, limit: int, what: str) -> None:
    received = 0
    try:
        async for chunk in response.content.iter_chunked(64 * 1024):
            received += len(chunk)
            if received > limit:
                raise BlobTooLarge(f"{what} is over the limit of {limit} bytes")
            await sink(chunk)
    except (TimeoutError, aiohttp.ClientError) as error:
        raise Unavailable(
            f"{what}: the stream broke after {received} bytes ({type(error).__name__}: {error})"
        ) from None


def _basic(credentials: Credentials) -> str:
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _distribution_error(body: bytes) -> bool:
    """Whether a 404's body is a distribution-spec error (``{"errors": [{"code": ...}]}``)."""
    try:
        errors = json.loads(body).get("errors")
    except (ValueError, AttributeError):
        return False
    return isinstance(errors, list) and any(
        isinstance(error, dict) and isinstance(error.get("code"), str) for error in errors
    )


def _descriptors(raw: bytes, what: str) -> list[dict[str, Any]]:
    try:
        index = json.loads(raw)
    except ValueError:
        raise RegistryError(f"{what}: index is not JSON") from None
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list):
        raise RegistryError(f"{what}: index has no manifests list")
    return [m for m in manifests if isinstance(m, dict)]
