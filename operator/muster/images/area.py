"""The image area's one registration: signatures and digest pinning."""

from __future__ import annotations

from collections.abc import Sequence

from muster.admission import areas
from muster.images import flags, gate
from muster.images.rules import pinning, resources
from muster.kernel import crds, gates, observations
from muster.platform.services import Services

__all__ = ["AREA"]


def _gates(services: Services[gate.ImageSettings]) -> Sequence[gates.Gate]:
    return [pinning.PinningGate(), *gate.gate_factory(services)]


AREA = areas.Area[gate.ImageSettings](
    name="images",
    checks=(pinning.CHECK, gate.CHECK),
    drift_checks=(gate.CHECK,),
    not_drift=frozenset(
        {
            "ImagePoliciesUnavailable",
            "NamespaceUnavailable",
            "SignatureLookupFailed",
            "ImageNotResolved",
            observations.PASSED_UNSIGNED,  # let in unsigned as a policy says: not a problem
        }
    ),
    drift_watches=((crds.GROUP, crds.VERSION, "imagepolicies"),),
    caches=("signatures",),
    resources=(resources.image_policy,),
    gates=_gates,
    controllers=gate.register_controller,
    flags=flags.FLAGS,
)
