"""The AI-BOM area's one registration: a WorkloadBOM kept beside each running workload."""

from __future__ import annotations

from muster.admission import areas
from muster.boms import flags, keeper
from muster.boms.rules import resources

__all__ = ["AREA"]

AREA = areas.Area[keeper.BomSettings](
    name="boms",
    resources=(resources.workload_bom,),
    controllers=keeper.register_controller,
    flags=flags.FLAGS,
)
