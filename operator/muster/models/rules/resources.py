"""The model gate's custom resources: ``Model`` and ``ModelPolicy``.

Built with :func:`muster.kernel.crds.definition` from the same pydantic model the gate validates
specs with; the area's declaration lists it and the chart's CRDs are generated from that.
"""

from __future__ import annotations

from typing import Any

from muster.kernel import crds
from muster.models.rules import registry as modelregistry

__all__ = ["model", "model_policy"]


def model() -> dict[str, Any]:
    return crds.definition(
        kind="Model",
        plural="models",
        spec_model=modelregistry.ModelSpec,
        description="An approved model: OMS digest, OCI digest, provenance, signature, revocation.",
        short_names=("mdl",),
        printer_columns=(
            {"name": "Digest", "type": "string", "jsonPath": ".spec.digest"},
            {"name": "Format", "type": "string", "jsonPath": ".spec.format"},
            {
                "name": "Signed",
                "type": "string",
                "jsonPath": ".status.conditions[?(@.type=='SignatureVerified')].status",
            },
            {"name": "Revoked", "type": "boolean", "jsonPath": ".spec.revoked"},
            {
                "name": "Provenance",
                "type": "string",
                "priority": 1,
                "jsonPath": ".status.conditions[?(@.type=='ProvenanceVerified')].status",
            },
            {"name": "Pods", "type": "integer", "jsonPath": ".status.pods"},
            {"name": "Source", "type": "string", "priority": 1, "jsonPath": ".spec.source"},
            {"name": "OCI", "type": "string", "priority": 1, "jsonPath": ".spec.ociReference"},
        ),
    )


def model_policy() -> dict[str, Any]:
    return crds.definition(
        kind="ModelPolicy",
        plural="modelpolicies",
        spec_model=modelregistry.ModelPolicySpec,
        description="Which namespaces may only mount approved models, and how strictly.",
        short_names=("mpol",),
        printer_columns=(
            {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
            {"name": "Signature", "type": "boolean", "jsonPath": ".spec.requireSignature"},
            {"name": "Unsafe", "type": "string", "jsonPath": ".spec.unsafeSerialization.action"},
        ),
    )
