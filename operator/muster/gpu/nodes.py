"""GPU node compliance: watch Nodes and GPUStackPolicies, label each GPU node with its state.

Every GPU node (GPU Feature Discovery labels, or a node agent attestation) is judged against
every compiled ``GPUStackPolicy``; the worst verdict wins. Without any policy nothing is judged
and Muster's labels are taken off: a cluster that has not asked for the GPU gate keeps
scheduling its GPU pods as before. The node gets
``muster.dev/gpu-stack=compliant|non-compliant|unknown`` and
``muster.dev/cuda-capability=<int>`` for node affinity, an Event when its state changes, and
the gauge of nodes per state is kept. The same :class:`GPUIndex` answers the GPU pod gate; on a
replica whose controllers are not active (peering), the gate refreshes it from the API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pydantic

from muster.gpu.rules import pods as gpupods
from muster.gpu.rules import policies as gpupolicies
from muster.gpu.rules import stack as gpustack
from muster.kernel import crds, observations
from muster.platform import events, kubeapi, refreshahead, statechanges
from muster.platform.services import Services

if TYPE_CHECKING:
    import kopf  # imported where controllers register: ``muster check`` runs none

__all__ = [
    "AREA",
    "GPUIndex",
    "desired_labels",
    "index_for",
    "post_node_event",
    "publish",
    "register",
]

logger = logging.getLogger("muster.gpunodes")

AREA = "gpu-stack"
_MUSTER_LABELS = (gpustack.STATE_LABEL, gpustack.CUDA_CAPABILITY_LABEL)
_API_REFRESH_SECONDS = 5.0
_STATE_ORDER = {
    gpustack.State.COMPLIANT: 0,
    gpustack.State.UNKNOWN: 1,
    gpustack.State.NON_COMPLIANT: 2,
}
_EVENT_ACTION = "AssessGPUStack"
_POLICIES_PATH = f"/apis/{crds.GROUP}/{crds.VERSION}/gpustackpolicies"


@dataclasses.dataclass
class _Node:
    facts: gpustack.NodeFacts
    attestation: gpustack.Attestation | None
    attestation_error: str | None
    labels: dict[str, str]
    uid: str
    version: str = ""  # the resourceVersion it was read at: the same one has the same facts


def _facts(body: Mapping[str, Any]) -> _Node:
    metadata = body.get("metadata") or {}
    name = str(metadata.get("name") or "")
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    annotations = metadata.get("annotations") or {}
    facts = gpustack.node_facts(labels, name=name)
    attestation: gpustack.Attestation | None = None
    error: str | None = None
    raw = annotations.get(gpustack.ATTESTATION_ANNOTATION)
    if raw is not None:
        try:
            attestation = gpustack.parse_attestation(raw)
        except ValueError as problem:  # cuda.GrammarError is a ValueError too
            error = str(problem)
    return _Node(
        facts,
        attestation,
        error,
        labels,
        str(metadata.get("uid") or ""),
        str(metadata.get("resourceVersion") or ""),
    )


def _combine(
    node: _Node, policies: Mapping[str, gpupolicies.GPUStackPolicySpec]
) -> gpustack.Compliance:
    verdicts = [
        gpustack.assess(node.facts, spec, node.attestation) for _, spec in sorted(policies.items())
    ]
    reasons: list[gpustack.Reason] = []
    for verdict in verdicts:
        reasons.extend(reason for reason in verdict.reasons if reason not in reasons)
    if node.attestation_error is not None:
        reasons.insert(
            0,
            gpustack.Reason(
                "AttestationInvalid",
                f"annotation {gpustack.ATTESTATION_ANNOTATION} is not a valid attestation: "
                f"{node.attestation_error}",
            ),
        )
    state = max((v.state for v in verdicts), key=_STATE_ORDER.__getitem__)
    if node.attestation_error is not None:
        state = gpustack.State.NON_COMPLIANT
    first = verdicts[0]
    return gpustack.Compliance(
        node.facts.name, state, tuple(reasons), first.driver, first.cuda_version, first.toolkit
    )


@dataclasses.dataclass
class GPUIndex:
    """Node facts and compiled policies, kept current by the controller's watches and
    re-listed from the API when older than a few seconds (a replica whose controllers are not
    active, peering, still answers admission)."""

    kube: kubeapi.KubeApi
    policies: dict[str, gpupolicies.GPUStackPolicySpec] = dataclasses.field(default_factory=dict)
    policy_errors: dict[str, str] = dataclasses.field(default_factory=dict)
    recorder: events.EventRecorder | None = None  # Events go through it when there is one
    nodes: dict[str, _Node] = dataclasses.field(default_factory=dict)
    _listed_at: float = -1e9
    _lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    _ahead: refreshahead.RefreshAhead = dataclasses.field(
        default_factory=lambda: refreshahead.RefreshAhead("the GPU index")
    )

    def effective_policies(self) -> dict[str, gpupolicies.GPUStackPolicySpec]:
        """The policies nodes are judged against: the compiled GPUStackPolicy objects only (the
        chart's default policy is one once enabled; no built-in judges in their absence)."""
        return dict(self.policies)

    def known(self, name: str) -> gpupods.KnownNode | None:
        """The node's judgement; None when it is not a GPU node or no policy judges."""
        node = self.nodes.get(name)
        if not self.policies:
            return None
        if node is None or not (node.facts.gpu or node.attestation or node.attestation_error):
            return None
        return gpupods.KnownNode(
            name, node.facts, node.attestation, _combine(node, self.effective_policies())
        )

    def known_nodes(self) -> list[gpupods.KnownNode]:
        return [known for name in sorted(self.nodes) if (known := self.known(name)) is not None]

    def counts(self) -> dict[str, int]:
        counts = {str(state): 0 for state in gpustack.State}
        for node in self.known_nodes():
            counts[str(node.compliance.state)] += 1
        return counts

    def update_node(self, body: Mapping[str, Any]) -> _Node:
        node = _facts(body)
        self.nodes[node.facts.name] = node
        statechanges.changed()  # the GPU gate reads nodes and policies (admission/verdicts.py)
        return node

    def update_policy(self, name: str, spec: object) -> str | None:
        """Compile a policy's spec; the error message when it does not compile."""
        try:
            self.policies[name] = gpupolicies.parse_spec(spec)
        except (pydantic.ValidationError, ValueError) as error:
            self.policies.pop(name, None)
            message = str(error).replace("\n", " ")[:500]
            self.policy_errors[name] = message
            statechanges.changed()
            return message
        self.policy_errors.pop(name, None)
        statechanges.changed()
        return None

    def _relisted(self, items: list[Mapping[str, Any]]) -> dict[str, _Node]:
        """The listed nodes; one already known at the same resourceVersion is kept as it was
        (reading 1,000 nodes' labels again cost about 0.1 s every few seconds, in the event
        loop: docs/performance.md, "The idle stall")."""
        listed: dict[str, _Node] = {}
        for body in items:
            metadata = body.get("metadata") or {}
            known = self.nodes.get(str(metadata.get("name") or ""))
            version = str(metadata.get("resourceVersion") or "")
            if known is not None and version and known.version == version:
                listed[known.facts.name] = known
            else:
                node = _facts(body)
                listed[node.facts.name] = node
        return listed

    async def fetch_node(self, name: str) -> gpupods.KnownNode | None:
        """The node as it is now, read from the API: a node that joined (or got its GPU
        Feature Discovery labels or attestation) after the last listing is judged too. None
        when there is no such Node or it is not a GPU node."""
        try:
            body = await self.kube.get(f"/api/v1/nodes/{name}")
        except kubeapi.ApiError as error:
            if error.status != 404:
                raise
            self.nodes.pop(name, None)
            statechanges.changed()
            return None
        self.update_node(body)
        return self.known(name)

    async def refresh(self) -> None:
        """Re-list Nodes and policies when the last listing is older than a few seconds (in
        the background, not waited for, once it is half that old)."""
        if time.monotonic() - self._listed_at < _API_REFRESH_SECONDS:
            if self._ahead.due(self._listed_at, _API_REFRESH_SECONDS):
                self._ahead.start(
                    lambda: self._relist_if_older(_API_REFRESH_SECONDS * self._ahead.fraction)
                )
            return
        await self._relist_if_older(_API_REFRESH_SECONDS)

    async def _relist_if_older(self, age: float) -> None:
        async with self._lock:  # one re-list, shared by every reader that waits for it
            if time.monotonic() - self._listed_at < age:
                return
            nodes = await self.kube.get("/api/v1/nodes")
            try:
                policies = await self.kube.get(_POLICIES_PATH)
            except kubeapi.ApiError as error:
                if error.status != 404:  # no CRD: no policies, nothing is judged
                    raise
                policies = {"items": []}
            self.nodes = self._relisted(nodes.get("items") or [])
            self.policies, self.policy_errors = {}, {}
            for item in policies.get("items") or []:
                self.update_policy(str(item["metadata"]["name"]), item.get("spec"))
            self._listed_at = time.monotonic()
            statechanges.changed()


def index_for(services: Services[object]) -> GPUIndex:
    """The one index of this process (``services`` is the operator's ``Services``)."""
    index = services.areas.get(AREA)
    if index is None:
        index = services.areas[AREA] = GPUIndex(
            services.kube, recorder=getattr(services, "events", None)
        )
    if not isinstance(index, GPUIndex):
        raise TypeError(f"services.areas[{AREA!r}] is not a GPUIndex")
    return index


# --- publishing --------------------------------------------------------------------------


def desired_labels(compliance: gpustack.Compliance | None) -> dict[str, str | None]:
    """Muster's labels for a node (None removes one)."""
    if compliance is None:
        return dict.fromkeys(_MUSTER_LABELS)
    labels: dict[str, str | None] = dict.fromkeys(_MUSTER_LABELS)
    try:
        labels.update(gpustack.published_labels(compliance))
    except ValueError:  # a CUDA version without an integer form: no capability label
        labels[gpustack.STATE_LABEL] = str(compliance.state)
    return labels


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def post_node_event(
    kube: kubeapi.KubeApi, node: str, uid: str, *, warning: bool, reason: str, note: str
) -> None:
    """An events.k8s.io/v1 Event about a Node, posted directly: used when this process has no
    shared EventRecorder (which is otherwise preferred: it folds repeats and bounds the rate)."""
    body = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"generateName": f"{node}-gpu-stack-"[:200], "namespace": "default"},
        "eventTime": events.micro_time(time.time()),
        "reportingController": events.REPORTING_CONTROLLER,
        "reportingInstance": events.reporting_instance(),
        "action": _EVENT_ACTION,
        "reason": reason,
        "type": "Warning" if warning else "Normal",
        "note": note[:1000],
        "regarding": {"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid},
    }
    await kube.create("/apis/events.k8s.io/v1/namespaces/default/events", body)


_EVENT_REASONS = {
    gpustack.State.COMPLIANT: "GPUStackCompliant",
    gpustack.State.NON_COMPLIANT: "GPUStackNonCompliant",
    gpustack.State.UNKNOWN: "GPUStackUnknown",
}


async def publish(index: GPUIndex, name: str) -> None:
    """Bring a node's labels in line with its judgement; an Event when its state changed."""
    node = index.nodes.get(name)
    if node is None:
        return
    known = index.known(name)
    compliance = known.compliance if known else None
    wanted = desired_labels(compliance)
    changes = {key: value for key, value in wanted.items() if node.labels.get(key) != value}
    if not changes:
        return
    previous = node.labels.get(gpustack.STATE_LABEL)
    logger.info("node %s: GPU stack %s", name, compliance.state if compliance else "not a GPU node")
    await index.kube.patch(f"/api/v1/nodes/{name}", {"metadata": {"labels": changes}})
    for key, value in changes.items():
        if value is None:
            node.labels.pop(key, None)
        else:
            node.labels[key] = value
    if compliance is not None and previous != str(compliance.state):
        reasons = "; ".join(str(reason) for reason in compliance.reasons) or "every check passed"
        note = f"GPU stack {previous or 'unjudged'} -> {compliance.state}: {reasons}"[:1000]
        if index.recorder is not None:
            index.recorder.submit(
                observations.Notice(
                    target=observations.ObjectRef("v1", "Node", name, uid=node.uid),
                    delivery=observations.Delivery.NOW,
                    type=observations.EventType.NORMAL
                    if compliance.compliant
                    else observations.EventType.WARNING,
                    reason=_EVENT_REASONS[compliance.state],
                    action=_EVENT_ACTION,
                    note=note,
                    namespace="",
                )
            )
            return
        try:
            await post_node_event(
                index.kube,
                name,
                node.uid,
                warning=not compliance.compliant,
                reason=_EVENT_REASONS[compliance.state],
                note=note,
            )
        except kubeapi.ApiError as error:  # the label is the record; the Event is a courtesy
            logger.warning("cannot post an Event on node %s: %s", name, error)


# --- metrics -----------------------------------------------------------------------------

_METRIC_STATES = {"compliant": "compliant", "non-compliant": "noncompliant", "unknown": "unknown"}


def _report_counts(services: Services[object], index: GPUIndex) -> None:
    """The gauge of GPU nodes per state (``muster_gpu_nodes{state}``)."""
    counts = index.counts()
    services.metrics.set_gpu_nodes({_METRIC_STATES[state]: n for state, n in counts.items()})


# --- kopf --------------------------------------------------------------------------------


def _condition(error: str | None) -> dict[str, Any]:
    return {
        "type": "Compiled",
        "status": "False" if error else "True",
        "reason": "SpecInvalid" if error else "Compiled",
        "message": error or "the policy is in force",
    }


def register(registry: kopf.OperatorRegistry, services: Services[object]) -> None:
    import kopf

    index = index_for(services)

    def count() -> None:
        _report_counts(services, index)

    @kopf.on.startup(registry=registry)
    async def start_events(**_: Any) -> None:
        if index.recorder is not None:
            index.recorder.start()  # idempotent: the recorder is shared by every area

    @kopf.on.event("nodes", registry=registry)
    async def node_event(event: kopf.RawEvent, **_: Any) -> None:
        body = event["object"]
        name = str(body.get("metadata", {}).get("name", ""))
        if event["type"] == "DELETED":
            index.nodes.pop(name, None)
        else:
            index.update_node(body)
            await publish(index, name)
        count()

    @kopf.on.event(crds.GROUP, crds.VERSION, "gpustackpolicies", registry=registry)
    async def policy_event(event: kopf.RawEvent, **_: Any) -> None:
        body = event["object"]
        name = str(body.get("metadata", {}).get("name", ""))
        if event["type"] == "DELETED":
            index.policies.pop(name, None)
            index.policy_errors.pop(name, None)
        else:
            error = index.update_policy(name, body.get("spec"))
            condition = _condition(error)
            conditions = (body.get("status") or {}).get("conditions") or []
            current = next((c for c in conditions if c.get("type") == "Compiled"), None)
            if current is None or any(current.get(k) != v for k, v in condition.items()):
                condition["lastTransitionTime"] = _now()[:19] + "Z"
                await index.kube.patch(
                    f"{_POLICIES_PATH}/{name}/status", {"status": {"conditions": [condition]}}
                )
        for node in list(index.nodes):
            await publish(index, node)
        count()
