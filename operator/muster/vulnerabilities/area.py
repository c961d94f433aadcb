"""The vulnerability area's one registration: trivy scans kept as ImageScans, judged at admission.

Scans have their own asynchronous path, so drift does not re-run this gate.
"""

from __future__ import annotations

from muster.admission import areas
from muster.vulnerabilities import flags, gate
from muster.vulnerabilities.rules import resources

__all__ = ["AREA"]

AREA = areas.Area[gate.ScanSettings](
    name="vulnerabilities",
    checks=(gate.CHECK,),
    resources=(resources.image_scan,),
    gates=gate.gate_factory,
    controllers=gate.register_controller,
    flags=flags.FLAGS,
    reasons={
        # vulnerabilities
        "VulnerabilitiesAboveThreshold": "an image's scan has findings above the policy's "
        "threshold",
        "ImageNotScanned": "no scan of the image digest exists yet (it is queued)",
        "ImageScanFailed": "the last scan of the image digest failed",
        "DigestUnresolved": "the image's digest could not be found to look its scan up",
    },
)
