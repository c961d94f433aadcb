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
)
