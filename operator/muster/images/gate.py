"""The image-signature gate and the ``ImagePolicy`` controller that feeds it.

The controller (kopf, on the active peer) compiles each ImagePolicy when it appears or changes,
resolving the Secrets and ConfigMaps it names, and writes ``status.conditions`` ``Compiled``
True/False with the reason; a timer recompiles so a rotated key or trusted root is picked up.
Every replica's gate also lists the policies itself at most every ``refresh`` seconds (one API
call), so a replica that is not the active peer never judges with an empty or stale set.

At admission the gate, for every image use of every pod template:

- MUTATE: resolves tags to digests and pins them (``repo:tag@sha256:...``) where a matching
  policy says ``pinDigests``;
- VALIDATE: checks the image against every matching policy (all must pass); a failure names the
  container, the image, the policy and the reason in one line. Registry trouble is a failure.
  An image no applicable policy covers is ``ImageNotCovered``: denied, warned or allowed as the
  operator's ``--uncovered-images`` and the namespace's ``muster.dev/uncovered-images`` label
  say (pinning alone never admits an image). An image a static-pass policy admits unsigned is
  reported as ``ImagePassedUnsigned`` (a warning, an Event and a metric), every time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from muster.images import verifier as imageverifier
from muster.images.rules import policies as imagepolicies
from muster.kernel import (
    crds,
    denials,
    findings,
    gates,
    pods,
    pullsecrets,
    references,
    selectors,
    subjects,
)
from muster.platform import kubeapi, refreshahead, registries, statechanges
from muster.platform import namespaces as platformnamespaces
from muster.platform.services import Services

if TYPE_CHECKING:
    import kopf  # imported where controllers register: ``muster check`` runs none

__all__ = [
    "CHECK",
    "ImageArea",
    "ImageGate",
    "area_for",
    "gate_factory",
    "policy_ref",
    "register_controller",
]


class ImageSettings(Protocol):
    """What the image area reads from the process's settings."""

    # An image no ImagePolicy covers (a namespace's muster.dev/uncovered-images overrides it).
    @property
    def uncovered_images(self) -> imagepolicies.Uncovered: ...

    # The model verifier's own init container image is Muster's: never judged as a tenant's.
    @property
    def model_verifier_image(self) -> str: ...


logger = logging.getLogger("muster.images")

CHECK = "image-signature"
PLURAL = "imagepolicies"
POLICIES_PATH = f"/apis/{crds.GROUP}/{crds.VERSION}/{PLURAL}"
REFRESH_SECONDS = 30.0
RECOMPILE_SECONDS = 60.0


def _condition(ok: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {
        "type": "Compiled",
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message[:1000],
        "observedGeneration": generation,
        "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


async def read_source(kube: kubeapi.KubeApi, source: imagepolicies.Source) -> bytes | None:
    """The bytes of one ConfigMap/Secret key, None when the object or key does not exist."""
    plural = "configmaps" if source.kind == "ConfigMap" else "secrets"
    try:
        obj = await kube.get(f"/api/v1/namespaces/{source.namespace}/{plural}/{source.name}")
    except kubeapi.ApiError as error:
        if error.status == 404:
            return None
        raise imagepolicies.InvalidImagePolicy(
            f"cannot read {source}: HTTP {error.status} {error}"
        ) from None
    if source.kind == "ConfigMap":
        text = (obj.get("data") or {}).get(source.key)
        if isinstance(text, str):
            return text.encode()
    encoded = (obj.get("binaryData" if source.kind == "ConfigMap" else "data") or {}).get(
        source.key
    )
    if not isinstance(encoded, str):
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise imagepolicies.InvalidImagePolicy(f"{source} is not valid base64") from None


async def compile_object(
    kube: kubeapi.KubeApi, obj: Mapping[str, Any]
) -> imagepolicies.CompiledPolicy:
    """Compile one ImagePolicy object as stored in the API (raises InvalidImagePolicy)."""
    metadata = obj.get("metadata") or {}
    spec = imagepolicies.parse_spec(obj.get("spec"))
    sources = imagepolicies.sources_of(spec)
    contents = await asyncio.gather(*(read_source(kube, source) for source in sources))
    materials = {
        source: data for source, data in zip(sources, contents, strict=True) if data is not None
    }
    return imagepolicies.compile_policy(
        str(metadata.get("name", "")), int(metadata.get("generation") or 0), spec, materials
    )


@dataclasses.dataclass
class PolicyStore:
    """The compiled policies every admission uses; compiled once, never per request."""

    kube: kubeapi.KubeApi
    refresh: float = REFRESH_SECONDS
    policies: dict[str, imagepolicies.CompiledPolicy] = dataclasses.field(default_factory=dict)
    errors: dict[str, BrokenPolicy] = dataclasses.field(default_factory=dict)
    listed_at: float | None = None
    _lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    _ahead: refreshahead.RefreshAhead = dataclasses.field(
        default_factory=lambda: refreshahead.RefreshAhead("the ImagePolicy list")
    )

    def put(self, policy: imagepolicies.CompiledPolicy) -> None:
        self.policies[policy.name] = policy
        self.errors.pop(policy.name, None)
        statechanges.changed()  # the image gate reads the policies (admission/verdicts.py)

    def fail(self, name: str, generation: int, reason: str, spec: object = None) -> None:
        # A policy that does not compile must not silently stop protecting: the gate denies
        # what it would have covered (see ImageGate), so the previous version is dropped.
        self.policies.pop(name, None)
        try:
            parsed = imagepolicies.parse_spec(spec)
        except imagepolicies.InvalidImagePolicy:
            parsed = None
        self.errors[name] = BrokenPolicy(name, generation, reason, parsed)
        statechanges.changed()

    def remove(self, name: str) -> None:
        self.policies.pop(name, None)
        self.errors.pop(name, None)
        statechanges.changed()

    async def snapshot(self) -> list[imagepolicies.CompiledPolicy]:
        if self.listed_at is None or time.monotonic() - self.listed_at > self.refresh:
            await self._relist_if_older(self.refresh)
        elif self._ahead.due(self.listed_at, self.refresh):
            # Re-listed in the background while this list still answers; never used past
            # ``refresh`` all the same (a failed re-list keeps the old one until then).
            self._ahead.start(lambda: self._relist_if_older(self.refresh * self._ahead.fraction))
        return list(self.policies.values())

    async def _relist_if_older(self, age: float) -> None:
        async with self._lock:  # one re-list, shared by every reader that waits for it
            if self.listed_at is None or time.monotonic() - self.listed_at > age:
                await self._relist()

    async def _relist(self) -> None:
        try:
            listing = await self.kube.get(POLICIES_PATH)
        except kubeapi.ApiError as error:
            if error.status != 404:
                self._unavailable(error)
                return
            # The CRD is not installed, so no ImagePolicy can exist: there is nothing to enforce.
            listing = {"items": []}
        except (OSError, TimeoutError) as error:
            self._unavailable(error)
            return
        await self._replace(listing.get("items") or [])

    def _unavailable(self, error: BaseException) -> None:
        """Fail closed until the first list succeeds; later, keep the last known set."""
        if self.listed_at is None:
            raise PoliciesUnavailable(f"cannot list ImagePolicies: {error}") from None
        logger.warning("cannot refresh ImagePolicies, keeping the last set: %s", error)

    async def _replace(self, items: Sequence[Mapping[str, Any]]) -> None:
        seen = set()
        for obj in items:
            metadata = obj.get("metadata") or {}
            name = str(metadata.get("name", ""))
            generation = int(metadata.get("generation") or 0)
            seen.add(name)
            known = self.policies.get(name)
            if known is not None and known.generation == generation:
                continue
            failed = self.errors.get(name)
            if failed is not None and failed.generation == generation:
                continue
            try:
                self.put(await compile_object(self.kube, obj))
            except imagepolicies.InvalidImagePolicy as error:
                self.fail(name, generation, str(error), obj.get("spec"))
        for name in set(self.policies) | set(self.errors):
            if name not in seen:
                self.remove(name)
        self.listed_at = time.monotonic()
        statechanges.changed()


class PoliciesUnavailable(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class BrokenPolicy:
    """A policy that does not compile; ``spec`` when at least its shape is known."""

    name: str
    generation: int
    reason: str
    spec: imagepolicies.ImagePolicySpec | None

    def covers(self, reference: references.ImageReference, labels: Mapping[str, str]) -> bool:
        if self.spec is None:
            return True  # nothing known: it may cover anything, so it blocks everything
        return selectors.matches(self.spec.namespace_selector, labels) and any(
            imagepolicies.compile_glob(pattern).fullmatch(reference.name)
            for pattern in self.spec.images
        )

    @property
    def mode(self) -> str:
        return self.spec.mode if self.spec is not None else "enforce"


@dataclasses.dataclass
class ImageArea:
    """Everything the image area shares between its gate and its controller, per process."""

    services: Services[ImageSettings]
    store: PolicyStore
    # The process's one namespace index, shared with every other area that selects by labels.
    namespaces: platformnamespaces.NamespaceIndex
    verifier: imageverifier.Verifier


AREA = "images"


def area_for(services: Services[ImageSettings]) -> ImageArea:
    """The one image area of this process, shared by its gate and its controller."""
    area = services.areas.get(AREA)
    if not isinstance(area, ImageArea):
        area = services.areas[AREA] = ImageArea(
            services=services,
            store=PolicyStore(services.kube),
            namespaces=platformnamespaces.index_for(services),
            verifier=imageverifier.Verifier(services.registries),
        )
        metrics = services.metrics
        area.verifier.cache_observer = lambda hit: metrics.cache_lookup("signatures", hit=hit)
    return area


# ---------------------------------------------------------------------------------------------
# Registry credentials: the pod's imagePullSecrets and its ServiceAccount's


def pull_secret_provider(
    kube: kubeapi.KubeApi, namespace: str, spec: Mapping[str, Any]
) -> imageverifier.CredentialProvider:
    async def provide() -> Mapping[str, registries.Credentials]:
        names: list[str] = [
            ref["name"]
            for ref in spec.get("imagePullSecrets") or []
            if isinstance(ref, Mapping) and isinstance(ref.get("name"), str)
        ]
        account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        try:
            sa = await kube.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}")
            names += [
                ref["name"]
                for ref in sa.get("imagePullSecrets") or []
                if isinstance(ref, Mapping) and isinstance(ref.get("name"), str)
            ]
        except kubeapi.ApiError as error:
            if error.status != 404:
                logger.warning("cannot read ServiceAccount %s/%s: %s", namespace, account, error)
        found: dict[str, registries.Credentials] = {}
        for name in dict.fromkeys(names):
            try:
                secret = await kube.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
            except kubeapi.ApiError as error:
                logger.warning(
                    "cannot read pull secret %s/%s: HTTP %s", namespace, name, error.status
                )
                continue
            data = secret.get("data") or {}
            kind = secret.get("type")
            field, legacy = (
                (".dockerconfigjson", False)
                if kind == "kubernetes.io/dockerconfigjson"
                else (".dockercfg", True)
            )
            try:
                parsed = pullsecrets.parse(base64.b64decode(data.get(field, "")), legacy=legacy)
            except (pullsecrets.InvalidPullSecret, binascii.Error, ValueError) as error:
                # The reason is ours, never the secret's content.
                logger.warning("pull secret %s/%s is unusable: %s", namespace, name, error)
                continue
            for registry, (username, password) in parsed.items():
                found.setdefault(registry, registries.Credentials(username, password))
        return found

    return provide


# ---------------------------------------------------------------------------------------------
# The gate


def policy_ref(name: str, denial: denials.DenialSpec | None = None) -> findings.PolicyRef:
    """The ImagePolicy ``name`` as the policy a finding comes from."""
    return findings.PolicyRef(kind="ImagePolicy", name=name, denial=denial)


def _finding(
    use: pods.ImageUse,
    reason: str,
    message: str,
    mode: str = "enforce",
    *,
    policy: str,
    denial: denials.DenialSpec | None = None,
) -> findings.Finding:
    return findings.Finding(
        check=CHECK,
        reason=reason,
        subject=use.label,
        message=message,
        mode=findings.Mode(mode),
        policy=policy_ref(policy, denial),
    )


def failure_findings(
    use: pods.ImageUse, image: str, result: imageverifier.ImageResult
) -> list[findings.Finding]:
    """One line per failed policy: container, image, policy, reason; and one warning per
    policy that let the image in unsigned (static pass), so it is never silent."""
    found = [
        _finding(
            use,
            decision.reason,
            f"image {image!r} is rejected by ImagePolicy {policy.name!r}: {decision.message}",
            policy.mode,
            policy=policy.name,
            denial=policy.denial,
        )
        for policy, decision in result.decisions
        if not decision.passed
    ]
    if not found:
        found = [
            _finding(
                use,
                "SignatureAudited",
                f"image {image!r} is admitted by ImagePolicy {policy.name!r} although checks "
                f"failed that its Notation level only logs: {'; '.join(decision.warnings)}",
                "warn",
                policy=policy.name,
                denial=policy.denial,
            )
            for policy, decision in result.decisions
            if decision.passed and decision.warnings
        ]
        found += [
            _finding(
                use,
                "ImagePassedUnsigned",
                f"image {image!r} is let in without a signature by ImagePolicy "
                f"{policy.name!r} (static pass)",
                "warn",
                policy=policy.name,
                denial=policy.denial,
            )
            for policy, decision in result.decisions
            if decision.passed and decision.reason == imagepolicies.PASSED_UNSIGNED
        ]
    return found


def uncovered_finding(
    use: pods.ImageUse,
    image: str,
    reference: references.ImageReference,
    namespace: str,
    applicable: Sequence[imagepolicies.CompiledPolicy],
    labels: Mapping[str, str],
    default: imagepolicies.Uncovered,
) -> list[findings.Finding]:
    """``ImageNotCovered`` for an image no applicable policy covers (none when allowed)."""
    mode, source = imagepolicies.uncovered_mode(default, labels)
    if mode is imagepolicies.Uncovered.ALLOW:
        return []
    return [
        findings.Finding(
            check=CHECK,
            reason="ImageNotCovered",
            subject=use.label,
            message=imagepolicies.uncovered_message(
                image, reference, namespace, applicable, mode=mode, source=source
            ),
            mode=findings.Mode.ENFORCE
            if mode is imagepolicies.Uncovered.DENY
            else findings.Mode.WARN,
        )
    ]


class ImageGate:
    """Signatures by trusted authorities on every image a matching ImagePolicy covers."""

    name = CHECK

    def __init__(self, area: ImageArea) -> None:
        self.area = area
        settings = area.services.settings
        self.uncovered = settings.uncovered_images
        # Muster's own model verifier, which the model gate injects: the platform chose it when
        # it installed Muster, so it counts as covered (by digest only; a tag is never trusted).
        self.verifier: references.ImageReference | None = None
        try:
            verifier = references.parse(settings.model_verifier_image)
        except references.InvalidReference:
            verifier = None
        if verifier is not None and verifier.pinned:
            self.verifier = verifier

    def _is_verifier(self, reference: references.ImageReference) -> bool:
        return (
            self.verifier is not None
            and reference.name == self.verifier.name
            and reference.digest == self.verifier.digest
        )

    async def judge(self, subject: subjects.Subject, phase: gates.Phase) -> gates.GateResult:
        try:
            policies = await self.area.store.snapshot()
        except PoliciesUnavailable as error:
            failed = findings.Finding(
                check=CHECK, reason="ImagePoliciesUnavailable", subject="gate", message=str(error)
            )
            return gates.GateResult(findings=(failed,) if phase is gates.Phase.VALIDATE else ())
        broken = list(self.area.store.errors.values())
        if not policies and not broken and phase is gates.Phase.MUTATE:
            return gates.GateResult()  # nothing to pin for (uncovered images are validation's)
        try:
            labels = await self.area.namespaces.labels(subject.namespace)
        except platformnamespaces.UNREADABLE_ERRORS as error:
            if phase is gates.Phase.MUTATE:
                return gates.GateResult()
            failed = platformnamespaces.unavailable(CHECK, subject.namespace, error)
            return gates.GateResult(findings=(failed,))
        applicable = [policy for policy in policies if policy.applies_to(labels)]
        pins: list[Awaitable[list[Mapping[str, Any]]]] = []
        checks: list[Awaitable[list[findings.Finding]]] = []
        found: list[list[findings.Finding]] = []  # per image use, in order
        waiting: list[int] = []  # the uses whose findings ``checks`` will give
        for template in subject.templates:
            credentials = pull_secret_provider(
                self.area.services.kube, subject.namespace, template.spec
            )
            for use in template.image_uses():
                if not isinstance(use.image, str):
                    continue  # the pinning rule reports images that are missing
                try:
                    reference = references.parse(use.image)
                except references.InvalidReference:
                    continue  # and malformed ones
                matching = [policy for policy in applicable if policy.covers(reference)]
                if phase is gates.Phase.MUTATE:
                    if not reference.pinned and any(p.pin_digests for p in matching):
                        pins.append(self._pin(use, use.image, reference, credentials))
                else:
                    covering = [b for b in broken if b.covers(reference, labels)]
                    if not matching and not covering:
                        found.append(
                            []
                            if self._is_verifier(reference)
                            else uncovered_finding(
                                use,
                                use.image,
                                reference,
                                subject.namespace,
                                applicable,
                                labels,
                                self.uncovered,
                            )
                        )
                        continue
                    known = None if covering else self.area.verifier.cached(reference, matching)
                    if known is not None:  # warm: answered now, no task per image
                        found.append(failure_findings(use, use.image, known))
                        continue
                    found.append([])  # filled in below, in the same order
                    waiting.append(len(found) - 1)
                    checks.append(
                        self._validate(use, use.image, reference, matching, credentials, covering)
                    )
        if phase is gates.Phase.MUTATE:
            patches = await asyncio.gather(*pins)
            return gates.GateResult(patch=tuple(op for ops in patches for op in ops))
        if checks:
            for slot, each in zip(waiting, await asyncio.gather(*checks), strict=True):
                found[slot] = each
        return gates.GateResult(findings=tuple(f for each in found for f in each))

    async def _pin(
        self,
        use: pods.ImageUse,
        image: str,
        reference: references.ImageReference,
        credentials: imageverifier.CredentialProvider,
    ) -> list[Mapping[str, Any]]:
        registries.requester.set(credentials)  # see _validate
        try:
            digest = await self.area.verifier.resolve(reference, credentials)
        except registries.RegistryError as error:
            # Validation judges the tag and says why; mutation never denies.
            logger.info("cannot pin %s: %s", image, error)
            return []
        return [{"op": "replace", "path": use.pointer, "value": f"{image}@{digest}"}]

    async def _validate(
        self,
        use: pods.ImageUse,
        image: str,
        reference: references.ImageReference,
        matching: Sequence[imagepolicies.CompiledPolicy],
        credentials: imageverifier.CredentialProvider,
        broken: Sequence[BrokenPolicy],
    ) -> list[findings.Finding]:
        # Runs as its own task (gathered): its registry requests are this pod's, whose
        # provider is made per admission, so requests of pods waiting for one registry are
        # served in turn (registries.RequestSlots).
        registries.requester.set(credentials)
        found: list[findings.Finding] = []
        # A policy that fails to compile cannot vouch for anything it covers: fail closed.
        for policy in sorted(broken, key=lambda b: b.name):
            found.append(
                _finding(
                    use,
                    "ImagePolicyInvalid",
                    f"image {image!r} cannot be judged: ImagePolicy {policy.name!r} does not "
                    f"compile ({policy.reason})",
                    policy.mode,
                    policy=policy.name,
                )
            )
        if matching:
            result = await self.area.verifier.verify(reference, matching, credentials)
            found.extend(failure_findings(use, image, result))
        return found


def gate_factory(services: Services[ImageSettings]) -> Sequence[gates.Gate]:
    return [ImageGate(area_for(services))]


# ---------------------------------------------------------------------------------------------
# The controller


async def compile_into_status(
    area: ImageArea, body: Mapping[str, Any], *, force: bool = False
) -> imagepolicies.CompiledPolicy | None:
    """Compile one ImagePolicy into the store and write its ``Compiled`` condition.

    The condition is written through the status subresource only (so Muster needs no write
    access to the policies themselves), and only when it changed.
    """
    metadata = body.get("metadata") or {}
    name, generation = str(metadata.get("name")), int(metadata.get("generation") or 0)
    known = area.store.policies.get(name)
    broken = area.store.errors.get(name)
    # Skip only when this generation is both compiled here and reported on the object: the
    # store alone is not enough, because admission may have compiled a new policy first and
    # its Compiled condition would then never be written.
    reported = any(
        condition.get("type") == "Compiled" and condition.get("observedGeneration") == generation
        for condition in ((body.get("status") or {}).get("conditions") or [])
        if isinstance(condition, Mapping)
    )
    if (
        not force
        and reported
        and (
            (known is not None and known.generation == generation)
            or (broken is not None and broken.generation == generation)
        )
    ):
        return known  # our own status write, or a relabel: nothing to compile
    compiled: imagepolicies.CompiledPolicy | None = None
    try:
        compiled = await compile_object(area.services.kube, body)
    except imagepolicies.InvalidImagePolicy as error:
        area.store.fail(name, generation, str(error), body.get("spec"))
        condition = _condition(False, "CompileFailed", str(error), generation)
    else:
        area.store.put(compiled)
        condition = _condition(
            True,
            "Compiled",
            f"{len(compiled.authorities)} authorities, threshold {compiled.threshold}",
            generation,
        )
    previous = [
        c
        for c in (body.get("status") or {}).get("conditions") or []
        if isinstance(c, Mapping) and c.get("type") == "Compiled"
    ]
    if previous and all(
        previous[0].get(k) == condition[k]
        for k in ("status", "reason", "message", "observedGeneration")
    ):
        return compiled  # unchanged: no write, no event storm from the timer
    if condition["status"] == "False":
        logger.warning("ImagePolicy %s does not compile: %s", name, condition["message"])
    try:
        await area.services.kube.patch(
            f"{POLICIES_PATH}/{name}/status",
            {"status": {"conditions": [condition], "observedGeneration": generation}},
        )
    except kubeapi.ApiError as error:
        if error.status != 404:  # deleted meanwhile: nothing to report on
            logger.warning("cannot write the status of ImagePolicy %s: %s", name, error)
    return compiled


def register_controller(registry: kopf.OperatorRegistry, services: Services[ImageSettings]) -> None:
    import kopf

    area = area_for(services)
    resource = (crds.GROUP, crds.VERSION, PLURAL)

    # Events, not create/update handlers: nothing is stored on the policy objects (no
    # annotations, no finalizers), so Muster needs only read access to them.
    @kopf.on.event(*resource, registry=registry)
    async def watch_policy(body: kopf.Body, type: str | None, name: str, **_: Any) -> None:
        if type == "DELETED":
            area.store.remove(name)
        else:
            await compile_into_status(area, body)

    # A periodic recompile picks up keys and trusted roots rotated in their Secrets/ConfigMaps.
    # Not a kopf timer: timers put a finalizer on every policy, which would need write access
    # to the policies and would keep them from being deleted while no operator runs.
    async def recompile_forever() -> None:
        while True:
            await asyncio.sleep(RECOMPILE_SECONDS)
            try:
                listed = await area.services.kube.get(f"/apis/{crds.GROUP}/{crds.VERSION}/{PLURAL}")
            except kubeapi.ApiError as error:
                logger.warning("cannot list ImagePolicies to recompile them: %s", error)
                continue
            for body in listed.get("items") or []:
                await compile_into_status(area, body, force=True)

    recompiler: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def start_recompiling(**_: Any) -> None:
        recompiler.append(asyncio.create_task(recompile_forever(), name="imagepolicy-recompile"))

    # Namespace labels select the policies: the process's one namespace watch feeds them.
    platformnamespaces.watch(registry, services)

    @kopf.on.cleanup(registry=registry)
    async def close_clients(**_: Any) -> None:
        for task in recompiler:
            task.cancel()
        await area.verifier.close()
