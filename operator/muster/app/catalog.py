"""Every custom resource Muster defines, from the areas' declarations.

The chart's CRDs (hack/generate-crds.py), docs/reference.md and the local control plane's
resources are all built from this one list; an area adds a resource in its own ``area.py``.
"""

from __future__ import annotations

from typing import Any

from muster.admission import areas as areas_
from muster.app import areas

__all__ = ["definitions"]


def definitions() -> list[dict[str, Any]]:
    return areas_.resources(areas.AREAS)
