"""Muster's trust anchors, and the admission policies that keep anyone else from writing them.

Admission decisions rest on a few facts written into the cluster besides policies:

* on Nodes, the GPU stack controller's ``muster.dev/gpu-stack`` and ``muster.dev/cuda-capability``
  labels (GPU pods are steered to compliant nodes by them) and the node agent's
  ``muster.dev/gpu-attestation`` annotation (what ``requireAttestation`` trusts);
* the status of Muster's own resources: a Model's or Dataset's ``SignatureVerified`` condition,
  the policies' ``Compiled`` condition, an ImageScan's findings.

RBAC cannot narrow ``patch nodes`` to some labels, nor tell one node agent from another: whoever
may patch Nodes for any reason could write ``muster.dev/gpu-stack=compliant``. These
ValidatingAdmissionPolicies (shipped by the chart, installed by ``muster dev up``) refuse such a
write unless it comes from Muster's operator, from the node agent of that very Node (the node
name the apiserver binds into a token issued for a pod scheduled there, user extra
``authentication.kubernetes.io/node-name``) for the attestation, or from the users and groups
named for break-glass. Status subresources are written by the operator alone. The refusal says
who may write.

The policies are written here once. :data:`STATIC_SPECS` holds them without their settings;
``hack/generate-default-policies.py`` writes them into the chart (``files/trust-anchors.yaml``),
which adds the settings from its values as the first variables, as :func:`manifests` does for
``muster dev up`` and tests (which compare the two).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from muster.gpu.rules import stack as gpustack
from muster.kernel import crds

__all__ = [
    "NODE_ANNOTATIONS",
    "NODE_LABELS",
    "NODE_NAME_EXTRA",
    "STATIC_SPECS",
    "STATUS_RESOURCES",
    "Writers",
    "agent_condition",
    "manifests",
    "settings",
]

NODE_LABELS = (gpustack.STATE_LABEL, gpustack.CUDA_CAPABILITY_LABEL)
NODE_ANNOTATIONS = (gpustack.ATTESTATION_ANNOTATION,)
# Set by the apiserver on ServiceAccount tokens bound to a Pod that is scheduled to a Node.
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
# Status subresources of Muster's resources that admission or its controllers read.
STATUS_RESOURCES = (
    "datasetpolicies/status",
    "datasets/status",
    "gpustackpolicies/status",
    "imagepolicies/status",
    "imagescans/status",
    "modelpolicies/status",
    "models/status",
)


@dataclasses.dataclass(frozen=True)
class Writers:
    """Who may write the trust anchors.

    ``operator``: the operator's username. ``node_agent``: the node agent's ServiceAccount
    username (None: no agent; only the operator writes the attestation). ``agent_confined``:
    another policy already confines every Node write of the agent to its own Node and its
    annotation (chart ``nodeAgent.restrictToOwnNode``), so this one leaves the agent to it and
    two policies never refuse one request with different messages. ``users`` and ``groups``:
    break-glass writers (chart ``trustAnchors.users`` / ``trustAnchors.groups``).
    """

    operator: str
    node_agent: str | None = None
    agent_confined: bool = False
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


def _literal(value: object) -> str:
    """A CEL literal: JSON strings and lists of strings are CEL literals too."""
    return json.dumps(value, separators=(",", ":"))


def settings(writers: Writers) -> list[dict[str, str]]:
    """The first variables of both policies, as the chart writes them from its values."""
    return [
        {"name": "operator", "expression": _literal(writers.operator)},
        {"name": "agent", "expression": _literal(writers.node_agent or "")},
        {"name": "users", "expression": _literal(list(writers.users))},
        {"name": "groups", "expression": _literal(list(writers.groups))},
    ]


def _writer_variables() -> list[dict[str, str]]:
    """Whether the requester is Muster (the settings' writers), and who that is, in words."""
    return [
        {
            "name": "muster",
            "expression": "request.userInfo.username == variables.operator || "
            "request.userInfo.username in variables.users || (has(request.userInfo.groups) && "
            "request.userInfo.groups.exists(g, g in variables.groups))",
        },
        {
            "name": "who",
            "expression": '"Muster\'s operator " + variables.operator + '
            '(size(variables.users) > 0 ? ", the users " + variables.users.join(", ") : "") + '
            '(size(variables.groups) > 0 ? ", members of " + variables.groups.join(", ") : "")',
        },
    ]


def _changed(key: str) -> str:
    """Whether annotation ``key`` is added, removed or changed."""
    key = _literal(key)
    before, after = "variables.oldAnnotations", "variables.newAnnotations"
    return (
        f"({key} in {before}) != ({key} in {after}) || "
        f"({key} in {after} && {before}[{key}] != {after}[{key}])"
    )


_EXTRA = _literal(NODE_NAME_EXTRA)
_NODES: dict[str, Any] = {
    "failurePolicy": "Fail",
    "matchConstraints": {
        "resourceRules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"],
                # A status update can change a Node's labels and annotations as well.
                "resources": ["nodes", "nodes/status"],
            }
        ]
    },
    "variables": [
        {
            "name": "oldLabels",
            "expression": "oldObject == null ? {} : oldObject.metadata.?labels.orValue({})",
        },
        {"name": "newLabels", "expression": "object.metadata.?labels.orValue({})"},
        {
            "name": "oldAnnotations",
            "expression": "oldObject == null ? {} : oldObject.metadata.?annotations.orValue({})",
        },
        {"name": "newAnnotations", "expression": "object.metadata.?annotations.orValue({})"},
        {
            "name": "changedLabels",
            "expression": f"{_literal(list(NODE_LABELS))}.filter(k, "
            "(k in variables.oldLabels) != (k in variables.newLabels) || "
            "(k in variables.newLabels && variables.oldLabels[k] != variables.newLabels[k]))",
        },
        {"name": "attestationChanged", "expression": _changed(gpustack.ATTESTATION_ANNOTATION)},
        *_writer_variables(),
        {
            "name": "agentOfThisNode",
            "expression": 'variables.agent != "" && '
            "request.userInfo.username == variables.agent && "
            f"has(request.userInfo.extra) && {_EXTRA} in request.userInfo.extra && "
            f"request.userInfo.extra[{_EXTRA}] == [object.metadata.name]",
        },
    ],
    "validations": [
        {
            "expression": "size(variables.changedLabels) == 0 || variables.muster",
            "messageExpression": '"node " + object.metadata.name + ": " + '
            'variables.changedLabels.join(", ") + " may only be written by " + variables.who + '
            '", not by " + request.userInfo.username',
            "reason": "Forbidden",
        },
        {
            "expression": "!variables.attestationChanged || variables.muster || "
            "variables.agentOfThisNode",
            "messageExpression": '"node " + object.metadata.name + ": '
            f'{gpustack.ATTESTATION_ANNOTATION} may only be written by " + '
            '(variables.agent != "" ? "the node agent running on " + object.metadata.name + '
            '" (" + variables.agent + ") or " : "") + variables.who + ", not by " + '
            "request.userInfo.username",
            "reason": "Forbidden",
        },
    ],
}

_STATUS: dict[str, Any] = {
    "failurePolicy": "Fail",
    "matchConstraints": {
        "resourceRules": [
            {
                "apiGroups": [crds.GROUP],
                "apiVersions": ["*"],
                "operations": ["UPDATE"],
                "resources": list(STATUS_RESOURCES),
            }
        ]
    },
    "variables": _writer_variables(),
    "validations": [
        {
            "expression": "variables.muster",
            "messageExpression": '"the status of " + request.kind.kind + " " + '
            'object.metadata.name + " is written by " + variables.who + " only, not by " + '
            "request.userInfo.username",
            "reason": "Forbidden",
        }
    ],
}

# Both policies' specs without their settings, by the suffix of their names.
STATIC_SPECS: dict[str, dict[str, Any]] = {"nodes": _NODES, "status": _STATUS}


def agent_condition(node_agent: str) -> dict[str, str]:
    """The match condition leaving a confined node agent to its own, narrower policy."""
    return {
        "name": "not-the-confined-node-agent",
        "expression": f"request.userInfo.username != {_literal(node_agent)}",
    }


def manifests(prefix: str, writers: Writers) -> list[dict[str, Any]]:
    """Both policies and their bindings, named ``<prefix>-trust-anchors-nodes|status``."""
    found: list[dict[str, Any]] = []
    for suffix, static in STATIC_SPECS.items():
        name = f"{prefix}-trust-anchors-{suffix}"
        spec = {**static, "variables": [*settings(writers), *static["variables"]]}
        if suffix == "nodes" and writers.node_agent and writers.agent_confined:
            spec["matchConditions"] = [agent_condition(writers.node_agent)]
        labels = {"app.kubernetes.io/name": "muster"}
        found.append(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": name, "labels": labels},
                "spec": spec,
            }
        )
        found.append(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": name, "labels": labels},
                "spec": {"policyName": name, "validationActions": ["Deny"]},
            }
        )
    return found
