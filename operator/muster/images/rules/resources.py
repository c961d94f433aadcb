"""The image gate's custom resource: ``ImagePolicy``.

Built with :func:`muster.kernel.crds.definition` from the same pydantic model the gate validates
specs with; the area's declaration lists it and the chart's CRDs are generated from that.
"""

from __future__ import annotations

from typing import Any

from muster.images.rules import policies as imagepolicies
from muster.kernel import crds

__all__ = ["image_policy"]


def image_policy() -> dict[str, Any]:
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
