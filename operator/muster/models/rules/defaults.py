"""Defaults the model commands name in their arguments, apart from the code that uses them.

``muster`` builds its argument parser on every start (the verifier init container runs
``muster model verify`` on every pod start): these constants must import nothing heavy.
"""

from __future__ import annotations

import os

import muster

__all__ = ["DEFAULT_VERIFIER_IMAGE", "DEFAULT_WORKERS", "SLSA_V1"]

# Like ThreadPoolExecutor's default: a few threads beyond the cores hide open() latency
# on many small files, while big files keep every core busy hashing.
DEFAULT_WORKERS = min(32, (os.cpu_count() or 1) + 4)
SLSA_V1 = "https://slsa.dev/provenance/v1"
# The chart passes its own image (pinned by digest when configured); this is the fallback.
DEFAULT_VERIFIER_IMAGE = f"ghcr.io/muster-dev/muster:{muster.__version__}"
