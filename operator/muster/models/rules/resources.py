"""The model gate's custom resources: ``Model`` and ``ModelPolicy``.

Built with :func:`muster.kernel.crds.definition` from the same pydantic model the gate validates
specs with; the area's declaration lists it and the chart's CRDs are generated from that.
"""

from __future__ import annotations

from typing import Any

from muster.kernel import crds
from muster.models.rules import registry as modelregistry

__all__ = ["model", "model_policy"]

_NULLABLE_STRING = {"type": "string", "nullable": True}

# The status is the operator's: its fields stay open (conditions, provenance, pods, ...), and the
# ones other programs read (the AI-BOM, kubectl explain) are described here.
STATUS: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "modelPack": {
            "type": "object",
            "nullable": True,
            "description": "What the ModelPack (CNCF model-spec) artifact at spec.ociReference "
            "holds, read from the registry at that digest; null when it is not one",
            "properties": {
                "artifactType": {"type": "string"},
                "configDigest": {"type": "string"},
                "config": {
                    "type": "object",
                    "nullable": True,
                    "x-kubernetes-preserve-unknown-fields": True,
                    "description": "the model config (application/vnd.cncf.model.config.v1+json)"
                    ", at most 16 KiB of JSON (modelfs.diffIds dropped first, then the whole)",
                },
                "configReduced": {"type": "boolean"},
                "layers": {
                    "type": "array",
                    "maxItems": 200,
                    "items": {
                        "type": "object",
                        "properties": {
                            "mediaType": {"type": "string"},
                            "digest": {"type": "string"},
                            "size": {"type": "integer", "nullable": True},
                            "title": _NULLABLE_STRING,
                        },
                    },
                },
                "layerCount": {"type": "integer"},
            },
        },
    },
}


def model() -> dict[str, Any]:
    return crds.definition(
        kind="Model",
        plural="models",
        spec_model=modelregistry.ModelSpec,
        description="An approved model: OMS digest, OCI digest, provenance, signature, revocation.",
        short_names=("mdl",),
        status_schema=STATUS,
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
