"""Keeping each running workload's AI-BOM current, in a WorkloadBOM beside it.

Pods in namespaces that opted in (``muster.dev/enforce``) are noted on every pod event; the
workload's BOM is rewritten a moment later by a small pool of background workers. They gather
what the gates established about the pod (image digests and signers from the verification
engine's cached decisions against the ImagePolicies the policy controller compiled, the Models
from the pod's ``muster.dev/models`` annotation, the Datasets from its ``muster.dev/datasets``
annotation and those its Models were trained on with their lineage ancestors, the licence rules
of the ModelPolicies and DatasetPolicies selecting its namespace, the node's GPU stack, the
ImageScans) and write
the CycloneDX 1.6 document of the pod's workload into the namespaced ``WorkloadBOM``
``<kind>-<name>`` in the pod's namespace (``spec.document``), only when its content changed.
``muster bom`` collects these without re-verifying anything.

BOMs are bookkeeping and must never slow admission or the other controllers down, so:

- the pod-event listener (:mod:`muster.platform.podevents`) only notes the pod (no I/O, no
  awaits), and returns at once for namespaces that did not opt in: events of one workload within
  :data:`DEBOUNCE_SECONDS` coalesce into one rewrite, and the pending set is bounded
  (:data:`QUEUE_CAPACITY`; beyond it events are dropped and counted, the next event of the
  workload brings it back);
- the workers use an API client with a connection pool of their own (:data:`BOM_CONNECTIONS`),
  so they never hold the connections admission and the controllers share;
- the workers read the ImagePolicy store as the policy controller keeps it and never list or
  compile policies themselves: a list by a bystander would put a new policy into the store
  before its controller saw it, and the controller would take it as already handled and not
  write its ``Compiled`` status;
- one rewrite is bounded by :data:`WRITE_TIMEOUT_SECONDS`.

A BOM also says what the registry says of a Model or Dataset (revoked, signature verified,
lineage), which changes without any pod event: when a Dataset or Model changes in a way the
BOM shows (:func:`registry_state`), the pods labelled as using Models or Datasets are noted
again, through the same coalescing queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import kopf

import muster
from muster.boms.rules import cyclonedx as boms
from muster.boms.rules import datasets as bomdatasets
from muster.datasets import catalog as datasetcatalog
from muster.datasets.rules import registry as datasetregistry
from muster.images import gate as imagegate
from muster.kernel import crds, references, scopes, selectors
from muster.models import gate as modelgate
from muster.models.rules import registry as modelregistry
from muster.platform import kubeapi, podevents, registries, tasks
from muster.platform import namespaces as platformnamespaces
from muster.platform.services import Services, SharedSettings
from muster.vulnerabilities import gate as vulnerabilities_

__all__ = [
    "BOM_CONNECTIONS",
    "DEBOUNCE_SECONDS",
    "PLURAL",
    "QUEUE_CAPACITY",
    "IncompleteFacts",
    "Keeper",
    "bom_name",
    "bom_path",
    "collect",
    "register_controller",
    "write",
]


class BomSettings(vulnerabilities_.ScanSettings, SharedSettings, Protocol):
    """What the AI-BOM keeper reads (it reads the image and vulnerability areas too)."""

    @property
    def keep_boms(self) -> bool: ...


logger = logging.getLogger("muster.boms")

PLURAL = "workloadboms"
BOM_WORKERS = 2
BOM_CONNECTIONS = 4
DEBOUNCE_SECONDS = 2.0
QUEUE_CAPACITY = 1000
WRITE_TIMEOUT_SECONDS = 30.0
MAX_DATASETS = 256  # Dataset objects read for one pod: used, trained on, lineage ancestors
_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# Decisions that say the registry could not be read, not what the image is.
_UNREAD_REASONS = frozenset({"ImageNotResolved", "SignatureLookupFailed"})


def bom_name(kind: str, name: str) -> str:
    """``<kind>-<name>``, shortened with a hash when too long for an object name."""
    base = re.sub(r"[^a-z0-9.-]", "-", f"{kind.lower()}-{name}".lower())
    if len(base) <= 253:
        return base
    return f"{base[:236]}-{hashlib.sha256(base.encode()).hexdigest()[:16]}"


class IncompleteFacts(Exception):
    """A fact could not be read (registry, API): the stored BOM is kept, not made poorer."""


async def _image_facts(
    services: Services[BomSettings], kube: kubeapi.KubeApi, pod: Mapping[str, Any], image: str
) -> boms.ImageFacts:
    metadata = pod.get("metadata") or {}
    namespace = str(metadata.get("namespace", ""))
    try:
        reference = references.parse(image)
    except references.InvalidReference:
        return boms.ImageFacts(image=image, digest=None)
    area = imagegate.area_for(services)
    credentials = imagegate.pull_secret_provider(kube, namespace, pod.get("spec") or {})
    digest = reference.digest
    signers: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    try:
        labels = await _namespace_labels(services, kube, namespace)
        # The policies as the ImagePolicy controller compiled them; never a list of our own.
        matching = [
            policy
            for policy in list(area.store.policies.values())
            if policy.applies_to(labels) and policy.covers(reference)
        ]
        if matching:
            # The engine's decision cache answers for what admission verified moments ago;
            # images no policy covers are recorded as written, without any registry traffic.
            result = await area.verifier.verify(reference, matching, credentials)
            digest = result.digest or digest
            unread = [d for _, d in result.decisions if d.reason in _UNREAD_REASONS]
            if unread:
                raise IncompleteFacts(f"image {image}: {unread[0].message}")
            passed = [(p, d) for p, d in result.decisions if d.passed]
            signers = tuple(sorted({s for _, d in passed for s in d.signers}))
            policies = tuple(sorted(p.name for p, _ in passed))
    except (registries.RegistryError, kubeapi.ApiError) as error:
        raise IncompleteFacts(f"image {image}: {error}") from None
    scan = None
    if digest is not None:
        try:
            scan = await vulnerabilities_.area_for(services).index.get(digest)
        except (kubeapi.ApiError, OSError, TimeoutError):
            scan = None
    return boms.ImageFacts(
        image=image, digest=digest, signers=signers, policies=policies, scan=scan
    )


async def _namespace_labels(
    services: Services[BomSettings], kube: kubeapi.KubeApi, namespace: str
) -> Mapping[str, str]:
    """From the process's one namespace index; a miss is read through our own client."""
    return await platformnamespaces.index_for(services).labels(namespace, via=kube)


async def _datasets(kube: kubeapi.KubeApi, names: list[str]) -> dict[str, Mapping[str, Any] | None]:
    """The Dataset objects ``names`` and their lineage ancestors, by name (None: not found);
    a name no object can have (a Model's free-text dataset) is not looked up."""
    found: dict[str, Mapping[str, Any] | None] = {}
    pending = collections.deque(dict.fromkeys(names))
    while pending and len(found) < MAX_DATASETS:
        name = pending.popleft()
        if name in found or not _OBJECT_NAME.match(name):
            continue
        try:
            dataset: Mapping[str, Any] | None = await kube.get(
                f"{datasetcatalog.DATASETS_PATH}/{name}"
            )
        except kubeapi.ApiError as error:
            if error.status != 404:  # 404: no such Dataset (or no Dataset CRD)
                raise IncompleteFacts(f"Dataset {name}: {error}") from None
            dataset = None
        found[name] = dataset
        pending.extend(bomdatasets.parents_of(dataset))
    return found


async def _policies(kube: kubeapi.KubeApi, path: str) -> list[Mapping[str, Any]]:
    try:
        listed = await kube.get(path)
    except kubeapi.ApiError as error:
        if error.status == 404:  # no CRD: no policy
            return []
        raise IncompleteFacts(f"{path}: {error}") from None
    return [item for item in listed.get("items") or () if isinstance(item, Mapping)]


async def _licence_rules(
    services: Services[BomSettings], kube: kubeapi.KubeApi, namespace: str
) -> boms.LicenceRules:
    """The licence rules of the ModelPolicies and DatasetPolicies selecting ``namespace``,
    listed through the keeper's own client and parsed here (never put into the gates' stores)."""
    labels = await _namespace_labels(services, kube, namespace)
    models, datasets = await asyncio.gather(
        _policies(kube, modelgate.POLICIES_PATH), _policies(kube, datasetcatalog.POLICIES_PATH)
    )
    found: dict[str, list[tuple[str, Any]]] = {"models": [], "datasets": []}
    unreadable: dict[str, list[str]] = {"models": [], "datasets": []}
    for kind, items, parse in (
        ("models", models, modelregistry.ModelPolicySpec.model_validate),
        ("datasets", datasets, datasetregistry.DatasetPolicySpec.model_validate),
    ):
        for item in items:
            name = str((item.get("metadata") or {}).get("name", ""))
            try:
                spec = parse(item.get("spec") or {})
            except ValueError:  # pydantic's ValidationError included
                unreadable[kind].append(name)
                continue
            if selectors.matches(spec.namespace_selector, labels):
                found[kind].append((name, spec.licenses))
    return boms.LicenceRules(
        datasets=tuple(sorted(found["datasets"], key=lambda pair: pair[0])),
        models=tuple(sorted(found["models"], key=lambda pair: pair[0])),
        unreadable_datasets=tuple(sorted(unreadable["datasets"])),
        unreadable_models=tuple(sorted(unreadable["models"])),
    )


async def collect(
    services: Services[BomSettings], pod: Mapping[str, Any], kube: kubeapi.KubeApi | None = None
) -> boms.PodFacts:
    kube = kube or services.kube
    metadata = pod.get("metadata") or {}
    images = [await _image_facts(services, kube, pod, image) for image in boms.images_of(pod)]
    models: list[tuple[str, Mapping[str, Any] | None]] = []
    annotations = metadata.get("annotations") or {}
    for name, _digest in modelregistry.decode_models_annotation(
        annotations.get(modelregistry.MODELS_ANNOTATION)
    ):
        try:
            model: Mapping[str, Any] | None = await kube.get(
                f"/apis/{crds.GROUP}/{crds.VERSION}/models/{name}"
            )
        except kubeapi.ApiError:
            model = None
        models.append((name, model))
    used = tuple(
        name
        for name, _digest in datasetregistry.decode_datasets_annotation(
            annotations.get(datasetregistry.DATASETS_ANNOTATION)
        )
    )
    trained_on = [
        str(entry.get("name"))
        for _, model in models
        for entry in ((model or {}).get("spec") or {}).get("datasets") or ()
        if isinstance(entry, Mapping)
    ]
    datasets = boms.DatasetFacts(
        objects=await _datasets(kube, [*used, *trained_on]) if used or trained_on else {},
        used=used,
    )
    licences = boms.LicenceRules()
    if models or used:
        licences = await _licence_rules(services, kube, str(metadata.get("namespace", "")))
    node = None
    node_name = (pod.get("spec") or {}).get("nodeName")
    if isinstance(node_name, str) and node_name:
        try:
            node = await kube.get(f"/api/v1/nodes/{node_name}")
        except kubeapi.ApiError:
            node = None
    return boms.PodFacts(
        pod=pod, images=images, models=models, node=node, datasets=datasets, licences=licences
    )


def bom_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/{crds.GROUP}/{crds.VERSION}/namespaces/{namespace}/{PLURAL}"
    return path if name is None else f"{path}/{name}"


async def write(
    services: Services[BomSettings], pod: Mapping[str, Any], kube: kubeapi.KubeApi | None = None
) -> str | None:
    """Write the pod's workload BOM if its content changed; the WorkloadBOM's name, else None."""
    kube = kube or services.kube
    facts = await collect(services, pod, kube)
    parts = boms.pod_components(facts)
    content = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    namespace, kind, name = boms.workload_key(pod)
    object_name = bom_name(kind, name)
    try:
        existing = await kube.get(bom_path(namespace, object_name))
    except kubeapi.ApiError as error:
        if error.status != 404:
            raise
        existing = None
    if existing is not None and (existing.get("spec") or {}).get("contentSha256") == content:
        return None
    document = boms.document(
        f"{namespace}/{kind}/{name}",
        [parts],
        timestamp=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        version=muster.__version__,
        serial=uuid.uuid5(uuid.NAMESPACE_URL, f"muster-bom:{namespace}/{kind}/{name}:{content}"),
    )
    text = json.dumps(document, separators=(",", ":"), sort_keys=True)
    if len(text) > boms.MAX_DOCUMENT_CHARS:
        logger.warning("BOM of %s/%s/%s is too large to store", namespace, kind, name)
        return None
    spec = boms.WorkloadBOMSpec(kind=kind, name=name, content_sha256=content, document=text)
    body = {
        "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
        "kind": "WorkloadBOM",
        "metadata": {
            "name": object_name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "muster"},
        },
        "spec": spec.model_dump(by_alias=True),
    }
    if existing is None:
        try:
            await kube.create(bom_path(namespace), body)
            return object_name
        except kubeapi.ApiError as error:
            if error.status != 409:
                raise
    await kube.patch(bom_path(namespace, object_name), {"spec": body["spec"]})
    return object_name


Key = tuple[str, str, str]


@dataclasses.dataclass
class KeeperStats:
    noted: int = 0  # pod events that asked for a rewrite
    coalesced: int = 0  # of those, folded into a rewrite already pending
    dropped: int = 0  # the pending set was full
    out_of_scope: int = 0  # namespaces that did not opt in
    written: int = 0
    unchanged: int = 0
    failed: int = 0


# The pods whose BOMs may name an object of each kind (a Dataset also through a Model).
_REFRESHED_BY = {
    "datasets": (datasetregistry.USES_DATASETS_LABEL, modelregistry.USES_MODELS_LABEL),
    "models": (modelregistry.USES_MODELS_LABEL,),
}


def registry_state(body: Mapping[str, Any]) -> str:
    """What a BOM can show of a Model or Dataset: its generation (the spec), its conditions
    (without their times) and the rest of its status but the pod count, which changes with
    every pod and never shows in a BOM."""
    status = dict(body.get("status") or {})
    conditions = [
        [c.get(k) for k in ("type", "status", "reason", "observedGeneration")]
        for c in status.pop("conditions", None) or ()
        if isinstance(c, Mapping)
    ]
    status.pop("pods", None)
    generation = (body.get("metadata") or {}).get("generation")
    return json.dumps([generation, sorted(conditions, key=str), status], sort_keys=True)


class Keeper:
    """Pending workloads and the workers that rewrite their BOMs, off the event path.

    :meth:`note` is what the kopf handler calls: synchronous, no I/O. A workload is rewritten
    ``debounce`` seconds after the first event since its last rewrite, from its latest pod.
    """

    def __init__(
        self,
        services: Services[BomSettings],
        kube: kubeapi.KubeApi,
        *,
        workers: int = BOM_WORKERS,
        debounce: float = DEBOUNCE_SECONDS,
        capacity: int = QUEUE_CAPACITY,
        timeout: float = WRITE_TIMEOUT_SECONDS,
    ) -> None:
        self.services = services
        self.kube = kube
        self.debounce = debounce
        self.timeout = timeout
        self.stats = KeeperStats()
        self._workers = workers
        self._pending: dict[Key, Mapping[str, Any]] = {}
        self._busy: set[Key] = set()
        self._queue: asyncio.Queue[tuple[float, Key]] = asyncio.Queue(maxsize=capacity)
        self._tasks: list[asyncio.Task[None]] = []
        self._states: dict[tuple[str, str], str] = {}  # (plural, name) -> registry_state

    def note(self, pod: Mapping[str, Any]) -> bool:
        """Remember ``pod`` for its workload's next rewrite; False when it is not kept."""
        metadata = pod.get("metadata") or {}
        namespace = metadata.get("namespace")
        if not isinstance(namespace, str) or metadata.get("deletionTimestamp"):
            return False
        labels = platformnamespaces.index_for(self.services).last_known(namespace)
        if labels is None:
            # Not seen by the namespace index yet: the worker reads the labels and decides.
            labels = {scopes.ENFORCE_LABEL: "true"}
        if not self._in_scope(namespace, labels):
            self.stats.out_of_scope += 1
            return False
        key = boms.workload_key(pod)
        self.stats.noted += 1
        if key in self._pending:
            self._pending[key] = dict(pod)  # kopf's body is a view: keep a copy
            self.stats.coalesced += 1
            return True
        try:
            self._queue.put_nowait((time.monotonic() + self.debounce, key))
        except asyncio.QueueFull:
            self.stats.dropped += 1
            return False
        self._pending[key] = dict(pod)
        return True

    async def registry_changed(
        self, plural: str, event_type: str | None, body: Mapping[str, Any]
    ) -> int:
        """Note again the pods whose BOMs may show the Dataset or Model ``body`` (``plural``
        ``datasets`` or ``models``) when what a BOM shows of it changed; how many were noted.

        The first sight of an object (the watch's initial listing) notes nothing: at start-up
        the pods' own events bring every BOM up to date.
        """
        key = (plural, str((body.get("metadata") or {}).get("name", "")))
        previous = self._states.pop(key, None)
        if event_type != "DELETED":
            self._states[key] = registry_state(body)
        if previous is None or previous == self._states.get(key):
            return 0
        noted = 0
        for label in _REFRESHED_BY[plural]:
            listed = await self.kube.get("/api/v1/pods", params={"labelSelector": f"{label}=true"})
            for pod in listed.get("items") or ():
                if isinstance(pod, Mapping) and self.note(pod):
                    noted += 1
        return noted

    def _in_scope(self, namespace: str, labels: Mapping[str, str] | None) -> bool:
        """Whether this operator's settings keep BOMs in ``namespace``."""
        settings = self.services.settings
        return boms.in_scope(
            namespace,
            labels,
            own_namespace=settings.own_namespace,
            enforcement=settings.enforcement,
        )

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def drained(self) -> None:
        """Until every workload noted so far has been rewritten (or given up on)."""
        await self._queue.join()

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]

    async def stop(self) -> None:
        await tasks.cancel_and_wait(self._tasks)
        self._tasks = []

    async def _work(self) -> None:
        while True:
            due, key = await self._queue.get()
            try:
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if key in self._busy:
                    # Being written by another worker: once more, after that write.
                    with contextlib.suppress(asyncio.QueueFull):
                        self._queue.put_nowait((time.monotonic() + self.debounce, key))
                        continue
                    self._pending.pop(key, None)
                    self.stats.dropped += 1
                    continue
                pod = self._pending.pop(key, None)
                if pod is None:
                    continue
                self._busy.add(key)
                try:
                    await self._write(key, pod)
                finally:
                    self._busy.discard(key)
            finally:
                self._queue.task_done()

    async def _write(self, key: Key, pod: Mapping[str, Any]) -> None:
        namespace, kind, name = key
        started = time.monotonic()
        try:
            labels = await _namespace_labels(self.services, self.kube, namespace)
            if not self._in_scope(namespace, labels):
                self.stats.out_of_scope += 1
                return
            async with asyncio.timeout(self.timeout):
                written = await write(self.services, pod, self.kube)
        except IncompleteFacts as error:
            self.stats.failed += 1
            logger.info("BOM of %s/%s/%s kept as it was: %s", namespace, kind, name, error)
            return
        except (kubeapi.ApiError, OSError, TimeoutError) as error:
            self.stats.failed += 1
            logger.warning("cannot write the BOM of %s/%s/%s: %s", namespace, kind, name, error)
            return
        except Exception:  # a bug in one BOM must not stop the workers
            self.stats.failed += 1
            logger.exception("cannot write the BOM of %s/%s/%s", namespace, kind, name)
            return
        if written:
            self.stats.written += 1
            logger.info(
                "BOM %s/%s written in %.2fs", namespace, written, time.monotonic() - started
            )
        else:
            self.stats.unchanged += 1


KEEPER_AREA = "boms"


def register_controller(registry: kopf.OperatorRegistry, services: Services[BomSettings]) -> None:
    if not services.settings.keep_boms:
        return
    # A client of its own: BOM writes never queue for the connections admission uses.
    kube = kubeapi.KubeApi(services.kube.credentials, connection_limit=BOM_CONNECTIONS)
    keeper = services.areas[KEEPER_AREA] = Keeper(services, kube)
    platformnamespaces.watch(registry, services)  # which namespaces opted in

    @kopf.on.startup(registry=registry)
    async def start_bom_workers(**_: Any) -> None:
        keeper.start()

    def keep_bom(body: Mapping[str, Any], event_type: str | None) -> None:
        # No I/O and no awaits here: note the pod, a worker writes the BOM later.
        if event_type != "DELETED":
            keeper.note(body)

    podevents.listen(registry, "boms", keep_bom)

    for plural in _REFRESHED_BY:

        @kopf.on.event(crds.GROUP, crds.VERSION, plural, id=f"bom-{plural}", registry=registry)
        async def registry_event(
            body: kopf.Body, type: str | None, resource: kopf.Resource, **_: Any
        ) -> None:
            try:
                await keeper.registry_changed(resource.plural, type, body)
            except (kubeapi.ApiError, OSError, TimeoutError) as error:
                name = (body.get("metadata") or {}).get("name")
                logger.warning(
                    "cannot find the pods whose BOMs name %s %s: %s", resource.plural, name, error
                )

    @kopf.on.cleanup(registry=registry)
    async def stop_bom_workers(**_: Any) -> None:
        await keeper.stop()
        await kube.close()
