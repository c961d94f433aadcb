"""The model gate's operator side: the Model index, Model status, and revocation.

* Models and ModelPolicies are watched into the in-memory
  :class:`~muster.models.gate.ModelCatalog` the admission gate reads; namespace labels into the
  process's one :class:`~muster.platform.namespaces.NamespaceIndex`.
* A Model's status says whether its OMS signature verified (condition ``SignatureVerified``,
  checked once per generation), whether its provenance verified (condition
  ``ProvenanceVerified`` and ``status.provenance``: the verified builder, source and materials)
  and how many running pods use it.
* Pods admitted with models carry the label ``muster.dev/uses-models=true`` and the annotation
  ``muster.dev/models`` (written by the mutating gate). When a Model is revoked, or its digest
  changes under running pods, those pods are found by label, get a Warning Event each, the Model
  gets one Event naming them, the gauge ``muster_pods_using_revoked_models`` counts them, and with
  ``--evict-revoked-model-pods`` they are evicted. The sweep runs from the Model watch, so only
  on the active kopf peer, and reports only on pods in namespaces this installation judges
  (``muster.kernel.scopes.in_reach``): each pod and the Model get one Event series, however many
  replicas or installations watch the Model.
* Datasets are watched too: when one becomes revoked, itself or through its lineage (a revoked
  ancestor), each Model whose ``spec.datasets`` names it or a Dataset derived from it gets a
  Warning Event ``ModelTrainingDataRevoked``, so does each running pod in reach that uses such a
  Model, and the gauge ``muster_pods_using_models_trained_on_revoked_data`` counts those pods.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from muster.datasets import catalog as datasetcatalog
from muster.datasets.rules import lineage as datasetlineage
from muster.datasets.rules import registry as datasetregistry
from muster.kernel import approved, gates, observations, scopes, selectors
from muster.models import gate as modeladmission
from muster.models import modelpacking, provenancing, trainerpods
from muster.models.rules import defaults
from muster.models.rules import lineage as modellineage
from muster.models.rules import registry as modelregistry
from muster.platform import events, kubeapi, metrics, registries
from muster.platform import namespaces as platformnamespaces
from muster.platform.services import Services, SharedSettings
from muster.signatures import omschecks

if TYPE_CHECKING:
    import kopf  # imported where controllers register: ``muster check`` runs none

__all__ = ["AREA", "ModelController", "controllers", "gates_for"]


class ModelSettings(SharedSettings, Protocol):
    """What the model area reads from the process's settings."""

    @property
    def evict_revoked_model_pods(self) -> bool: ...

    @property
    def model_verifier_image(self) -> str: ...


logger = logging.getLogger("muster.models")

AREA = "models"
GROUP, VERSION = "muster.dev", "v1alpha1"
MODELS = f"/apis/{GROUP}/{VERSION}/models"
TERMINATED = approved.TERMINATED
DEFAULT_VERIFIER_IMAGE = defaults.DEFAULT_VERIFIER_IMAGE


@dataclasses.dataclass
class ModelController:
    """State shared by the model gate and the model controllers of one process."""

    kube: kubeapi.KubeApi
    catalog: modeladmission.ModelCatalog
    # The process's one namespace index, shared with the gates.
    namespaces: platformnamespaces.NamespaceIndex
    recorder: events.EventRecorder
    metrics: metrics.Metrics
    evict: bool = False
    # Reads provenance bundles attached to a Model's ociReference (None: only inline ones).
    registries: registries.RegistryClient | None = None
    # Whose pods this operator reports on (and evicts): the namespaces admission judges.
    own_namespace: str | None = None
    namespace_selector: selectors.LabelSelector | None = None
    enforcement: scopes.Enforcement = scopes.NAMESPACED
    # The process's one Dataset catalog: what the Models were trained on (None: none known).
    datasets: datasetcatalog.DatasetCatalog | None = None
    # pod "namespace/name" -> ((model name, digest), ...) for pods not terminated
    usage: dict[str, tuple[tuple[str, str], ...]] = dataclasses.field(default_factory=dict)
    _counts: dict[str, int] = dataclasses.field(default_factory=dict)
    # The last spec this controller saw per Model: transitions are detected against it, not
    # against the gate's index (which re-lists on its own and may already hold the new spec).
    _seen: dict[str, modelregistry.ModelSpec] = dataclasses.field(default_factory=dict)
    # Dataset name -> (revoked Dataset, reason) as last seen (None: not revoked, itself or
    # through lineage); empty until the first Dataset event, which only records.
    _tainted: dict[str, tuple[str, str] | None] | None = None
    # The Datasets as this controller's watch saw them (see dataset_event).
    _lineage: datasetregistry.DatasetIndex | None = None
    _model_uids: dict[str, str] = dataclasses.field(default_factory=dict)

    # -- Models ---------------------------------------------------------------------------

    async def model_event(self, event_type: str, body: Mapping[str, Any]) -> None:
        metadata = body.get("metadata") or {}
        name = str(metadata.get("name", ""))
        if event_type == "DELETED":
            self.catalog.model_deleted(name)
            self._seen.pop(name, None)
            self._model_uids.pop(name, None)
            self.refresh_gauge()
            return
        previous = self._seen.get(name)
        spec, status = body.get("spec") or {}, body.get("status") or {}
        invalid = self.catalog.model_changed(name, spec, status, metadata.get("generation"))
        if invalid is not None:
            logger.warning("Model %s is invalid and not approved: %s", name, invalid)
            if status.get("observedGeneration") != metadata.get("generation"):
                await self._patch_status(
                    name,
                    {
                        "observedGeneration": metadata.get("generation"),
                        "conditions": [
                            _compiled("False", "InvalidSpec", invalid, metadata.get("generation")),
                            _condition("False", "InvalidSpec", invalid, metadata.get("generation")),
                        ],
                    },
                )
            self.refresh_gauge()
            return
        current = self.catalog.index.by_name(name)
        if current is None:  # pragma: no cover - indexed just above
            return
        if not modelregistry.status_is_current(status, metadata.get("generation")):
            await self._write_status(name, metadata, current)
        self._seen[name] = current.spec
        self._model_uids[name] = str(metadata.get("uid", ""))
        if previous is not None:
            if current.spec.revoked and not previous.revoked:
                await self.sweep(name, metadata, previous.digest, revoked=True)
            elif current.spec.digest != previous.digest:
                await self.sweep(name, metadata, previous.digest, revoked=False)
        self.refresh_gauge()

    async def _write_status(
        self, name: str, metadata: Mapping[str, Any], entry: modelregistry.ModelEntry
    ) -> None:
        generation = metadata.get("generation")
        verified, reason, message = await self._signature(entry.spec)
        conditions = [
            _compiled("True", "Compiled", "the spec is valid", generation),
            _condition(verified, reason, message, generation),
        ]
        attested = problem = None
        if entry.spec.provenance is not None:
            outcome = await provenancing.verify(
                entry.spec, provenancing.reader(self.kube), self.registries
            )
            attested, problem = outcome[0], (None if outcome[0] is not None else outcome[2])
            conditions.append(provenancing.condition(outcome, generation, _now()))
        status = {
            "observedGeneration": generation,
            "conditions": conditions,
            # What verified, apart from what the spec declares; null clears an earlier one.
            "provenance": attested.to_status() if attested is not None else None,
            # What the ModelPack artifact at ociReference describes (null: none, or unreadable).
            "modelPack": await modelpacking.status_of(entry.spec, self.registries),
            "revoked": entry.spec.revoked,
            "pods": self._counts.get(name, 0),
        }
        if not await self._patch_status(name, status):
            return
        self.catalog.index.put_model(
            dataclasses.replace(
                entry,
                signature_verified=verified == "True",
                provenance=attested,
                provenance_problem=problem,
            )
        )

    async def _patch_status(self, name: str, status: Mapping[str, Any]) -> bool:
        try:
            await self.kube.patch(f"{MODELS}/{name}/status", {"status": status})
        except kubeapi.ApiError as error:
            logger.warning("cannot write the status of Model %s: %s", name, error)
            return False
        return True

    async def _signature(self, spec: modelregistry.ModelSpec) -> tuple[str, str, str]:
        """("True"|"False", reason, message) for the Model's OMS signature."""
        return await omschecks.check(self.kube, spec.signature, spec.digest, kind="Model")

    # -- revocation -------------------------------------------------------------------------

    async def sweep(
        self, name: str, metadata: Mapping[str, Any], digest: str, *, revoked: bool
    ) -> list[str]:
        """Events on every running pod using Model ``name`` at ``digest`` and on the Model."""
        pods = await self.kube.get(
            "/api/v1/pods", params={"labelSelector": f"{modelregistry.USES_MODELS_LABEL}=true"}
        )
        entry = self.catalog.index.by_name(name)
        why = (entry.spec.revocation_reason if entry else None) or "no reason given"
        reason = "ModelRevoked" if revoked else "ModelDigestChanged"
        affected: list[str] = []
        for pod in pods.get("items") or ():
            pod_meta = pod.get("metadata") or {}
            if (pod.get("status") or {}).get("phase") in TERMINATED:
                continue
            pairs = modelregistry.decode_models_annotation(
                (pod_meta.get("annotations") or {}).get(modelregistry.MODELS_ANNOTATION)
            )
            if (name, digest) not in pairs:
                continue
            namespace, pod_name = str(pod_meta.get("namespace")), str(pod_meta.get("name"))
            if not await self._in_scope(namespace):
                continue  # another installation judges that namespace and reports on it
            affected.append(f"{namespace}/{pod_name}")
            note = (
                f"Model {name!r} ({digest}) used by this pod is revoked: {why}"
                if revoked
                else f"Model {name!r} changed its digest; this pod runs {digest}, "
                f"no longer approved"
            )
            self.recorder.submit(
                observations.revocation_notice(
                    observations.ObjectRef(
                        "v1", "Pod", pod_name, namespace, str(pod_meta.get("uid", ""))
                    ),
                    reason,
                    note,
                )
            )
            if self.evict:
                await self._evict(namespace, pod_name)
        if not affected:
            # Nothing of ours uses it: say nothing, so that installations with disjoint
            # namespaces (or a replica that is not in charge) do not repeat each other.
            return affected
        listed = observations.some_of(affected)
        summary = (
            f"{len(affected)} running pod(s) use this {'revoked' if revoked else 'replaced'} "
            f"Model at {digest}" + (f": {listed}" if affected else "")
        )
        self.recorder.submit(
            observations.revocation_notice(
                observations.ObjectRef(
                    f"{GROUP}/{VERSION}", "Model", name, "", str(metadata.get("uid", ""))
                ),
                reason,
                summary,
            )
        )
        return affected

    async def _in_scope(self, namespace: str) -> bool:
        try:
            labels = await self.namespaces.labels(namespace)
        except kubeapi.ApiError as error:
            logger.warning("cannot read namespace %s, reporting on its pods: %s", namespace, error)
            return True
        return scopes.in_reach(
            namespace,
            labels,
            own_namespace=self.own_namespace,
            selector=self.namespace_selector,
            enforcement=self.enforcement,
        )

    async def _evict(self, namespace: str, name: str) -> None:
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        try:
            await self.kube.create(f"/api/v1/namespaces/{namespace}/pods/{name}/eviction", body)
        except kubeapi.ApiError as error:
            logger.warning("cannot evict pod %s/%s: %s", namespace, name, error)

    # -- pods -------------------------------------------------------------------------------

    async def pod_event(self, event_type: str, body: Mapping[str, Any]) -> None:
        changed = approved.track_pod(self.usage, event_type, body, modelregistry.MODELS_ANNOTATION)
        self.refresh_gauge()
        await self._write_counts(changed)

    def counts(self) -> dict[str, int]:
        return approved.pod_counts(self.usage)

    async def _write_counts(self, names: set[str]) -> None:
        counts = self.counts()
        for name in sorted(names):
            count = counts.get(name, 0)
            if self._counts.get(name) == count or self.catalog.index.by_name(name) is None:
                continue
            try:
                await self.kube.patch(f"{MODELS}/{name}/status", {"status": {"pods": count}})
            except kubeapi.ApiError as error:
                logger.warning("cannot write the pod count of Model %s: %s", name, error)
                continue
            self._counts[name] = count

    def revoked_pods(self) -> int:
        """Running pods that use a revoked Model, or a Model at a digest it no longer has."""
        index = self.catalog.index
        total = 0
        for pairs in self.usage.values():
            for name, digest in pairs:
                entry = index.by_name(name)
                if entry is not None and (entry.spec.revoked or entry.spec.digest != digest):
                    total += 1
                    break
        return total

    def tainted_pods(self) -> int:
        """Running pods that use a Model trained on a Dataset revoked (itself or through its
        lineage)."""
        datasets, models = self._training_index(), self.catalog.index
        if datasets is None:
            return 0
        tainted = {
            name
            for name, entry in models.models.items()
            if modellineage.revocations(entry.spec, datasets)
        }
        return sum(1 for pairs in self.usage.values() if any(n in tainted for n, _ in pairs))

    def _training_index(self) -> datasetregistry.DatasetIndex | None:
        """The Datasets as the watch last said (the catalog's until the first event)."""
        if self._lineage is not None:
            return self._lineage
        return None if self.datasets is None else self.datasets.index

    def refresh_gauge(self) -> None:
        index = self.catalog.index
        revoked = sum(1 for m in index.models.values() if m.spec.revoked)
        invalid = sum(1 for key in index.invalid if key.startswith("Model/"))
        self.metrics.set_models(
            {"approved": len(index.models) - revoked, "revoked": revoked, "invalid": invalid}
        )
        self.metrics.set_pods_using_revoked_models(self.revoked_pods())
        self.metrics.set_pods_using_models_trained_on_revoked_data(self.tainted_pods())

    # -- training data ----------------------------------------------------------------------

    async def dataset_event(self, event_type: str, body: Mapping[str, Any]) -> dict[str, list[str]]:
        """Index the Dataset, and when it or a Dataset derived from it has just become revoked
        (itself or through lineage), raise Events on the Models trained on any of them and on
        the running pods using those Models. Returns Model -> the pods it reported."""
        catalog = self.datasets
        if catalog is None:
            return {}
        metadata = body.get("metadata") or {}
        name = str(metadata.get("name", ""))
        if self._lineage is None:
            # Lineage needs every Dataset, not only those watched so far: list them once. After
            # that only watch events change this view: the shared catalog is re-listed by the
            # gates now and then, and a listing older than the last event would make a taint
            # seem to go off and on again (announced twice).
            if not catalog.loaded:
                try:
                    await catalog.reload()
                except (kubeapi.ApiError, OSError, TimeoutError) as error:
                    logger.warning(
                        "cannot list Datasets, judging lineage on what was watched: %s", error
                    )
            self._lineage = datasetregistry.DatasetIndex(datasets=dict(catalog.index.datasets))
        index = self._lineage
        spec, status = body.get("spec") or {}, body.get("status") or {}
        if event_type == "DELETED":
            catalog.dataset_deleted(name)
            index.datasets.pop(name, None)
        else:
            catalog.dataset_changed(name, spec, status, metadata.get("generation"))
            try:
                index.put_dataset(
                    datasetregistry.parse_dataset(
                        name, spec, status, generation=metadata.get("generation")
                    )
                )
            except ValueError:  # pydantic's ValidationError too: an invalid spec taints nothing
                index.datasets.pop(name, None)
        now = {each: datasetlineage.revoked_through(each, index) for each in index.datasets}
        before, self._tainted = self._tainted, now
        reported: dict[str, list[str]] = {}
        if before is not None:
            # A Dataset first seen now (created revoked, or under a revoked parent) turns on too;
            # at start-up (before is None) what is already revoked was announced before.
            turned = sorted(d for d, taint in now.items() if taint and not before.get(d))
            if turned:
                reported = await self.taint(turned)
        self.refresh_gauge()
        return reported

    async def taint(self, datasets: Sequence[str]) -> dict[str, list[str]]:
        """Warning Events ModelTrainingDataRevoked on each Model trained on one of ``datasets``
        and on each running pod (in reach) that uses such a Model."""
        index = self._training_index()
        if index is None:
            return {}
        models = self.catalog.index.models
        why: dict[str, modellineage.Revocation] = {}
        for model, entries in modellineage.trained_on(models, datasets).items():
            found = [
                r
                for r in modellineage.revocations(models[model].spec, index)
                if r.dataset in entries
            ]
            if found:
                why[model] = found[0]
        if not why:
            return {}
        users: dict[str, list[str]] = {model: [] for model in why}
        try:
            pods = await self.kube.get(
                "/api/v1/pods", params={"labelSelector": f"{modelregistry.USES_MODELS_LABEL}=true"}
            )
        except (kubeapi.ApiError, OSError, TimeoutError) as error:
            # The Models still hear of it; the drift pass reports on the pods.
            logger.warning("cannot list the pods that use Models: %s", error)
            pods = {}
        for pod in pods.get("items") or ():
            pod_meta = pod.get("metadata") or {}
            if (pod.get("status") or {}).get("phase") in TERMINATED:
                continue
            used = {
                n
                for n, _ in modelregistry.decode_models_annotation(
                    (pod_meta.get("annotations") or {}).get(modelregistry.MODELS_ANNOTATION)
                )
            }
            hits = sorted(used & set(why))
            if not hits:
                continue
            namespace, pod_name = str(pod_meta.get("namespace")), str(pod_meta.get("name"))
            if not await self._in_scope(namespace):
                continue  # another installation judges that namespace and reports on it
            for model in hits:
                users[model].append(f"{namespace}/{pod_name}")
                self.recorder.submit(
                    observations.revocation_notice(
                        observations.ObjectRef(
                            "v1", "Pod", pod_name, namespace, str(pod_meta.get("uid", ""))
                        ),
                        modellineage.REVOKED,
                        f"Model {model!r} used by this pod was trained on {why[model].describe()}",
                    )
                )
        for model, revocation in sorted(why.items()):
            note = f"Model {model!r} was trained on {revocation.describe()}"
            listed = users[model]
            if listed:
                note += f"; {len(listed)} running pod(s) use it: {observations.some_of(listed)}"
            # The Model's owner hears of it even where no pod of ours uses the Model.
            self.recorder.submit(
                observations.revocation_notice(
                    observations.ObjectRef(
                        f"{GROUP}/{VERSION}", "Model", model, "", self._model_uids.get(model, "")
                    ),
                    modellineage.REVOKED,
                    note,
                )
            )
        return users


def _condition(status: str, reason: str, message: str, generation: object) -> dict[str, object]:
    # observedGeneration: the condition vouches for this spec only (see
    # modelregistry.signature_verified); a later spec is not verified by it.
    return {
        "type": modelregistry.SIGNATURE_VERIFIED,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": _now(),
    }


def _compiled(status: str, reason: str, message: str, generation: object) -> dict[str, object]:
    # Whether the spec is valid (False: InvalidSpec with why), so bad input reads as such in
    # `kubectl get model` instead of only as an unverified signature.
    return {**_condition(status, reason, message, generation), "type": modelregistry.COMPILED}


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _controller(services: Services[ModelSettings]) -> ModelController:
    """One ModelController per Services (shared by the gate and the controllers)."""
    existing = services.areas.get(AREA)
    if isinstance(existing, ModelController):
        return existing
    if services.events is None:
        services.events = events.EventRecorder(services.kube)
    controller = ModelController(
        kube=services.kube,
        catalog=modeladmission.ModelCatalog(services.kube),
        datasets=datasetcatalog.catalog_for(services),
        namespaces=platformnamespaces.index_for(services),
        recorder=services.events,
        metrics=services.metrics,
        evict=services.settings.evict_revoked_model_pods,
        registries=services.registries,
        own_namespace=services.settings.own_namespace,
        namespace_selector=services.settings.namespace_selector,
        enforcement=services.settings.enforcement,
    )
    metrics_ = services.metrics
    controller.catalog.cache_observer = lambda hit: metrics_.cache_lookup("models", hit=hit)
    services.areas[AREA] = controller
    return controller


def gates_for(services: Services[ModelSettings]) -> Sequence[gates.Gate]:
    controller = _controller(services)
    image = services.settings.model_verifier_image
    return [
        modeladmission.ModelGate(
            catalog=controller.catalog,
            namespaces=controller.namespaces,
            kube=services.kube,
            registries=services.registries,
            verifier_image=image,
            datasets=controller.datasets,
        ),
        trainerpods.TrainerModelGate(
            catalog=controller.catalog,
            namespaces=controller.namespaces,
            kube=services.kube,
            verifier_image=image,
        ),
    ]


def controllers(registry: kopf.OperatorRegistry, services: Services[ModelSettings]) -> None:
    import kopf

    from muster.platform import podevents

    controller = _controller(services)

    @kopf.on.startup(registry=registry)
    async def start_model_events(**_: object) -> None:
        controller.recorder.start()  # idempotent: the recorder is shared by every area
        controller.refresh_gauge()

    @kopf.on.event(GROUP, VERSION, "models", registry=registry)
    async def model_event(event: Mapping[str, Any], body: kopf.Body, **_: object) -> None:
        await controller.model_event(str(event.get("type")), body)

    @kopf.on.event(GROUP, VERSION, "modelpolicies", registry=registry)
    async def policy_event(event: Mapping[str, Any], body: kopf.Body, **_: object) -> None:
        name = str(body.get("metadata", {}).get("name", ""))
        if event.get("type") == "DELETED":
            controller.catalog.policy_deleted(name)
            return
        invalid = controller.catalog.policy_changed(name, body.get("spec") or {})
        if invalid is not None:
            logger.warning("ModelPolicy %s is invalid: %s", name, invalid)

    # ModelPolicies select namespaces by label: the process's one namespace watch feeds them.
    platformnamespaces.watch(registry, services)

    # What the Models were trained on: a Dataset revoked (itself or through its lineage) taints
    # them. The dataset area's own watch feeds the same catalog; indexing twice is harmless.
    @kopf.on.event(GROUP, VERSION, "datasets", id="models-training-data", registry=registry)
    async def training_data_event(event: Mapping[str, Any], body: kopf.Body, **_: object) -> None:
        await controller.dataset_event(str(event.get("type")), body)

    # Pods labelled as using models, from the process's one pod watch.
    async def pod_event(body: Mapping[str, Any], event_type: str | None) -> None:
        await controller.pod_event(str(event_type), body)

    podevents.handle(
        registry, "models", pod_event, labels={modelregistry.USES_MODELS_LABEL: "true"}
    )
