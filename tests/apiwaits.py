"""Waiting on a real apiserver from async tests: for a probe to answer, and for custom resources
just installed to be served (right after a CRD is installed its storage may still answer 429
"(re)initializing")."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from muster.kernel import crds
from muster.platform import kubeapi

__all__ = ["eventually", "served"]


async def eventually(
    probe: Callable[[], Awaitable[Any]], what: str, seconds: float = 30, interval: float = 0.2
) -> Any:
    """The first truthy answer of ``probe``, asked every ``interval`` s for ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


async def served(kube: kubeapi.KubeApi, *plurals: str, what: str) -> None:
    """Until each of Muster's cluster-scoped resources ``plurals`` can be listed."""

    async def serving() -> bool:
        try:
            for plural in plurals:
                await kube.get(f"/apis/{crds.GROUP}/{crds.VERSION}/{plural}")
        except kubeapi.ApiError:
            return False
        return True

    await eventually(serving, what)
