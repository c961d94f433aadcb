"""The model area's one registration: approved models at admission, their status and revocation."""

from __future__ import annotations

from muster.admission import areas
from muster.kernel import crds
from muster.models import controllers, flags
from muster.models.rules import approval, resources

__all__ = ["AREA"]

AREA = areas.Area[controllers.ModelSettings](
    name="models",
    checks=(approval.CHECK,),
    drift_checks=(approval.CHECK,),
    not_drift=frozenset(
        {"ModelRegistryUnavailable", "ModelLookupFailed", "ModelReferenceUnresolved"}
    ),
    drift_watches=(
        (crds.GROUP, crds.VERSION, "models"),
        (crds.GROUP, crds.VERSION, "modelpolicies"),
    ),
    # The in-memory Model index (a miss is a re-list from the API).
    caches=("models",),
    resources=(resources.model, resources.model_policy),
    gates=controllers.gates_for,
    controllers=controllers.controllers,
    flags=flags.FLAGS,
)
