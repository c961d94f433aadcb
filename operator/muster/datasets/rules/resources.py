"""The dataset area's custom resources: ``Dataset`` and ``DatasetPolicy``.

Built with :func:`muster.kernel.crds.definition` from the same pydantic models the gates validate
specs with; the area's declaration lists them and the chart's CRDs are generated from that.
"""

from __future__ import annotations

from typing import Any

from muster.datasets.rules import registry
from muster.kernel import crds

__all__ = ["dataset", "dataset_policy"]

_CONDITION: dict[str, Any] = {
    "type": "object",
    "required": ["type", "status"],
    "properties": {
        "type": {"type": "string"},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "observedGeneration": {"type": "integer"},
        "lastTransitionTime": {"type": "string"},
    },
}
_CONDITIONS: dict[str, Any] = {
    "type": "array",
    "items": _CONDITION,
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


def _status(**extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "observedGeneration": {"type": "integer"},
            "conditions": _CONDITIONS,
            **extra,
        },
    }


def dataset() -> dict[str, Any]:
    return crds.definition(
        kind="Dataset",
        plural="datasets",
        spec_model=registry.DatasetSpec,
        description="An approved dataset: OMS digest, OCI digest, sources, licence, lineage, "
        "signature, revocation.",
        short_names=("ds",),
        status_schema=_status(
            pods={"type": "integer", "description": "running pods using it directly"},
            revoked={
                "type": "boolean",
                "description": "revoked itself or through its lineage (a revoked ancestor)",
            },
            revokedThrough={
                "type": "string",
                "nullable": True,
                "description": "the nearest revoked ancestor, when revoked through its lineage",
            },
        ),
        printer_columns=(
            {"name": "Digest", "type": "string", "jsonPath": ".spec.digest"},
            {"name": "License", "type": "string", "jsonPath": ".spec.license"},
            {
                "name": "Signed",
                "type": "string",
                "jsonPath": ".status.conditions[?(@.type=='SignatureVerified')].status",
            },
            {
                "name": "Lineage",
                "type": "string",
                "jsonPath": ".status.conditions[?(@.type=='LineageResolved')].status",
            },
            {"name": "Revoked", "type": "boolean", "jsonPath": ".spec.revoked"},
            {"name": "Pods", "type": "integer", "jsonPath": ".status.pods"},
            {
                "name": "Through",
                "type": "string",
                "priority": 1,
                "jsonPath": ".status.revokedThrough",
            },
            {"name": "OCI", "type": "string", "priority": 1, "jsonPath": ".spec.ociReference"},
        ),
    )


def dataset_policy() -> dict[str, Any]:
    return crds.definition(
        kind="DatasetPolicy",
        plural="datasetpolicies",
        spec_model=registry.DatasetPolicySpec,
        description="Which namespaces may only use approved datasets, and how strictly.",
        short_names=("dspol",),
        status_schema=_status(),
        printer_columns=(
            {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
            {"name": "Signature", "type": "boolean", "jsonPath": ".spec.requireSignature"},
            {"name": "Volumes", "type": "string", "jsonPath": ".spec.volumes"},
        ),
    )
