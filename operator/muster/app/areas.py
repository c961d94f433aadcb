"""The one list of Muster's areas: adding a gate is one folder plus one line here (a gate's
line is in :mod:`muster.app.admissiongates`).

``muster run`` and ``muster check`` build the admission pipeline from these declarations, the
operator registers their controllers, the drift pass re-runs their drift checks, metrics create
their series from them and the chart's CRDs are generated from their resources. The order is
the order gates run in (their mutation patches are applied in it).
"""

from __future__ import annotations

from collections.abc import Sequence

from muster.admission import areas
from muster.app.admissiongates import GATES
from muster.app.settings import OperatorSettings
from muster.boms import area as boms
from muster.drift import area as drift
from muster.guards import area as guards
from muster.guards.rules import namespaces as namespaceguard
from muster.kernel import gates as gates_
from muster.platform import metrics
from muster.platform.services import Services
from muster.reports import area as reports

__all__ = ["AREAS", "GATES", "gates", "metric_labels", "reasons"]

# The admission gates (gpu, datasets, models, images, vulnerabilities: a gate is added in
# muster.app.admissiongates, which ``muster check`` imports alone) run first.
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
