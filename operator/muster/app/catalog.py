"""Every custom resource Muster defines, in one list (the chart's CRDs are generated from it).

Each gate adds its resources here: one line per CRD, built with
:func:`muster.kernel.crds.definition` from the same pydantic model the gate validates specs with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from muster.boms.rules import cyclonedx as boms
from muster.gpu.rules import policies as gpupolicies
from muster.images.rules import policies as imagepolicies
from muster.kernel import crds
from muster.models.rules import registry as modelregistry
from muster.vulnerabilities.rules import scans as vulnerabilities

__all__ = ["CUSTOM_RESOURCES", "definitions"]


def _gpu_stack_policy() -> dict[str, Any]:
    return crds.definition(
        kind="GPUStackPolicy",
        plural="gpustackpolicies",
        spec_model=gpupolicies.GPUStackPolicySpec,
        description="Which NVIDIA drivers, CUDA versions and container toolkits are allowed.",
        short_names=("gsp",),
        printer_columns=(
            {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
            {
                "name": "Compiled",
                "type": "string",
                "jsonPath": ".status.conditions[?(@.type=='Compiled')].status",
            },
        ),
    )


def _image_policy() -> dict[str, Any]:
    return crds.definition(
        kind="ImagePolicy",
        plural="imagepolicies",
        spec_model=imagepolicies.ImagePolicySpec,
        description="Which images must be signed, by which keys or keyless identities.",
        short_names=("ipol",),
        printer_columns=(
            {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
            {"name": "Images", "type": "string", "jsonPath": ".spec.images"},
            {"name": "Authorities", "type": "string", "jsonPath": ".spec.authorities[*].name"},
            {"name": "Threshold", "type": "integer", "jsonPath": ".spec.threshold"},
            {
                "name": "Compiled",
                "type": "string",
                "jsonPath": ".status.conditions[?(@.type=='Compiled')].status",
            },
            {
                "name": "Reason",
                "type": "string",
                "priority": 1,
                "jsonPath": ".status.conditions[?(@.type=='Compiled')].message",
            },
        ),
    )


def _model() -> dict[str, Any]:
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
            {"name": "Pods", "type": "integer", "jsonPath": ".status.pods"},
            {"name": "Source", "type": "string", "priority": 1, "jsonPath": ".spec.source"},
            {"name": "OCI", "type": "string", "priority": 1, "jsonPath": ".spec.ociReference"},
        ),
    )


def _model_policy() -> dict[str, Any]:
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


def _image_scan() -> dict[str, Any]:
    return crds.definition(
        kind="ImageScan",
        plural="imagescans",
        spec_model=vulnerabilities.ImageScanSpec,
        description="Known vulnerabilities of one image digest, written by Muster's scanner.",
        short_names=("iscan",),
        status_schema=crds.spec_schema(
            vulnerabilities.ImageScanStatus, "The result of the latest scan."
        ),
        printer_columns=(
            {"name": "Image", "type": "string", "jsonPath": ".spec.image"},
            {"name": "Critical", "type": "integer", "jsonPath": ".status.counts.CRITICAL"},
            {"name": "High", "type": "integer", "jsonPath": ".status.counts.HIGH"},
            {"name": "Scanned", "type": "string", "jsonPath": ".status.scannedAt"},
            {"name": "Error", "type": "string", "priority": 1, "jsonPath": ".status.error"},
        ),
    )


def _workload_bom() -> dict[str, Any]:
    return crds.definition(
        kind="WorkloadBOM",
        plural="workloadboms",
        spec_model=boms.WorkloadBOMSpec,
        description="The AI-BOM (CycloneDX 1.6) of one running workload, kept by Muster.",
        scope="Namespaced",
        short_names=("wbom",),
        printer_columns=(
            {"name": "Kind", "type": "string", "jsonPath": ".spec.kind"},
            {"name": "Workload", "type": "string", "jsonPath": ".spec.name"},
        ),
    )


CUSTOM_RESOURCES: tuple[Callable[[], dict[str, Any]], ...] = (
    _model,
    _model_policy,
    _gpu_stack_policy,
    _image_policy,
    _image_scan,
    _workload_bom,
)


def definitions() -> list[dict[str, Any]]:
    return [build() for build in CUSTOM_RESOURCES]
