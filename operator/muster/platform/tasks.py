"""Stopping the background tasks a component started: cancel them all, then wait for each."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel every task (``None`` stands for one never started), then wait until each has
    ended: all are cancelled first, so none goes on working while another is waited for. A
    task's own failure, other than its cancellation, is raised."""
    started = [task for task in tasks if task is not None]
    for task in started:
        task.cancel()
    for task in started:
        with contextlib.suppress(asyncio.CancelledError):
            await task
