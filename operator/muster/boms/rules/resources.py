"""The AI-BOM's custom resource: ``WorkloadBOM`` (one per running workload).

Built with :func:`muster.kernel.crds.definition` from the same pydantic model the gate validates
specs with; the area's declaration lists it and the chart's CRDs are generated from that.
"""

from __future__ import annotations

from typing import Any

from muster.boms.rules import cyclonedx as boms
from muster.kernel import crds

__all__ = ["workload_bom"]


def workload_bom() -> dict[str, Any]:
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
