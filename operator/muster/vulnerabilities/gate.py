"""The vulnerability gate: asynchronous trivy scans stored as ImageScans, judged at admission.

Every image digest admission resolves in a judged namespace is queued (never scanned on the
admission path), scanned by a bounded pool of trivy processes, and stored as the
cluster-scoped ``ImageScan`` named ``sha256-<hex>`` so every replica shares it and it survives
restarts. A scan made with an older vulnerability DB is redone when the DB changes. The gate
judges an ``ImagePolicy``'s ``vulnerabilities`` rules against the index of ImageScans (fed by
this process's scans and a watch, re-listed when a digest is missing and the index is stale).

Only what admission resolved is ever scanned: pod events (any namespace, any image a pod names)
can re-queue a digest admission resolved, or one an ImageScan exists for (written by Muster
only, for such digests), and always under the reference admission saw, never the pod's. So a
pod in a namespace Muster does not judge cannot aim the scanner anywhere; and wherever a scan
goes, trivy reaches registries only through Muster's client (``vulnerabilities/relay.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pydantic

from muster.images import gate as imagegate
from muster.images import verifier as imageverifier
from muster.images.rules import policies as imagepolicies
from muster.kernel import crds, findings, gates, pods, references, subjects
from muster.platform import kubeapi, registries, statechanges, tasks
from muster.platform import namespaces as platformnamespaces
from muster.platform.services import Services
from muster.vulnerabilities import scanner
from muster.vulnerabilities.rules import scans as vulnerabilities

if TYPE_CHECKING:
    import kopf  # imported where controllers register: ``muster check`` runs none

__all__ = [
    "AREA",
    "CHECK",
    "ScanArea",
    "ScanIndex",
    "VulnerabilityGate",
    "area_for",
    "gate_factory",
    "image_ids",
    "register_controller",
]


class ScanSettings(imagegate.ImageSettings, Protocol):
    """What the vulnerability area reads: trivy's cache and limits (it reads the image area too)."""

    @property
    def trivy_cache_dir(self) -> Path | None: ...

    @property
    def trivy_db_repository(self) -> str | None: ...

    @property
    def scan_timeout(self) -> float: ...

    @property
    def scan_concurrency(self) -> int: ...


logger = logging.getLogger("muster.vulnerabilities")

AREA = "vulnerabilities"
CHECK = "vulnerabilities"
PLURAL = "imagescans"
SCANS_PATH = f"/apis/{crds.GROUP}/{crds.VERSION}/{PLURAL}"
RELIST_SECONDS = 10.0
DB_POLL_SECONDS = 60.0
MAX_QUEUE = 1000
MAX_ADMITTED = 10_000  # digests admission resolved, remembered for pod events to re-queue


def _parse_status(data: object) -> vulnerabilities.ImageScanStatus | None:
    try:
        return vulnerabilities.ImageScanStatus.model_validate(data)
    except pydantic.ValidationError:
        return None


class ScanIndex:
    """digest -> the stored scan; re-listed from the cluster when a digest is missing."""

    def __init__(self, kube: kubeapi.KubeApi, clock: Any = time.monotonic) -> None:
        self.kube = kube
        self.scans: dict[str, vulnerabilities.ImageScanStatus] = {}
        self.images: dict[str, str] = {}
        self._clock = clock
        self._listed_at: float | None = None
        self._lock = asyncio.Lock()

    def put(self, body: Mapping[str, Any]) -> None:
        spec = body.get("spec") or {}
        digest = spec.get("digest") if isinstance(spec, Mapping) else None
        status = _parse_status(body.get("status"))
        if isinstance(digest, str) and status is not None:
            self.scans[digest] = status
            self.images[digest] = str(spec.get("image", ""))

    def remove(self, digest: str) -> None:
        self.scans.pop(digest, None)
        self.images.pop(digest, None)

    async def get(self, digest: str) -> vulnerabilities.ImageScanStatus | None:
        found = self.scans.get(digest)
        if found is not None:
            return found
        async with self._lock:
            now = self._clock()
            if self._listed_at is None or now - self._listed_at >= RELIST_SECONDS:
                listing = await self.kube.get(SCANS_PATH)
                self._listed_at = now
                for item in listing.get("items", []):
                    if isinstance(item, Mapping):
                        self.put(item)
        return self.scans.get(digest)

    def totals(self) -> dict[str, int]:
        counts = dict.fromkeys(vulnerabilities.SEVERITIES, 0)
        for scan in self.scans.values():
            for severity, count in scan.counts.items():
                if severity in counts:
                    counts[severity] += count
        return counts


@dataclasses.dataclass
class ScanArea:
    """The queue, the workers and the index, shared by the gate and the controllers."""

    services: Services[ScanSettings]
    trivy: scanner.Trivy | None
    index: ScanIndex
    queue: asyncio.Queue[tuple[str, str]] = dataclasses.field(
        default_factory=lambda: asyncio.Queue(MAX_QUEUE)
    )
    queued: set[str] = dataclasses.field(default_factory=set)
    # digest -> the reference admission resolved it from, oldest first (bounded).
    admitted: dict[str, str] = dataclasses.field(default_factory=dict)
    workers: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    db_key: tuple[int, str] | None = None
    started: bool = False

    def current_db(self) -> tuple[int, str] | None:
        if self.trivy is None:
            return None
        try:
            metadata = self.trivy.db_metadata()
        except scanner.ScanError:
            return None
        return (int(metadata["Version"]), str(metadata.get("UpdatedAt", "")))

    def enqueue(self, image: str) -> bool:
        """Queue a digest-pinned image for scanning unless a current scan exists; never waits."""
        if self.trivy is None:
            return False
        try:
            reference = references.parse(image)
        except references.InvalidReference:
            return False
        digest = reference.digest
        if digest is None or not digest.startswith("sha256:") or digest in self.queued:
            return False
        self._start()  # reads the DB's metadata first: a current scan is not repeated
        known = self.index.scans.get(digest)
        if known is not None and not known.error and known.db_key() == self.db_key:
            return False
        try:
            self.queue.put_nowait((str(reference), digest))
        except asyncio.QueueFull:
            logger.warning("scan queue full: %s is not queued", image)
            return False
        self.queued.add(digest)
        return True

    def note_admitted(self, image: str, digest: str) -> None:
        """Remember that admission resolved ``digest`` as ``image`` in a judged namespace."""
        self.admitted.pop(digest, None)
        self.admitted[digest] = image
        while len(self.admitted) > MAX_ADMITTED:
            del self.admitted[next(iter(self.admitted))]

    def requeue_known(self, digest: str) -> bool:
        """Queue ``digest`` again (a pod runs it) only when admission resolved it or an
        ImageScan exists for it, under the reference recorded then; False otherwise."""
        image = self.admitted.get(digest) or self.index.images.get(digest)
        return image is not None and self.enqueue(image)

    def _start(self) -> None:
        if self.started or self.trivy is None:
            return
        self.started = True
        self.db_key = self.current_db()
        for number in range(max(1, self.trivy.settings.concurrency)):
            self.workers.append(asyncio.create_task(self._work(), name=f"trivy-{number}"))

    async def stop(self) -> None:
        await tasks.cancel_and_wait(self.workers)
        self.workers.clear()
        self.started = False

    async def _work(self) -> None:
        while True:
            image, digest = await self.queue.get()
            try:
                await self.scan_one(image, digest)
            except Exception:  # a broken scan must not kill the worker; logged, not allowed
                logger.exception("scanning %s failed", image)
            finally:
                self.queued.discard(digest)
                self.queue.task_done()

    async def scan_one(self, image: str, digest: str) -> vulnerabilities.ImageScanStatus:
        assert self.trivy is not None  # noqa: S101  # workers run only with a scanner
        try:
            status = await self.trivy.scan(image)
            self.services.metrics.image_scanned(ok=True)
        except scanner.ScanError as error:
            self.services.metrics.image_scanned(ok=False)
            logger.warning("scan of %s failed: %s", image, error)
            status = vulnerabilities.ImageScanStatus(
                scanned_at=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                error=str(error)[:512],
            )
        await self.store(image, digest, status)
        return status

    async def store(self, image: str, digest: str, status: vulnerabilities.ImageScanStatus) -> None:
        name = vulnerabilities.scan_name(digest)
        body = {
            "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
            "kind": "ImageScan",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "muster"}},
            "spec": {"digest": digest, "image": image[:1024]},
        }
        try:
            await self.services.kube.create(SCANS_PATH, body)
        except kubeapi.ApiError as error:
            if error.status != 409:
                raise
        await self.services.kube.patch(
            f"{SCANS_PATH}/{name}/status",
            {"status": status.model_dump(by_alias=True, mode="json")},
        )
        self.index.scans[digest] = status
        self.index.images[digest] = image
        statechanges.changed()  # the gate reads the scans: no verdict from before is reused
        self.services.metrics.set_image_vulnerabilities(self.index.totals())

    def rescan_if_db_changed(self) -> int:
        """Queue every known digest again when the DB's metadata changed; how many."""
        current = self.current_db()
        if current is None or current == self.db_key:
            return 0
        self.db_key = current
        return sum(
            self.enqueue(self.index.images[digest])
            for digest in list(self.index.scans)
            if self.index.images.get(digest)
        )


def area_for(services: Services[ScanSettings]) -> ScanArea:
    area = services.areas.get(AREA)
    if not isinstance(area, ScanArea):
        settings = services.settings
        cache_dir = settings.trivy_cache_dir
        trivy = None
        if cache_dir is not None:
            trivy = scanner.Trivy(
                scanner.TrivySettings(
                    cache_dir=cache_dir,
                    db_repository=settings.trivy_db_repository,
                    timeout=settings.scan_timeout,
                    concurrency=settings.scan_concurrency,
                ),
                # Muster's own client: trivy reads every registry through it (scan relay).
                services.registries,
            )
        area = services.areas[AREA] = ScanArea(
            services=services, trivy=trivy, index=ScanIndex(services.kube)
        )
    return area


# ---------------------------------------------------------------------------------------------
# The gate


class VulnerabilityGate:
    """ImagePolicy ``vulnerabilities`` rules over the stored scans of each image digest."""

    name = CHECK

    def __init__(self, area: ScanArea, images: imagegate.ImageArea) -> None:
        self.area = area
        self.images = images

    async def judge(self, subject: subjects.Subject, phase: gates.Phase) -> gates.GateResult:
        if phase is not gates.Phase.VALIDATE:
            return gates.GateResult()
        try:
            policies = await self.images.store.snapshot()
        except imagegate.PoliciesUnavailable:
            return gates.GateResult()  # the image gate reports this, fail-closed
        ruled = [policy for policy in policies if policy.vulnerabilities is not None]
        if not ruled:
            return gates.GateResult()
        try:
            labels = await self.images.namespaces.labels(subject.namespace)
        except platformnamespaces.UNREADABLE_ERRORS as error:
            failed = platformnamespaces.unavailable(CHECK, subject.namespace, error)
            return gates.GateResult(findings=(failed,))
        applicable = [policy for policy in ruled if policy.applies_to(labels)]
        checks = []
        for template in subject.templates:
            credentials = imagegate.pull_secret_provider(
                self.area.services.kube, subject.namespace, template.spec
            )
            for use in template.image_uses():
                if not isinstance(use.image, str):
                    continue
                try:
                    reference = references.parse(use.image)
                except references.InvalidReference:
                    continue
                matching = [policy for policy in applicable if policy.covers(reference)]
                if matching:
                    checks.append(self._check(use, reference, matching, credentials))
        found = await asyncio.gather(*checks)
        return gates.GateResult(findings=tuple(f for each in found for f in each))

    async def _check(
        self,
        use: pods.ImageUse,
        reference: references.ImageReference,
        matching: Sequence[imagepolicies.CompiledPolicy],
        credentials: imageverifier.CredentialProvider,
    ) -> list[findings.Finding]:
        digest = reference.digest
        if digest is None:
            try:
                digest = await self.images.verifier.resolve(reference, credentials)
            except registries.RegistryError as error:
                return [
                    findings.Finding(
                        check=CHECK,
                        reason="DigestUnresolved",
                        subject=use.label,
                        message=f"cannot resolve {reference} to look up its scan: {error}",
                        mode=findings.Mode(matching[0].mode),
                    )
                ]
        image = str(reference.with_digest(digest))
        self.area.note_admitted(image, digest)
        try:
            scan = await self.area.index.get(digest)
        except (kubeapi.ApiError, OSError, TimeoutError) as error:
            logger.warning("cannot list ImageScans: %s", error)
            scan = None
        if scan is None or scan.error or scan.db_key() != self.area.db_key:
            self.area.enqueue(image)  # scanned later, never here
        today = datetime.datetime.now(datetime.UTC).date()
        result = []
        for policy in sorted(matching, key=lambda p: p.name):
            if policy.vulnerabilities is None:
                continue
            violation = vulnerabilities.judge(
                policy.vulnerabilities, scan, today=today, policy=policy.name, mode=policy.mode
            )
            if violation is not None:
                result.append(
                    findings.Finding(
                        check=CHECK,
                        reason=violation.reason,
                        subject=use.label,
                        message=f"image {reference}: {violation.message}",
                        mode=findings.Mode.ENFORCE
                        if violation.action == "deny"
                        else findings.Mode.WARN,
                        policy=imagegate.policy_ref(policy.name, policy.denial),
                    )
                )
        return result


def gate_factory(services: Services[ScanSettings]) -> Sequence[gates.Gate]:
    return [VulnerabilityGate(area_for(services), imagegate.area_for(services))]


# ---------------------------------------------------------------------------------------------
# Controllers


def image_ids(pod: Mapping[str, Any]) -> list[str]:
    """Digest-pinned images of a pod: its spec's pinned images and its containers' imageIDs."""
    found: list[str] = []
    spec = pod.get("spec") or {}
    for use in pods.image_uses(spec, pointer="/spec"):
        if isinstance(use.image, str) and "@sha256:" in use.image:
            found.append(use.image)
    status = pod.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for item in status.get(key) or []:
            image_id = item.get("imageID") if isinstance(item, Mapping) else None
            if isinstance(image_id, str) and "@sha256:" in image_id:
                found.append(image_id.split("://", 1)[-1])
    return list(dict.fromkeys(found))


def register_controller(registry: kopf.OperatorRegistry, services: Services[ScanSettings]) -> None:
    import kopf

    from muster.platform import podevents

    area = area_for(services)

    @kopf.on.event(crds.GROUP, crds.VERSION, PLURAL, registry=registry)
    async def index_scan(body: kopf.Body, type: str | None, **_: Any) -> None:
        if type == "DELETED":
            digest = (body.get("spec") or {}).get("digest")
            if isinstance(digest, str):
                area.index.remove(digest)
        else:
            area.index.put(body)
        services.metrics.set_image_vulnerabilities(area.index.totals())

    def queue_pod_images(body: Mapping[str, Any], event_type: str | None) -> None:
        if event_type == "DELETED":
            return
        for image in image_ids(body):
            area.requeue_known(image.rpartition("@")[2])

    if area.trivy is not None:  # a replica that does not scan has nothing to queue
        podevents.listen(registry, "vulnerabilities", queue_pod_images)

    @kopf.on.startup(registry=registry)
    async def watch_db(**_: Any) -> None:
        if area.trivy is not None:
            area.workers.append(asyncio.create_task(_poll_db(area), name="trivy-db-poll"))

    @kopf.on.cleanup(registry=registry)
    async def stop_workers(**_: Any) -> None:
        await area.stop()


async def _poll_db(area: ScanArea) -> None:
    """Every minute: a changed vulnerability DB queues every known digest again."""
    while True:
        await asyncio.sleep(DB_POLL_SECONDS)
        queued = area.rescan_if_db_changed()
        if queued:
            logger.info("vulnerability DB changed: %d images queued for a rescan", queued)
