"""The vulnerability gate's custom resource: ``ImageScan`` (one per scanned image digest).

Built with :func:`muster.kernel.crds.definition` from the same pydantic model the gate validates
specs with; the area's declaration lists it and the chart's CRDs are generated from that.
"""

from __future__ import annotations

from typing import Any

from muster.kernel import crds
from muster.vulnerabilities.rules import scans as vulnerabilities

__all__ = ["image_scan"]


def image_scan() -> dict[str, Any]:
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
