"""The GPU stack gate's custom resource: ``GPUStackPolicy``.

Built with :func:`muster.kernel.crds.definition` from the same pydantic model the gate validates
specs with; the area's declaration lists it and the chart's CRDs are generated from that.
"""

from __future__ import annotations

from typing import Any

from muster.gpu.rules import policies as gpupolicies
from muster.kernel import crds

__all__ = ["gpu_stack_policy"]


def gpu_stack_policy() -> dict[str, Any]:
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
