"""Where the admission webhook listens and with which certificate.

Apart from the server (``muster.admission.server``) so that the settings of a process that
serves nothing (``muster check``) do not load aiohttp's web server.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

__all__ = ["TLSFiles", "WebhookSettings"]


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    certfile: Path
    keyfile: Path


@dataclasses.dataclass(frozen=True)
class WebhookSettings:
    host: str = "0.0.0.0"  # noqa: S104  # a webhook must be reachable by the apiserver
    port: int = 9443
    tls: TLSFiles | None = None
    cert_check_interval: float = 10.0
