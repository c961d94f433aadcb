"""The admission gates, in the order they run: the areas that judge pods.

``muster check`` judges manifests with these alone, so it starts without the areas that only
read what the gates decided (BOMs, drift, guards, reports) and their controllers;
:mod:`muster.app.areas` lists these first among every area.
"""

from __future__ import annotations

from collections.abc import Sequence

from muster.admission import areas
from muster.app.settings import OperatorSettings
from muster.datasets import area as datasets
from muster.gpu import area as gpu
from muster.images import area as images
from muster.kernel import gates as gates_
from muster.models import area as models
from muster.platform.services import Services
from muster.vulnerabilities import area as vulnerabilities

__all__ = ["GATES", "gates"]

# The admission gates: they judge pods, and drift re-runs the ones that can drift.
GATES: tuple[areas.Area[OperatorSettings], ...] = (
    gpu.AREA,
    # Before models: the model gate reads the Datasets a Model was trained on.
    datasets.AREA,
    models.AREA,
    images.AREA,
    vulnerabilities.AREA,
)


def gates(services: Services[OperatorSettings]) -> Sequence[gates_.Gate]:
    """Every gate area's admission gates for this process, in order."""
    return [gate for area in GATES if area.gates is not None for gate in area.gates(services)]
