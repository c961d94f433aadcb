"""The one list of Muster's areas: adding a gate is one folder plus one line here.

``muster run`` and ``muster check`` build the admission pipeline from these declarations, the
operator registers their controllers, the drift pass re-runs their drift checks, metrics create
their series from them and the chart's CRDs are generated from their resources. The order is
the order gates run in (their mutation patches are applied in it).
"""

from __future__ import annotations

from collections.abc import Sequence

from muster.admission import areas
from muster.app.settings import OperatorSettings
from muster.boms import area as boms
from muster.datasets import area as datasets
from muster.drift import area as drift
from muster.gpu import area as gpu
from muster.guards import area as guards
from muster.guards.rules import namespaces as namespaceguard
from muster.images import area as images
from muster.kernel import gates as gates_
from muster.models import area as models
from muster.platform import metrics
from muster.platform.services import Services
from muster.reports import area as reports
from muster.vulnerabilities import area as vulnerabilities

__all__ = ["AREAS", "GATES", "gates", "metric_labels", "reasons"]

# The admission gates: they judge pods, and drift re-runs the ones that can drift.
GATES: tuple[areas.Area[OperatorSettings], ...] = (
    gpu.AREA,
    # Before models: the model gate reads the Datasets a Model was trained on.
    datasets.AREA,
    models.AREA,
    images.AREA,
    vulnerabilities.AREA,
)
# Every area: the gates, then those that read what the gates decided.
AREAS: tuple[areas.Area[OperatorSettings], ...] = (
    *GATES,
    boms.AREA,
    drift.declare(GATES),
    guards.AREA,
    reports.AREA,
)


def gates(services: Services[OperatorSettings]) -> Sequence[gates_.Gate]:
    """Every area's admission gates for this process, in order."""
    return [gate for area in AREAS if area.gates is not None for gate in area.gates(services)]


def metric_labels() -> metrics.Labels:
    """The label values Muster's series are created with, from the declarations."""
    modes = tuple(mode.value for mode in namespaceguard.NamespaceMode)
    return areas.metric_labels(AREAS, namespace_modes=modes)


def reasons() -> dict[str, str]:
    """Every reason Muster reports, and what it means (Events, metrics, docs)."""
    return areas.reasons(AREAS)
