"""The image-signature engine: reference -> digest -> signatures on the registry -> decision.

For each image it asks the registry for the evidence of every signature format in
:data:`muster.signatures.registered.FORMATS` that serves one of the policy's authorities
(today Sigstore bundles attached as OCI 1.1 referrers, Notation signatures as referrers for
Notation authorities, then cosign's legacy ``sha256-<hex>.sig`` simple-signing manifest). For a
multi-arch
index, a signature on the
index counts, and otherwise every platform manifest must be signed on its own. The decision is
made by the pure :func:`muster.images.rules.policies.judge`.

The registry is asked in stages, each only when the previous one did not settle the decision,
so a cold image pinned by digest costs three round trips and three requests whichever format
signed it (one more for a tag, to resolve it):

1. each format in turn (bundles: referrers, then each bundle's manifest, then its blob), the
   next only if what was found so far does not satisfy the policy (legacy: the ``.sig``
   manifest, then its layers; the judgement is monotone: more signatures can only satisfy
   more authorities, so skipping a format once the policy passes never changes a decision);
2. only if the image still fails: its manifest, and when it is an index, the signatures of
   every platform manifest.

A policy that requires attestations also reads them (cosign v2's ``.att`` manifest and the
digest's referrers, :mod:`muster.signatures.attestationsigs`) in parallel with the first
format, so a cold check costs no extra round trip in sequence, only extra requests; on an index
each platform's attestations are read with its signatures.

Caching keeps admission fast and registries calm:

- decisions by (digest, policy name, policy generation), positive ones for ``ttl`` seconds,
  negative ones (including registry errors) for ``negative_ttl`` seconds, in a bounded LRU;
- tag resolutions for ``tag_ttl`` seconds (pods pinned by the mutation never need them);
- single flight: concurrent identical lookups share one set of registry round trips.

Registry credentials come from a per-request provider (the pod's and its ServiceAccount's
imagePullSecrets); it is only called when the registry must actually be asked.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import functools
import hashlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from muster.images.rules import policies as imagepolicies
from muster.kernel import references
from muster.platform import registries, statechanges
from muster.signatures import attestationsigs, fetching, registered
from muster.signatures.rules import authorities, formats

__all__ = ["CacheSettings", "CredentialProvider", "ImageResult", "Verifier"]

logger = logging.getLogger("muster.images")

MAX_PLATFORMS = 32
# At most this many public-key signature checks (about 0.1 ms each) run on the event loop.
INLINE_SIGNATURE_CHECKS = 4

CredentialProvider = Callable[[], Awaitable[Mapping[str, registries.Credentials]]]
_Value = TypeVar("_Value")


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    ttl: float = 600.0  # verified results: signatures do not disappear under a digest
    negative_ttl: float = 10.0  # rejections and errors: a new signature shows up quickly
    tag_ttl: float = 10.0
    max_entries: int = 4096
    max_clients: int = 64  # registry clients per distinct pull-secret set


class _Lru(Generic[_Value]):
    """A bounded map whose entries expire."""

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self._entries: collections.OrderedDict[Hashable, tuple[float, _Value]] = (
            collections.OrderedDict()
        )
        self._max = max_entries
        self._clock = clock

    def get(self, key: Hashable) -> _Value | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: Hashable, value: _Value, ttl: float) -> None:
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class _Flights:
    """Single flight: the first caller starts the work, concurrent callers await the same work.

    The work runs as its own task, so a caller that gives up (the admission deadline) does not
    cancel it: it finishes and fills the caches, and the retry is fast.
    """

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task[Any]] = {}
        self.joined = 0

    async def run(self, key: Hashable, work: Callable[[], Awaitable[_Value]]) -> _Value:
        task = self._running.get(key)
        if task is None:

            async def wrapped() -> _Value:
                return await work()

            task = asyncio.ensure_future(wrapped())
            self._running[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        else:
            self.joined += 1
        result: _Value = await asyncio.shield(task)
        return result

    def _finished(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved here: a caller that left must not leave it unread


@dataclasses.dataclass(frozen=True, slots=True)
class ImageResult:
    """One image judged against the policies that cover it."""

    reference: references.ImageReference
    digest: str | None
    decisions: tuple[tuple[imagepolicies.CompiledPolicy, imagepolicies.Decision], ...]

    @property
    def passed(self) -> bool:
        return all(decision.passed for _, decision in self.decisions)


def _fingerprint(credentials: Mapping[str, registries.Credentials]) -> str:
    digest = hashlib.sha256()
    for registry in sorted(credentials):
        entry = credentials[registry]
        for part in (registry, entry.username, entry.password):
            digest.update(part.encode() + b"\0")
    return digest.hexdigest()


class Verifier:
    """One per process: shares its caches across admissions, policies and replicas' requests."""

    def __init__(
        self,
        client: registries.RegistryClient,
        cache: CacheSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.cache = cache or CacheSettings()
        self._decisions: _Lru[imagepolicies.Decision] = _Lru(self.cache.max_entries, clock)
        self._tags: _Lru[str] = _Lru(self.cache.max_entries, clock)
        self._flights = _Flights()
        self._clients: collections.OrderedDict[str, registries.RegistryClient] = (
            collections.OrderedDict()
        )
        # Told about every decision-cache look-up (True: hit), e.g. ``Metrics.cache_lookup``.
        self.cache_observer: Callable[[bool], None] | None = None
        # What each credential provider answered, while the provider lives: a pod's provider
        # serves all its images, so one admission reads its ServiceAccount and pull secrets
        # once, not once per cold image.
        self._credentials: weakref.WeakKeyDictionary[CredentialProvider, _Credentials] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def requests(self) -> int:
        """Registry round trips made so far, by every client this verifier used."""
        return self.client.stats.requests + sum(
            client.stats.requests for client in self._clients.values()
        )

    @property
    def joined_flights(self) -> int:
        return self._flights.joined

    def forget(self) -> None:
        self._decisions.clear()
        self._tags.clear()

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    # -- public API ---------------------------------------------------------------------------

    def cached_digest(self, reference: references.ImageReference) -> str | None:
        if reference.digest is not None:
            return reference.digest
        return self._tags.get((reference.name, reference.tag))

    async def resolve(
        self, reference: references.ImageReference, credentials: CredentialProvider | None = None
    ) -> str:
        """The digest the reference names now (cached for ``tag_ttl``); RegistryError if none."""
        known = self.cached_digest(reference)
        if known is not None:
            return known
        key = ("resolve", reference.name, reference.tag)

        async def work() -> str:
            client = await self._client_for(credentials)
            digest = await client.resolve(reference)
            self._tags.put((reference.name, reference.tag), digest, self.cache.tag_ttl)
            return digest

        return await self._flights.run(key, work)

    def cached(
        self,
        reference: references.ImageReference,
        policies: Sequence[imagepolicies.CompiledPolicy],
    ) -> ImageResult | None:
        """What :meth:`verify` would answer, when every decision is in the cache; else None.

        The warm path without a task or an await: a pod's admission asks this first for each
        image and only awaits :meth:`verify` for the rest."""
        if not policies:
            return ImageResult(reference=reference, digest=reference.digest, decisions=())
        digest = self.cached_digest(reference)
        if all(policy.static is not None for policy in policies):
            # Decided by name alone: no registry, no cache (digest pinning is its own rule).
            return ImageResult(reference, digest, tuple((p, _static(p)) for p in policies))
        if digest is None:
            return None
        decisions = []
        looked_up = 0
        for policy in policies:
            if policy.static is not None:
                decisions.append(_static(policy))
                continue
            decision = self._decisions.get((reference.name, digest, *policy.key))
            if decision is None:
                return None  # verify() will look again, and tell the cache observer
            decisions.append(decision)
            looked_up += 1
        if self.cache_observer is not None:
            for _ in range(looked_up):
                self.cache_observer(True)
        return ImageResult(reference, digest, tuple(zip(policies, decisions, strict=True)))

    async def verify(
        self,
        reference: references.ImageReference,
        policies: Sequence[imagepolicies.CompiledPolicy],
        credentials: CredentialProvider | None = None,
    ) -> ImageResult:
        """Judge ``reference`` against every policy; registry trouble is a failed decision."""
        known = self.cached(reference, policies)
        if known is not None:
            return known
        provider = self._memoised(credentials)
        try:
            digest = await self.resolve(reference, provider)
        except registries.RegistryError as error:
            failed = imagepolicies.Decision(
                False,
                "ImageNotResolved",
                f"cannot resolve the tag to a digest: {error}; check the tag exists "
                "(crane digest IMAGE) and the pod's pull secrets grant access, or give the digest",
            )
            return ImageResult(reference, None, tuple((policy, failed) for policy in policies))
        decisions = await asyncio.gather(
            *(self._decide(reference, digest, policy, provider) for policy in policies)
        )
        return ImageResult(reference, digest, tuple(zip(policies, decisions, strict=True)))

    # -- decisions ----------------------------------------------------------------------------

    async def _decide(
        self,
        reference: references.ImageReference,
        digest: str,
        policy: imagepolicies.CompiledPolicy,
        credentials: CredentialProvider | None,
    ) -> imagepolicies.Decision:
        if policy.static is not None:
            return _static(policy)
        key = (reference.name, digest, *policy.key)
        cached = self._decisions.get(key)
        if self.cache_observer is not None:
            self.cache_observer(cached is not None)
        if cached is not None:
            return cached

        async def work() -> imagepolicies.Decision:
            decision = await self._judge_now(reference, digest, policy, credentials)
            ttl = self.cache.ttl if decision.passed else self.cache.negative_ttl
            self._decisions.put(key, decision, ttl)
            statechanges.changed()  # the image gate reads it (admission/verdicts.py)
            return decision

        # Five containers of one image judge it once.
        return await self._flights.run(("decide", *key), work)

    async def _judge_now(
        self,
        reference: references.ImageReference,
        digest: str,
        policy: imagepolicies.CompiledPolicy,
        credentials: CredentialProvider | None,
    ) -> imagepolicies.Decision:
        evidence = imagepolicies.Evidence(digest=digest)
        decision: imagepolicies.Decision | None = None
        stages = _stages(policy)
        wanted = _predicate_types(policy)
        prefetched: imagepolicies.Evidence | None = None
        if wanted:
            # Attestations are read beside the first signature format: no extra round trip.
            first = self._evidence(reference, digest, credentials, stages[0]) if stages else None
            attested, prefetched = await asyncio.gather(
                self._attested(reference, digest, credentials, wanted),
                first if first is not None else _nothing(),
            )
            evidence = _merged(evidence, attested)
        for position, signature_format in enumerate(stages):
            found = (
                prefetched
                if position == 0 and prefetched is not None
                else await self._evidence(reference, digest, credentials, signature_format)
            )
            if decision is not None and found.error is None and not _anything(found):
                continue  # nothing new: the decision on what was found before stands
            evidence, decision = _merged(evidence, found), None
            if evidence.error is not None:
                break
            if any(signatures.items for signatures in evidence.signatures):
                decision = await _judge(policy, evidence)
                if decision.passed:
                    break
        if decision is None:
            decision = await _judge(policy, evidence)
        if not decision.passed and evidence.error is None:
            # Maybe a multi-arch index signed per platform: one more look, only on failure.
            expanded = await self._evidence(reference, digest, credentials, stages, wanted)
            if expanded.is_index:
                decision = await _judge(
                    policy,
                    dataclasses.replace(evidence, is_index=True, platforms=expanded.platforms),
                )
        return decision

    async def _evidence(
        self,
        reference: references.ImageReference,
        digest: str,
        credentials: CredentialProvider | None,
        stage: fetching.SignatureFormat | tuple[fetching.SignatureFormat, ...],
        wanted: frozenset[str] = frozenset(),
    ) -> imagepolicies.Evidence:
        """One format's evidence, or for a tuple of formats the platforms of an index (with
        their attestations of the ``wanted`` predicate types)."""
        if isinstance(stage, tuple):
            key: tuple[str, ...] = ("evidence", reference.name, digest, "platforms")
            key += tuple(each.format.name for each in stage) + tuple(sorted(wanted))
        else:
            key = ("evidence", reference.name, digest, stage.format.name)

        async def work() -> imagepolicies.Evidence:
            client = await self._client_for(credentials)
            try:
                if isinstance(stage, tuple):
                    return await _platforms(client, reference, digest, stage, wanted)
                fetched = await stage.fetch(client, reference, digest)
                return imagepolicies.Evidence(
                    digest=digest, signatures=(fetched.found,), problems=fetched.problems
                )
            except registries.RegistryError as error:
                return imagepolicies.Evidence(digest=digest, error=f"registry error: {error}")

        return await self._flights.run(key, work)

    async def _attested(
        self,
        reference: references.ImageReference,
        digest: str,
        credentials: CredentialProvider | None,
        wanted: frozenset[str],
    ) -> imagepolicies.Evidence:
        """The attestations of the wanted predicate types about one digest."""
        key = ("attestations", reference.name, digest, *sorted(wanted))

        async def work() -> imagepolicies.Evidence:
            client = await self._client_for(credentials)
            try:
                return await _attestations(client, reference, digest, wanted)
            except registries.RegistryError as error:
                return imagepolicies.Evidence(digest=digest, error=f"registry error: {error}")

        return await self._flights.run(key, work)

    def _memoised(self, provider: CredentialProvider | None) -> CredentialProvider | None:
        """``provider`` asked at most once while it lives, however many images it serves."""
        if provider is None:
            return None
        try:
            memo = self._credentials.get(provider)
            if memo is None:
                memo = self._credentials[provider] = _Credentials()
        except TypeError:  # not weakly referenceable: once per verification
            memo = _Credentials()
        return functools.partial(memo.get, provider)

    async def _client_for(
        self, credentials: CredentialProvider | None
    ) -> registries.RegistryClient:
        found = await credentials() if credentials is not None else {}
        if not found:
            return self.client
        fingerprint = _fingerprint(found)
        client = self._clients.get(fingerprint)
        if client is None:
            snapshot = dict(found)
            client = registries.RegistryClient(
                self.client.settings,
                snapshot.get,
                operator_credentials=self.client.operator_credentials,
                helpers=self.client.helpers,
                referrers_support=self.client.referrers_support,
                slots=self.client.slots,  # one bound per registry, whoever's credentials
            )
            client.observer = self.client.observer  # the same metrics, whoever's credentials
            self._clients[fingerprint] = client
            while len(self._clients) > self.cache.max_clients:
                _, oldest = self._clients.popitem(last=False)
                await oldest.close()
        self._clients.move_to_end(fingerprint)
        return client


def _stages(policy: imagepolicies.CompiledPolicy) -> tuple[fetching.SignatureFormat, ...]:
    """The registered formats that can vouch for one of the policy's authorities, in order."""
    return tuple(
        stage
        for stage in registered.FORMATS
        if any(stage.serves(authority) for authority in policy.authorities)
    )


def _predicate_types(policy: imagepolicies.CompiledPolicy) -> frozenset[str]:
    return frozenset(requirement.predicate_type for requirement in policy.attestations)


async def _nothing() -> None:
    return None


async def _attestations(
    client: registries.RegistryClient,
    reference: references.ImageReference,
    digest: str,
    wanted: frozenset[str],
) -> imagepolicies.Evidence:
    """The attestations about one digest, and the time their conditions are judged at."""
    found, problems = await attestationsigs.fetch(client, reference, digest, wanted)
    return imagepolicies.Evidence(
        digest=digest,
        attestations=found,
        problems=problems,
        now=datetime.datetime.now(datetime.UTC),
    )


def _static(policy: imagepolicies.CompiledPolicy) -> imagepolicies.Decision:
    decision = imagepolicies.judge_static(policy)
    if decision is None:
        raise ValueError(f"ImagePolicy {policy.name!r} has no static authority")
    return decision


async def _judge(
    policy: imagepolicies.CompiledPolicy, evidence: imagepolicies.Evidence
) -> imagepolicies.Decision:
    # Signature and certificate checks are CPU work (milliseconds for keyless bundles and
    # log proofs): off the event loop, so warm admissions answer while a cold one verifies.
    # One public-key signature check is a tenth of a millisecond, less than the hop to a
    # worker thread costs: those few are checked right here.
    # Attestations (DSSE checks and CEL conditions over whole predicates) always go to a thread.
    inline = not policy.attestations and _keys_only(policy)
    if inline and _attempts(policy, evidence) <= INLINE_SIGNATURE_CHECKS:
        return imagepolicies.judge(policy, evidence)
    return await asyncio.to_thread(imagepolicies.judge, policy, evidence)


def _attempts(policy: imagepolicies.CompiledPolicy, evidence: imagepolicies.Evidence) -> int:
    """Signature checks ``judge`` may make, at most (platforms count their own evidence)."""
    per_authority = _checks(evidence) + sum(_checks(platform) for _, platform in evidence.platforms)
    return per_authority * len(policy.authorities)


def _checks(evidence: imagepolicies.Evidence) -> int:
    return sum(min(len(found.items), formats.MAX_PER_FORMAT) for found in evidence.signatures)


def _keys_only(policy: imagepolicies.CompiledPolicy) -> bool:
    """Every authority is a bare public key: no certificate chains, no log proofs."""
    return all(
        isinstance(authority, authorities.KeyAuthority) and authority.trusted_root is None
        for authority in policy.authorities
    )


def _merged(
    first: imagepolicies.Evidence, second: imagepolicies.Evidence
) -> imagepolicies.Evidence:
    """Two stages' findings about one digest; a registry error in either is the error.

    The later stage's evidence and problems come first: judged and reported in that order,
    the legacy signatures of an image read before its bundles, as they always have."""
    return dataclasses.replace(
        first,
        signatures=second.signatures + first.signatures,
        problems=second.problems + first.problems,
        error=first.error or second.error,
        attestations=first.attestations + second.attestations,
        now=first.now or second.now,
    )


def _anything(evidence: imagepolicies.Evidence) -> bool:
    """Whether a stage found evidence or a problem worth a new judgement."""
    return bool(evidence.problems) or any(found.items for found in evidence.signatures)


class _Credentials:
    """A provider's answer, asked for once (it holds no reference to the provider)."""

    def __init__(self) -> None:
        self._result: list[Mapping[str, registries.Credentials]] = []
        self._lock = asyncio.Lock()

    async def get(self, provider: CredentialProvider) -> Mapping[str, registries.Credentials]:
        async with self._lock:
            if not self._result:
                self._result.append(await provider())
        return self._result[0]


# ---------------------------------------------------------------------------------------------
# Reading signatures from the registry


async def _signatures(
    client: registries.RegistryClient,
    reference: references.ImageReference,
    digest: str,
    stages: tuple[fetching.SignatureFormat, ...],
    wanted: frozenset[str] = frozenset(),
) -> imagepolicies.Evidence:
    """Every wanted format's evidence about one digest at once (a platform of an index), and
    its attestations of the ``wanted`` predicate types."""
    fetched, attested = await asyncio.gather(
        asyncio.gather(
            *(signature_format.fetch(client, reference, digest) for signature_format in stages)
        ),
        _attestations(client, reference, digest, wanted) if wanted else _nothing(),
    )
    # Ordered as the staged lookup merges them: the format asked last first.
    ordered = tuple(reversed(fetched))
    evidence = imagepolicies.Evidence(
        digest=digest,
        signatures=tuple(result.found for result in ordered),
        problems=tuple(problem for result in ordered for problem in result.problems),
    )
    return evidence if attested is None else _merged(evidence, attested)


def _platform_name(descriptor: Mapping[str, Any], index: int) -> str | None:
    """``linux/arm64/v8``; ``#2`` when the index does not say; None for non-runnables."""
    platform = descriptor.get("platform")
    if not isinstance(platform, Mapping):
        return f"#{index + 1}"
    os_name, arch = platform.get("os"), platform.get("architecture")
    if os_name == "unknown":
        return None  # attestation manifests (buildkit) are not runnable platforms
    if not isinstance(os_name, str) or not isinstance(arch, str):
        return f"#{index + 1}"
    variant = platform.get("variant")
    return f"{os_name}/{arch}" + (f"/{variant}" if isinstance(variant, str) and variant else "")


async def _platforms(
    client: registries.RegistryClient,
    reference: references.ImageReference,
    digest: str,
    stages: tuple[fetching.SignatureFormat, ...],
    wanted: frozenset[str] = frozenset(),
) -> imagepolicies.Evidence:
    """For an index: the signatures of each platform manifest (not of the index itself: the
    caller has those already). Not an index: evidence with ``is_index`` false."""
    manifest = await client.manifest(reference.registry, reference.repository, digest)
    try:
        document = manifest.json()
    except ValueError:
        raise registries.RegistryError(f"manifest {digest} is not JSON") from None
    entries = document.get("manifests")
    if not isinstance(entries, list):
        return imagepolicies.Evidence(digest=digest)
    platforms = [
        (name, entry["digest"])
        for position, entry in enumerate(entries)
        if isinstance(entry, dict)
        and isinstance(entry.get("digest"), str)
        and (name := _platform_name(entry, position)) is not None
    ]
    if not platforms:
        raise registries.RegistryError(f"index {digest} lists no runnable platform")
    if len(platforms) > MAX_PLATFORMS:
        raise registries.RegistryError(f"index {digest} lists more than {MAX_PLATFORMS} platforms")
    per_platform = await asyncio.gather(
        *(
            _signatures(client, reference, platform_digest, stages, wanted)
            for _, platform_digest in platforms
        )
    )
    return imagepolicies.Evidence(
        digest=digest,
        is_index=True,
        platforms=tuple(
            (name, evidence) for (name, _), evidence in zip(platforms, per_platform, strict=True)
        ),
    )
