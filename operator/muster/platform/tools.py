"""Finding the third-party binaries Muster drives (kube-apiserver, etcd, cosign, ...).

``hack/install-tools.sh`` builds them into a cache keyed by version; ``MUSTER_TOOLS_DIR``
points elsewhere when they were installed another way. ``PATH`` is the last resort.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["ToolMissing", "find", "tools_dir"]


class ToolMissing(FileNotFoundError):
    """A required binary is not installed; the message says how to get it."""


def tools_dir() -> Path:
    explicit = os.environ.get("MUSTER_TOOLS_DIR")
    if explicit:
        return Path(explicit) / "bin"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "muster-tools" / "bin"


def find(name: str) -> Path:
    candidate = tools_dir() / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise ToolMissing(
        f"{name} is not installed: run hack/install-tools.sh (builds it into {tools_dir()})"
    )
