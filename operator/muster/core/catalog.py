"""Every custom resource Muster defines, in one list (the chart's CRDs are generated from it).

Each gate adds its resources here: one line per CRD, built with :func:`muster.core.crds.definition`
from the same pydantic model the gate validates specs with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from muster.core import crds, gpupolicies

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


CUSTOM_RESOURCES: tuple[Callable[[], dict[str, Any]], ...] = (_gpu_stack_policy,)


def definitions() -> list[dict[str, Any]]:
    return [build() for build in CUSTOM_RESOURCES]
