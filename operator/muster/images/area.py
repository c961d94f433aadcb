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
            "SignatureAudited",  # let in by a Notation audit level, as the policy says
        }
    ),
    drift_watches=((crds.GROUP, crds.VERSION, "imagepolicies"),),
    caches=("signatures",),
    resources=(resources.image_policy,),
    gates=_gates,
    controllers=gate.register_controller,
    flags=flags.FLAGS,
    reasons={
        # digest pinning and pod specs
        "ImageNotPinned": "an image is referred to by tag, not by digest",
        "ImageMissing": "a container names no image",
        "ImageReferenceInvalid": "an image reference does not parse",
        "PodSpecInvalid": "a pod template is not a valid pod spec",
        # image signatures
        "ImageNotSigned": "an ImagePolicy covers the image and it carries no signature",
        "SignatureInvalid": "signatures exist but none could be read or checked",
        "SignatureNotTrusted": "no signature by the ImagePolicy's trusted keys or identities "
        "verifies",
        "SignatureLookupFailed": "the registry could not be asked for the image's signatures",
        "ImageNotResolved": "the image's tag could not be resolved to a digest",
        "ImagePolicyInvalid": "an ImagePolicy that covers the image does not compile",
        "ImagePoliciesUnavailable": "the ImagePolicies could not be listed",
        "ImageNotCovered": "no ImagePolicy that applies to the namespace covers the image",
        "ImagePassedUnsigned": "a static-pass ImagePolicy admitted the image without a signature",
        "SignatureAudited": "a Notation authority whose level only logs failed checks (audit, "
        "permissive or an override) admitted the image; the warning says which checks failed",
        "ImageDisallowed": "a static-fail ImagePolicy refuses the images it covers",
        # attestations
        "AttestationMissing": "an ImagePolicy requires an attestation of a predicate type, "
        "signed by its authorities, about the image's digest, and the image carries none",
        "AttestationConditionFailed": "the image's verified attestation does not meet a CEL "
        "condition of the ImagePolicy; the message names the condition and the value it read",
    },
)
