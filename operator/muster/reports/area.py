"""The report area's one registration: drift and scan results as PolicyReports."""

from __future__ import annotations

from muster.admission import areas
from muster.reports import flags, keeper

__all__ = ["AREA"]

AREA = areas.Area[keeper.ReportSettings](
    name="reports",
    controllers=keeper.register_controller,
    flags=flags.FLAGS,
)
