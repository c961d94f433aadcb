"""The guards' registration: their flags (the guard policies themselves are the chart's)."""

from __future__ import annotations

from muster.admission import areas
from muster.guards import flags

__all__ = ["AREA"]

AREA = areas.Area[object](
    name="guards",
    flags=flags.FLAGS,
    reasons={
        # the namespace guard's record of namespace mode changes
        "NamespaceModeChanged": "a namespace's Muster mode or a protected label changed (Normal)",
        "NamespaceModeChangeRefused": "the namespace guard refused lowering a namespace's "
        "enforcement",
    },
)
