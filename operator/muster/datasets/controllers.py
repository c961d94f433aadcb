"""The dataset area's operator side: the Dataset index, Dataset status, and revocation.

* Datasets and DatasetPolicies are watched into the process's one
  :class:`~muster.datasets.catalog.DatasetCatalog` that the dataset and model gates read.
* A Dataset's status says whether its spec compiled (condition ``Compiled``: a malformed spec or
  SPDX expression, a lineage cycle or a Dataset naming itself as parent is ``False``), whether
  its OMS signature verified (``SignatureVerified``, checked once per generation, as for Models),
  whether its lineage resolved (``LineageResolved``: ``False`` naming a missing or invalid parent
  or the revoked ancestor), how many running pods use it (``pods``), whether it is revoked
  itself or through its lineage (``revoked``) and, when through its lineage, its nearest revoked
  ancestor (``revokedThrough``). Lineage makes a
  Dataset's status depend on others: a change to one Dataset re-evaluates it and every Dataset
  derived from it.
* A DatasetPolicy's status has one condition, ``Compiled``; an invalid new version is reported
  there while its last good version stays in force.
* When a Dataset becomes revoked, directly or through its lineage, it and every descendant get a
  Warning Event ``DatasetRevoked``, and so does each running pod that uses one of them (label
  ``muster.dev/uses-datasets=true``, annotation ``muster.dev/datasets``, written by the mutating
  gate) in a namespace this installation judges (``muster.kernel.scopes.in_reach``). The gauge
  ``muster_pods_using_revoked_datasets`` counts those pods. The transition is read from the
  Dataset's own status (``revoked`` was not true), so a restart or a second replica does not
  repeat the Events.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from muster.datasets import catalog as datasetcatalog
from muster.datasets.rules import lineage
from muster.datasets.rules import registry as datasetregistry
from muster.kernel import approved, crds, observations, scopes, selectors
from muster.platform import events, kubeapi, metrics
from muster.platform import namespaces as platformnamespaces
from muster.platform.services import Services, SharedSettings
from muster.signatures import omschecks

if TYPE_CHECKING:
    import kopf  # imported where controllers register: ``muster check`` runs none

__all__ = ["DatasetController", "DatasetSettings", "controller_for", "controllers"]

# The dataset area reads only the settings every area shares.
DatasetSettings = SharedSettings

logger = logging.getLogger("muster.datasets")

KEY = "datasets.controller"
API_VERSION = f"{crds.GROUP}/{crds.VERSION}"
TERMINATED = approved.TERMINATED
REVOKED = "DatasetRevoked"
# The Compiled reasons of a lineage that cannot hold whatever else is registered.
_STRUCTURAL = {"self-reference": "SelfReference", "cycle": "LineageCycle"}


@dataclasses.dataclass
class DatasetController:
    """State shared by the dataset controllers of one process."""

    kube: kubeapi.KubeApi
    catalog: datasetcatalog.DatasetCatalog
    # The process's one namespace index, shared with the gates.
    namespaces: platformnamespaces.NamespaceIndex
    recorder: events.EventRecorder
    metrics: metrics.Metrics
    # Whose pods this operator reports on: the namespaces admission judges.
    own_namespace: str | None = None
    namespace_selector: selectors.LabelSelector | None = None
    enforcement: scopes.Enforcement = scopes.NAMESPACED
    # pod "namespace/name" -> ((dataset name, digest), ...) for pods not terminated
    usage: dict[str, tuple[tuple[str, str], ...]] = dataclasses.field(default_factory=dict)
    # What this controller last saw (or wrote) of each Dataset: metadata and status.
    _seen: dict[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    _status: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    _counts: dict[str, int] = dataclasses.field(default_factory=dict)

    # -- Datasets -------------------------------------------------------------------------

    async def dataset_event(self, event_type: str, body: Mapping[str, Any]) -> None:
        metadata = _mapping(body.get("metadata"))
        name = str(metadata.get("name", ""))
        if not name:
            return
        await self._ensure_loaded()
        index = self.catalog.index
        affected = {name} | lineage.descendants(name, index)
        if event_type == "DELETED":
            self.catalog.dataset_deleted(name)
            self._seen.pop(name, None)
            self._status.pop(name, None)
            self._counts.pop(name, None)
            affected.discard(name)
        else:
            self._seen[name] = metadata
            self._status[name] = dict(_mapping(body.get("status")))
            invalid = self.catalog.dataset_changed(
                name,
                _mapping(body.get("spec")),
                self._status[name],
                metadata.get("generation"),
            )
            if invalid is not None:
                logger.warning("Dataset %s is invalid and not approved: %s", name, invalid)
            affected |= lineage.descendants(name, self.catalog.index)
        newly_revoked: list[tuple[str, tuple[str, str]]] = []
        for each in sorted(affected):
            turned = await self._reconcile(each)
            if turned is not None:
                newly_revoked.append((each, turned))
        if newly_revoked:
            await self._announce(newly_revoked)
        self.refresh_gauge()

    async def _ensure_loaded(self) -> None:
        # Lineage needs every Dataset, not only those whose watch events arrived so far: list
        # them once, so that a child seen before its parent is not reported unresolved.
        if self.catalog.loaded:
            return
        try:
            await self.catalog.reload()
        except (kubeapi.ApiError, OSError, TimeoutError) as error:
            logger.warning("cannot list Datasets, judging lineage on what was watched: %s", error)

    async def _reconcile(self, name: str) -> tuple[str, str] | None:
        """Write ``name``'s status when it changed; returns (revoked Dataset, reason) when the
        Dataset has just become revoked (directly or through its lineage)."""
        metadata = self._seen.get(name)
        if metadata is None:
            return None  # not watched yet: its own event will reconcile it
        generation = metadata.get("generation")
        status = self._status.get(name, {})
        entry = self.catalog.index.by_name(name)
        if entry is None:
            why = self.catalog.index.invalid.get(f"Dataset/{name}")
            if why is None:
                return None
            reason = self.catalog.invalid_reasons.get(name, "InvalidSpec")
            desired: dict[str, Any] = {
                "observedGeneration": generation,
                "conditions": [
                    _condition(datasetregistry.COMPILED, "False", reason, why, generation)
                ],
                "revoked": False,
                "revokedThrough": None,
            }
            tainted = None
        else:
            tainted = lineage.revoked_through(name, self.catalog.index)
            desired = {
                "observedGeneration": generation,
                "conditions": [
                    *self._lineage_conditions(name, tainted, generation),
                    await self._signature(entry, status, generation),
                ],
                "revoked": tainted is not None,
                # Only through lineage: a Dataset revoked itself says so in spec.revoked.
                "revokedThrough": tainted[0] if tainted and tainted[0] != name else None,
            }
        if "pods" not in status:
            desired["pods"] = self.counts().get(name, 0)
        desired["conditions"] = _keep_transition_times(desired["conditions"], status)
        if _same(desired, status):
            return None
        if not await self._patch_status(name, desired):
            return None
        turned_on = tainted is not None and status.get("revoked") is not True
        self._status[name] = {**status, **desired}
        if entry is not None:
            verified = _condition_of(desired, datasetregistry.SIGNATURE_VERIFIED)
            self.catalog.index.put_dataset(
                dataclasses.replace(
                    entry, signature_verified=bool(verified and verified["status"] == "True")
                )
            )
        return tainted if turned_on else None

    def _lineage_conditions(
        self, name: str, tainted: tuple[str, str] | None, generation: object
    ) -> list[dict[str, Any]]:
        found = lineage.diagnose(name, self.catalog.index)
        structural = [p for p in found if p.kind in _STRUCTURAL]
        if structural:
            compiled = _condition(
                datasetregistry.COMPILED,
                "False",
                _STRUCTURAL[structural[0].kind],
                "; ".join(p.text for p in structural),
                generation,
            )
        else:
            compiled = _condition(
                datasetregistry.COMPILED, "True", "Compiled", "the spec is valid", generation
            )
        if found:
            kinds = {p.kind for p in found}
            reason = (
                "LineageInvalid"
                if structural
                else "ParentInvalid"
                if kinds == {"invalid"}
                else "ParentMissing"
            )
            resolved = _condition(
                datasetregistry.LINEAGE_RESOLVED,
                "False",
                reason,
                "; ".join(p.text for p in found),
                generation,
            )
        elif tainted is not None and tainted[0] != name:
            resolved = _condition(
                datasetregistry.LINEAGE_RESOLVED,
                "False",
                "AncestorRevoked",
                f"through lineage: {tainted[0]} revoked: {tainted[1]}",
                generation,
            )
        else:
            ancestors = lineage.ancestors(name, self.catalog.index)
            resolved = _condition(
                datasetregistry.LINEAGE_RESOLVED,
                "True",
                "Resolved",
                f"{len(ancestors)} ancestor(s), all registered, none revoked"
                if ancestors
                else "no parents",
                generation,
            )
        return [compiled, resolved]

    async def _signature(
        self, entry: datasetregistry.DatasetEntry, status: Mapping[str, Any], generation: object
    ) -> dict[str, Any]:
        # Once per generation: the signature of a spec does not change while the spec doesn't.
        known = _condition_of(status, datasetregistry.SIGNATURE_VERIFIED)
        if known is not None and known.get("observedGeneration") == generation:
            return dict(known)
        verified, reason, message = await omschecks.check(
            self.kube, entry.spec.signature, entry.spec.digest, kind="Dataset"
        )
        return _condition(datasetregistry.SIGNATURE_VERIFIED, verified, reason, message, generation)

    async def _patch_status(self, name: str, status: Mapping[str, Any]) -> bool:
        try:
            await self.kube.patch(
                f"{datasetcatalog.DATASETS_PATH}/{name}/status", {"status": status}
            )
        except kubeapi.ApiError as error:
            logger.warning("cannot write the status of Dataset %s: %s", name, error)
            return False
        return True

    # -- revocation -------------------------------------------------------------------------

    async def _announce(self, revoked: list[tuple[str, tuple[str, str]]]) -> None:
        """Events on each newly revoked Dataset and on the running pods that use it."""
        try:
            pods = await self.kube.get(
                "/api/v1/pods",
                params={"labelSelector": f"{datasetregistry.USES_DATASETS_LABEL}=true"},
            )
        except kubeapi.ApiError as error:
            logger.warning("cannot list the pods that use Datasets: %s", error)
            pods = {}
        users: dict[str, list[str]] = {name: [] for name, _ in revoked}
        for pod in pods.get("items") or ():
            pod_meta = _mapping(pod.get("metadata"))
            if _mapping(pod.get("status")).get("phase") in TERMINATED:
                continue
            used = {
                name
                for name, _ in datasetregistry.decode_datasets_annotation(
                    _mapping(pod_meta.get("annotations")).get(datasetregistry.DATASETS_ANNOTATION)
                )
            }
            hits = [(name, why) for name, why in revoked if name in used]
            if not hits:
                continue
            namespace, pod_name = str(pod_meta.get("namespace")), str(pod_meta.get("name"))
            if not await self._in_scope(namespace):
                continue  # another installation judges that namespace and reports on it
            for name, why in hits:
                users[name].append(f"{namespace}/{pod_name}")
                self.recorder.submit(
                    observations.revocation_notice(
                        observations.ObjectRef(
                            "v1", "Pod", pod_name, namespace, str(pod_meta.get("uid", ""))
                        ),
                        REVOKED,
                        f"Dataset {name!r} used by this pod is {_revocation(name, why)}",
                    )
                )
        for name, why in revoked:
            note = f"Dataset {name!r} is {_revocation(name, why)}"
            if users[name]:
                listed = observations.some_of(users[name])
                note += f"; {len(users[name])} running pod(s) use it: {listed}"
            self.recorder.submit(
                observations.revocation_notice(
                    observations.ObjectRef(
                        API_VERSION,
                        "Dataset",
                        name,
                        "",
                        str(self._seen.get(name, {}).get("uid", "")),
                    ),
                    REVOKED,
                    note,
                )
            )

    async def _in_scope(self, namespace: str) -> bool:
        try:
            labels = await self.namespaces.labels(namespace)
        except (kubeapi.ApiError, OSError, TimeoutError) as error:
            logger.warning("cannot read namespace %s, reporting on its pods: %s", namespace, error)
            return True
        return scopes.in_reach(
            namespace,
            labels,
            own_namespace=self.own_namespace,
            selector=self.namespace_selector,
            enforcement=self.enforcement,
        )

    # -- DatasetPolicies --------------------------------------------------------------------

    async def policy_event(self, event_type: str, body: Mapping[str, Any]) -> None:
        metadata = _mapping(body.get("metadata"))
        name = str(metadata.get("name", ""))
        if not name:
            return
        if event_type == "DELETED":
            self.catalog.policy_deleted(name)
            return
        invalid = self.catalog.policy_changed(name, _mapping(body.get("spec")))
        status = _mapping(body.get("status"))
        generation = metadata.get("generation")
        if invalid is None:
            condition = _condition(
                datasetregistry.COMPILED, "True", "Compiled", "the spec is valid", generation
            )
        else:
            kept = name in self.catalog.index.policies
            logger.warning("DatasetPolicy %s is invalid: %s", name, invalid)
            condition = _condition(
                datasetregistry.COMPILED,
                "False",
                "InvalidSpec",
                invalid + ("; its last valid version stays in force" if kept else ""),
                generation,
            )
        desired = {
            "observedGeneration": generation,
            "conditions": _keep_transition_times([condition], status),
        }
        if _same(desired, status):
            return
        try:
            await self.kube.patch(
                f"{datasetcatalog.POLICIES_PATH}/{name}/status", {"status": desired}
            )
        except kubeapi.ApiError as error:
            logger.warning("cannot write the status of DatasetPolicy %s: %s", name, error)

    # -- pods -------------------------------------------------------------------------------

    async def pod_event(self, event_type: str, body: Mapping[str, Any]) -> None:
        changed = approved.track_pod(
            self.usage, event_type, body, datasetregistry.DATASETS_ANNOTATION
        )
        self.refresh_gauge()
        await self._write_counts(changed)

    def counts(self) -> dict[str, int]:
        return approved.pod_counts(self.usage)

    async def _write_counts(self, names: Iterable[str]) -> None:
        counts = self.counts()
        for name in sorted(names):
            count = counts.get(name, 0)
            if self._counts.get(name) == count or name not in self._seen:
                continue
            try:
                await self.kube.patch(
                    f"{datasetcatalog.DATASETS_PATH}/{name}/status", {"status": {"pods": count}}
                )
            except kubeapi.ApiError as error:
                logger.warning("cannot write the pod count of Dataset %s: %s", name, error)
                continue
            self._counts[name] = count
            self._status.setdefault(name, {})["pods"] = count

    def revoked_pods(self) -> int:
        """Running pods that use a Dataset revoked directly or through its lineage."""
        index = self.catalog.index
        tainted: dict[str, bool] = {}
        total = 0
        for pairs in self.usage.values():
            for name, _ in pairs:
                if name not in tainted:
                    tainted[name] = lineage.revoked_through(name, index) is not None
                if tainted[name]:
                    total += 1
                    break
        return total

    def refresh_gauge(self) -> None:
        self.metrics.set_pods_using_revoked_datasets(self.revoked_pods())


def _mapping(value: object) -> Mapping[str, Any]:
    # Bad input never crashes a handler: what is not an object reads as an empty one.
    return value if isinstance(value, Mapping) else {}


def _revocation(name: str, why: tuple[str, str]) -> str:
    revoked, reason = why
    if revoked == name:
        return f"revoked: {reason}"
    return f"revoked through lineage: {revoked} revoked: {reason}"


def _condition(
    kind: str, status: str, reason: str, message: str, generation: object
) -> dict[str, Any]:
    # observedGeneration: each condition vouches for the spec it was written for only.
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:900],
        "observedGeneration": generation,
        "lastTransitionTime": _now(),
    }


def _condition_of(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in status.get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == kind:
            return condition
    return None


def _keep_transition_times(
    conditions: list[dict[str, Any]], status: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """A condition whose status did not change keeps its lastTransitionTime."""
    kept = []
    for condition in conditions:
        before = _condition_of(status, condition["type"])
        if before is not None and before.get("status") == condition["status"]:
            condition = {**condition, "lastTransitionTime": before.get("lastTransitionTime")}
        kept.append(condition)
    return kept


def _same(desired: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether writing ``desired`` would change nothing the status says."""
    for key, value in desired.items():
        if key == "conditions":
            if len(value) != len(status.get("conditions") or ()):
                return False
            for condition in value:
                before = _condition_of(status, condition["type"])
                fields = ("status", "reason", "message", "observedGeneration")
                if before is None or any(before.get(f) != condition[f] for f in fields):
                    return False
        elif status.get(key) != value:
            return False
    return True


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def controller_for(services: Services[DatasetSettings]) -> DatasetController:
    """The one DatasetController of this process."""

    def create() -> DatasetController:
        if services.events is None:
            services.events = events.EventRecorder(services.kube)
        settings = services.settings
        return DatasetController(
            kube=services.kube,
            catalog=datasetcatalog.catalog_for(services),
            namespaces=platformnamespaces.index_for(services),
            recorder=services.events,
            metrics=services.metrics,
            own_namespace=settings.own_namespace,
            namespace_selector=settings.namespace_selector,
            enforcement=settings.enforcement,
        )

    return services.state(KEY, DatasetController, create)


def controllers(registry: kopf.OperatorRegistry, services: Services[DatasetSettings]) -> None:
    import kopf

    from muster.platform import podevents

    controller = controller_for(services)

    @kopf.on.startup(registry=registry)
    async def start_dataset_events(**_: object) -> None:
        controller.recorder.start()  # idempotent: the recorder is shared by every area
        controller.refresh_gauge()

    @kopf.on.event(crds.GROUP, crds.VERSION, "datasets", registry=registry)
    async def dataset_event(event: Mapping[str, Any], body: kopf.Body, **_: object) -> None:
        await controller.dataset_event(str(event.get("type")), body)

    @kopf.on.event(crds.GROUP, crds.VERSION, "datasetpolicies", registry=registry)
    async def dataset_policy_event(event: Mapping[str, Any], body: kopf.Body, **_: object) -> None:
        await controller.policy_event(str(event.get("type")), body)

    # DatasetPolicies select namespaces by label: the process's one namespace watch feeds them.
    platformnamespaces.watch(registry, services)

    # Pods labelled as using datasets, from the process's one pod watch.
    async def dataset_pod_event(body: Mapping[str, Any], event_type: str | None) -> None:
        await controller.pod_event(str(event_type), body)

    podevents.handle(
        registry,
        "datasets",
        dataset_pod_event,
        labels={datasetregistry.USES_DATASETS_LABEL: "true"},
    )
