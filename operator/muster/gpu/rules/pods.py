"""GPU pods at admission: which pods need a GPU, what CUDA they need, where they may land.

At admission time there may be no node yet (an autoscaler adds GPU nodes for pending pods), so
a GPU pod is steered *away* from nodes Muster judged bad: required node affinity
``muster.dev/gpu-stack NotIn [non-compliant]`` (and ``unknown`` when the policy denies unknown
nodes), which a node without the label (a node template, a node not judged yet) satisfies. The
CUDA capability steers the same way: a node labelled with too low a capability is avoided, one
without the label is not. The decision itself is taken at binding (the scheduler's Binding,
``spec.nodeName``), against the node as it is then. Warn mode never steers. Everything here is
pure; image configs and Node facts arrive as data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from muster.gpu.rules import cuda
from muster.gpu.rules import policies as gpupolicies
from muster.gpu.rules import stack as gpustack
from muster.kernel import findings, pods, selectors, subjects

__all__ = [
    "CHECK",
    "REQUIREMENT_ANNOTATION",
    "ContainerNeed",
    "KnownNode",
    "Need",
    "affinity_alternatives",
    "affinity_patch",
    "avoided_states",
    "deciding_policy",
    "gpu_request",
    "need_from_envs",
    "node_findings",
    "placement_findings",
    "policies_for",
    "policy_ref",
    "steers",
    "strictest_mode",
    "unknown_nodes_rule",
]

CHECK = "gpu-stack"
# An explicit override of the CUDA requirement (NVIDIA_REQUIRE_CUDA grammar) for every GPU
# container of the pod; it replaces what the images declare, so it is judged like them.
REQUIREMENT_ANNOTATION = "muster.dev/cuda-requirement"

_GPU_RESOURCE_PREFIXES = ("nvidia.com/gpu", "nvidia.com/mig-")
_NVIDIA_LABEL_PREFIX = "nvidia.com/"


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for use in pods.image_uses(spec):
        if use.kind == "imageVolume":
            continue
        field = {"container": "containers", "initContainer": "initContainers"}.get(use.kind)
        if field is None:
            continue
        index = int(use.pointer.split("/")[-2])
        raw = spec.get(field)
        if isinstance(raw, list) and isinstance(raw[index], Mapping):
            yield use.label, raw[index]


def _gpu_resources(container: Mapping[str, Any]) -> list[str]:
    resources = container.get("resources")
    if not isinstance(resources, Mapping):
        return []
    names: set[str] = set()
    for kind in ("limits", "requests"):
        values = resources.get(kind)
        if isinstance(values, Mapping):
            names.update(
                str(name) for name in values if str(name).startswith(_GPU_RESOURCE_PREFIXES)
            )
    return sorted(names)


def _selector_terms(spec: Mapping[str, Any]) -> list[Any]:
    affinity = spec.get("affinity")
    node = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    if not isinstance(node, Mapping):
        return []
    terms: list[Any] = []
    required = node.get("requiredDuringSchedulingIgnoredDuringExecution")
    if isinstance(required, Mapping) and isinstance(required.get("nodeSelectorTerms"), list):
        terms.extend(required["nodeSelectorTerms"])
    preferred = node.get("preferredDuringSchedulingIgnoredDuringExecution")
    if isinstance(preferred, list):
        terms.extend(item.get("preference") for item in preferred if isinstance(item, Mapping))
    return terms


def gpu_request(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """Why this pod spec is a GPU workload (empty when it is not): GPU resources, resource
    claims (DRA), or a node selector or affinity naming NVIDIA node labels."""
    why: list[str] = []
    for label, container in _containers(spec):
        why.extend(f"{label} requests {name}" for name in _gpu_resources(container))
    claims = spec.get("resourceClaims")
    if isinstance(claims, list) and claims:
        why.append("the pod claims devices (resourceClaims)")
    selector = spec.get("nodeSelector")
    if isinstance(selector, Mapping) and any(
        str(key).startswith(_NVIDIA_LABEL_PREFIX) for key in selector
    ):
        why.append("the pod selects NVIDIA nodes (nodeSelector)")
    for term in _selector_terms(spec):
        expressions = term.get("matchExpressions") if isinstance(term, Mapping) else None
        if isinstance(expressions, list) and any(
            isinstance(item, Mapping) and str(item.get("key", "")).startswith(_NVIDIA_LABEL_PREFIX)
            for item in expressions
        ):
            why.append("the pod selects NVIDIA nodes (node affinity)")
            break
    return tuple(why)


def gpu_containers(spec: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """``(label, image)`` of the containers whose images the GPU check reads: the ones asking
    for GPU resources, or every container when the pod as a whole asks (claims, selectors)."""
    containers = list(_containers(spec))
    asking = [(label, c) for label, c in containers if _gpu_resources(c)]
    chosen = asking or containers
    return [
        (label, image if isinstance(image := c.get("image"), str) else None) for label, c in chosen
    ]


# --- what the pod needs ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ContainerNeed:
    label: str
    image: str
    requirements: tuple[str, ...]
    source: str  # "image" or "annotation"
    flags: tuple[gpustack.EnvFlag, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Need:
    """What a GPU pod's containers need of a node, and what is wrong with them."""

    containers: tuple[ContainerNeed, ...]
    problems: tuple[findings.Finding, ...] = ()

    @property
    def requirements(self) -> tuple[str, ...]:
        return tuple(r for container in self.containers for r in container.requirements)

    @property
    def cuda(self) -> cuda.Version | None:
        return cuda.required_cuda(self.requirements)

    @property
    def capability(self) -> int | None:
        version = self.cuda
        return gpustack.capability(version.major_minor) if version is not None else None


def _finding(
    subject: str,
    reason: str,
    message: str,
    mode: findings.Mode,
    policy: findings.PolicyRef | None = None,
) -> findings.Finding:
    return findings.Finding(
        check=CHECK, reason=reason, subject=subject, message=message, mode=mode, policy=policy
    )


def policy_ref(name: str, spec: gpupolicies.GPUStackPolicySpec | None = None) -> findings.PolicyRef:
    """The GPUStackPolicy ``name`` as the policy a finding comes from."""
    denial = spec.denial if spec is not None else None
    return findings.PolicyRef(kind="GPUStackPolicy", name=name, denial=denial)


def deciding_policy(
    policies: Mapping[str, gpupolicies.GPUStackPolicySpec],
) -> findings.PolicyRef | None:
    """The policy a finding every governing policy shares is attributed to: the first by name
    in the strictest mode among them (the one that makes it a denial rather than a warning)."""
    mode = strictest_mode(policies)
    for name, spec in sorted(policies.items()):
        if _mode(spec) is mode:
            return policy_ref(name, spec)
    return None


def need_from_envs(
    containers: Sequence[tuple[str, str, Mapping[str, str]]],
    *,
    annotation: str | None,
    mode: findings.Mode = findings.Mode.ENFORCE,
) -> Need:
    """The need from each GPU container's ``(label, image, image config env)``.

    ``NVIDIA_REQUIRE_*`` with ``CUDA_VERSION`` as fallback, the way the toolkit reads them; the
    annotation, when set, replaces them. ``NVIDIA_DISABLE_REQUIRE`` does not switch admission's
    check off (it is the only check left then): it and ``LD_PRELOAD`` are findings.
    """
    problems: list[findings.Finding] = []
    override: tuple[str, ...] | None = None
    if annotation is not None:
        try:
            cuda.parse_requirement(annotation)
            override = (annotation,)
        except cuda.GrammarError as error:
            problems.append(
                _finding(
                    f"annotation {REQUIREMENT_ANNOTATION}",
                    "CudaRequirementInvalid",
                    f"{annotation!r} is not an NVIDIA_REQUIRE_CUDA requirement: {error}",
                    mode,
                )
            )
    needs: list[ContainerNeed] = []
    for label, image, env in containers:
        flags = gpustack.env_flags(env)
        problems.extend(
            _finding(label, flag.reason, f"image {image}: {flag.message}", mode) for flag in flags
        )
        if override is not None:
            needs.append(ContainerNeed(label, image, override, "annotation", flags))
            continue
        try:
            requirements = cuda.image_requirements(env, honour_disable=False)
            for requirement in requirements:
                cuda.parse_requirement(requirement)
        except cuda.GrammarError as error:
            problems.append(
                _finding(
                    label,
                    "CudaRequirementInvalid",
                    f"image {image} declares a requirement the toolkit would refuse: {error}",
                    mode,
                )
            )
            continue
        needs.append(ContainerNeed(label, image, requirements, "image", flags))
    return Need(tuple(needs), tuple(problems))


# --- policies and namespaces -------------------------------------------------------------


def policies_for(
    policies: Mapping[str, gpupolicies.GPUStackPolicySpec], namespace_labels: Mapping[str, str]
) -> dict[str, gpupolicies.GPUStackPolicySpec]:
    """The policies governing a namespace with these labels."""
    return {
        name: spec
        for name, spec in policies.items()
        if selectors.matches(spec.namespace_selector, namespace_labels)
    }


def _mode(spec: gpupolicies.GPUStackPolicySpec) -> findings.Mode:
    return findings.Mode.WARN if spec.mode == "warn" else findings.Mode.ENFORCE


# --- nodes -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class KnownNode:
    """What the controller knows of a Node: its facts, attestation and compliance."""

    name: str
    facts: gpustack.NodeFacts
    attestation: gpustack.Attestation | None
    compliance: gpustack.Compliance

    @property
    def capability(self) -> int | None:
        version = self.compliance.cuda_version
        return gpustack.capability(version.major_minor) if version is not None else None


def _fits(node: KnownNode, need: Need) -> tuple[bool, str]:
    """Whether the node runs every GPU container natively, and why not."""
    wanted = need.capability
    if wanted is not None and (node.capability is None or node.capability < wanted):
        have = node.compliance.cuda_version
        return False, f"its driver supports CUDA {have if have else 'unknown'}, needed {need.cuda}"
    try:
        result = gpustack.fit(need.requirements, node.facts, node.attestation)
    except cuda.GrammarError as error:  # checked before; kept fail-safe
        return False, str(error)
    if result.satisfied is not True:
        return False, "; ".join(result.reasons) or "requirement not met"
    return True, ""


def _policy_findings(
    need: Need, policies: Mapping[str, gpupolicies.GPUStackPolicySpec]
) -> list[findings.Finding]:
    found: list[findings.Finding] = []
    for name, spec in sorted(policies.items()):
        for container in need.containers:
            for reason in gpustack.workload_cuda_allowed(container.requirements, spec):
                found.append(
                    _finding(
                        container.label,
                        reason.code,
                        f"image {container.image}: {reason.message} by GPUStackPolicy {name}",
                        _mode(spec),
                        policy_ref(name, spec),
                    )
                )
    return found


def placement_findings(
    need: Need,
    policies: Mapping[str, gpupolicies.GPUStackPolicySpec],
    nodes: Iterable[KnownNode],
    *,
    subject: str = "pod",
) -> tuple[list[findings.Finding], list[str]]:
    """Findings for a GPU pod before scheduling, and the compliant nodes that could run it.

    That no node known now could run it is a warning, never a denial: a node an autoscaler
    adds for the pending pod is judged when the pod is bound to it."""
    deciding = deciding_policy(policies)
    found = findings.attributed(need.problems, deciding) + _policy_findings(need, policies)
    known = sorted(nodes, key=lambda node: node.name)
    candidates = [node.name for node in known if node.compliance.compliant and _fits(node, need)[0]]
    if not candidates:
        compliant = [node for node in known if node.compliance.compliant]
        if not known:
            detail = "there is no GPU node yet"
        elif not compliant:
            detail = "no GPU node is compliant with the GPU stack policy"
            states = ", ".join(f"{n.name} {n.compliance.state}" for n in known[:5])
            if states:
                detail += f" ({states})"
        else:
            detail = "no compliant GPU node satisfies it: " + "; ".join(
                f"{node.name}: {_fits(node, need)[1]}" for node in compliant[:5]
            )
        wanted = " and ".join(need.requirements) or "a GPU"
        found.append(
            _finding(
                subject,
                "NoCompliantNode",
                f"needs {wanted}; {detail}; it stays Pending until a node that can run it "
                "joins, and a binding to any other GPU node is refused",
                findings.Mode.WARN,
                deciding,
            )
        )
    return found, candidates


def strictest_mode(policies: Mapping[str, gpupolicies.GPUStackPolicySpec]) -> findings.Mode:
    """Warn only when every governing policy warns."""
    if policies and all(spec.mode == "warn" for spec in policies.values()):
        return findings.Mode.WARN
    return findings.Mode.ENFORCE


_RULE_ORDER = {"allow": 0, "warn": 1, "deny": 2}


def unknown_nodes_rule(policies: Mapping[str, gpupolicies.GPUStackPolicySpec]) -> str:
    """What the governing policies give a node that cannot be judged: the strictest of their
    ``unknownNodes`` (``deny`` when none governs, which never reaches a decision)."""
    rules = [spec.unknown_nodes for spec in policies.values()]
    return max(rules, key=_RULE_ORDER.__getitem__) if rules else "deny"


def node_findings(
    need: Need,
    policies: Mapping[str, gpupolicies.GPUStackPolicySpec],
    node: KnownNode | None,
    node_name: str,
    *,
    subject: str,
) -> list[findings.Finding]:
    """Findings for a GPU pod placed on ``node_name`` (``spec.nodeName`` or a Binding): the
    node must be compliant and satisfy the pod's requirement. A node that is not a GPU node
    Muster can judge (``None``), or one judged ``unknown``, gets what the policies'
    ``unknownNodes`` says: denied like a non-compliant node, a warning, or nothing."""
    mode = strictest_mode(policies)
    deciding = deciding_policy(policies)
    rule = unknown_nodes_rule(policies)
    unknown_mode = mode if rule == "deny" else findings.Mode.WARN
    if node is None:
        if rule == "allow":
            return []
        return [
            _finding(
                subject,
                "NodeUnknown",
                f"node {node_name} has no GPU stack Muster can judge (no GPU Feature Discovery "
                "labels, no node agent attestation); a GPU pod cannot be bound to it",
                unknown_mode,
                deciding,
            )
        ]
    state = node.compliance.state
    reasons = "; ".join(str(reason) for reason in node.compliance.reasons[:3])
    if state is gpustack.State.UNKNOWN:
        if rule != "allow":
            return [
                _finding(
                    subject,
                    "NodeUnknown",
                    f"node {node_name} is unknown: {reasons}",
                    unknown_mode,
                    deciding,
                )
            ]
        if node.compliance.cuda_version is None:
            return []  # nothing to compare the pod's need with: allowed means allowed
    elif not node.compliance.compliant:
        return [
            _finding(
                subject,
                "NodeNotCompliant",
                f"node {node_name} is {state}: {reasons}; run the pod on a compliant node "
                "(kubectl get nodes -L muster.dev/gpu-stack)",
                mode,
                deciding,
            )
        ]
    ok, why = _fits(node, need)
    if not ok:
        wanted = " and ".join(need.requirements)
        return [
            _finding(
                subject,
                "NodeInsufficient",
                f"node {node_name} cannot run {wanted}: {why}; run the pod on a node with a "
                "newer driver (kubectl get nodes -L muster.dev/cuda-capability)",
                mode,
                deciding,
            )
        ]
    return []


# --- steering ----------------------------------------------------------------------------


def steers(policies: Mapping[str, gpupolicies.GPUStackPolicySpec]) -> bool:
    """Whether admission writes node affinity: only when some governing policy enforces (warn
    mode never changes where a pod may run)."""
    return bool(policies) and strictest_mode(policies) is findings.Mode.ENFORCE


def avoided_states(policies: Mapping[str, gpupolicies.GPUStackPolicySpec]) -> list[str]:
    """The ``muster.dev/gpu-stack`` values a GPU pod is steered away from."""
    avoided = [str(gpustack.State.NON_COMPLIANT)]
    if unknown_nodes_rule(policies) == "deny":
        avoided.append(str(gpustack.State.UNKNOWN))
    return avoided


def affinity_alternatives(
    avoid: Sequence[str], capability: int | None
) -> list[list[dict[str, Any]]]:
    """Alternatives of match expressions (ORed) that keep a pod off nodes labelled with an
    ``avoid`` state or with too low a CUDA capability. Every alternative is satisfied by a node
    with none of Muster's labels (``NotIn`` and ``DoesNotExist`` match a missing label): a node
    template an autoscaler scales from zero, a node not judged yet."""
    state = {"key": gpustack.STATE_LABEL, "operator": "NotIn", "values": list(avoid)}
    if capability is None:
        return [[state]]
    return [
        [
            state,
            {
                "key": gpustack.CUDA_CAPABILITY_LABEL,
                "operator": "Gt",
                "values": [str(capability - 1)],
            },
        ],
        [state, {"key": gpustack.CUDA_CAPABILITY_LABEL, "operator": "DoesNotExist"}],
    ]


def _steered(term: Mapping[str, Any]) -> bool:
    present = term.get("matchExpressions")
    return isinstance(present, list) and any(
        isinstance(item, Mapping) and item.get("key") == gpustack.STATE_LABEL for item in present
    )


def affinity_patch(
    template: subjects.PodTemplate, capability: int | None, avoid: Sequence[str]
) -> list[dict[str, Any]]:
    """JSON patch operations adding required node affinity to the pod spec at
    ``template.pointer``. Terms are ORed, so every existing node selector term is combined with
    every alternative. Nothing when every term already carries Muster's state expression
    (reinvocation, or a workload's pod made from a template Muster steered)."""
    alternatives = affinity_alternatives(avoid, capability)
    spec = template.spec
    base = template.pointer
    affinity = spec.get("affinity")
    fresh = [{"matchExpressions": expressions} for expressions in alternatives]
    if not isinstance(affinity, Mapping):
        return [
            {"op": "add", "path": f"{base}/affinity", "value": {"nodeAffinity": _required(fresh)}}
        ]
    node = affinity.get("nodeAffinity")
    if not isinstance(node, Mapping):
        return [{"op": "add", "path": f"{base}/affinity/nodeAffinity", "value": _required(fresh)}]
    required = node.get("requiredDuringSchedulingIgnoredDuringExecution")
    terms = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
    prefix = f"{base}/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution"
    if not isinstance(terms, list) or not terms:
        return [
            {
                "op": "add",
                "path": prefix,
                "value": _required(fresh)["requiredDuringSchedulingIgnoredDuringExecution"],
            }
        ]
    if all(isinstance(term, Mapping) and _steered(term) for term in terms):
        return []
    combined: list[Any] = []
    for term in terms:
        if not isinstance(term, Mapping) or _steered(term):
            combined.append(term)
            continue
        present = term.get("matchExpressions")
        own = list(present) if isinstance(present, list) else []
        for expressions in alternatives:
            combined.append({**term, "matchExpressions": own + expressions})
    return [{"op": "replace", "path": f"{prefix}/nodeSelectorTerms", "value": combined}]


def _required(terms: list[dict[str, Any]]) -> dict[str, Any]:
    return {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}
