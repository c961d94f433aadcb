"""The GPU stack area's one registration: node compliance and GPU pod placement."""

from __future__ import annotations

from muster.admission import areas
from muster.gpu import gate, nodes
from muster.gpu.rules import pods, resources
from muster.kernel import crds

__all__ = ["AREA"]

AREA = areas.Area[object](
    name="gpu",
    checks=(pods.CHECK,),
    drift_checks=(pods.CHECK,),
    not_drift=frozenset({"ImageConfigUnreadable"}),
    drift_watches=((crds.GROUP, crds.VERSION, "gpustackpolicies"),),
    # The image configs the GPU gate reads (their CUDA requirements).
    caches=("image-configs",),
    resources=(resources.gpu_stack_policy,),
    gates=gate.gates_for,
    controllers=nodes.register,
)
