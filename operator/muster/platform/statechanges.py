"""One counter for "something the gates read may have changed", and what a judgement did besides
answering, so that a verdict can be answered again without judging (admission/verdicts.py).

What the gates read lives in this process: indexes fed by watches (policies, namespaces, nodes,
catalogs, scans) and caches filled by reads of the API and of registries. Every such change
passes one of a few doors, and each door moves :func:`epoch`: a request to the Kubernetes API
or to a registry (when it is sent and when its answer arrives), a line of a watch, and every
kopf handler (``muster run`` wraps them all, see :func:`track_handlers`); a change made
without any of those (a scan's result stored after the scanner ran) calls :func:`changed`.
The counter only ever grows; a verdict judged while it stood still, and reused while it still
stands there, read exactly what a new judgement would read.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "Recording",
    "changed",
    "epoch",
    "no_watches",
    "read",
    "reads_aside",
    "record",
    "recording",
    "stop_recording",
    "track_handlers",
    "tracked",
]

logger = logging.getLogger("muster.statechanges")

_epoch = 0
_lock = threading.Lock()  # kopf runs synchronous handlers in threads
# Whether every kopf handler of this process moves the epoch (False: a watch could change an
# index unseen, so no verdict may be reused).
_tracked = False


def changed() -> None:
    """Something a gate may read has changed (or may have: a request was sent)."""
    global _epoch  # one counter per process, read on every admission
    with _lock:
        _epoch += 1


# Set in a task whose reads of the API never feed what the gates read (the Event recorder
# looking up the object an Event is about): its reads leave the epoch where it is.
_aside: contextvars.ContextVar[bool] = contextvars.ContextVar("muster_reads_aside", default=False)


def read() -> None:
    """A read of the API or a registry is sent or answered: what it brings may fill what the
    gates read, unless this task's reads are set aside (:func:`reads_aside`)."""
    if not _aside.get():
        changed()


def reads_aside() -> None:
    """The reads of the current task (and of tasks it starts) feed nothing a gate reads."""
    _aside.set(True)


def epoch() -> int:
    return _epoch


def tracked() -> bool:
    """Whether every door that changes state moves the epoch in this process."""
    return _tracked


@dataclasses.dataclass
class Recording:
    """What a judgement did besides its answer (metrics of cache look-ups), to do again."""

    effects: list[tuple[Callable[..., None], tuple[Any, ...], dict[str, Any]]] = dataclasses.field(
        default_factory=list
    )

    def replay(self) -> None:
        for function, args, kwargs in self.effects:
            function(*args, **kwargs)


_recording: contextvars.ContextVar[Recording | None] = contextvars.ContextVar(
    "muster_recording", default=None
)


def recording(into: Recording | None) -> contextvars.Token[Recording | None]:
    """Record the effects of what runs from now on in this context (and tasks it starts)."""
    return _recording.set(into)


def stop_recording(token: contextvars.Token[Recording | None]) -> None:
    _recording.reset(token)


def record(function: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """``function(*args, **kwargs)`` was just done: note it, when a judgement is recorded."""
    current = _recording.get()
    if current is not None:
        current.effects.append((function, args, kwargs))


def track_handlers(registry: Any) -> bool:
    """Make every handler of a kopf registry move the epoch when it runs (before and after);
    True when all of them do. kopf keeps its handlers in per-kind registries of frozen
    dataclasses with an ``fn``: anything else found there leaves the process untracked."""
    global _tracked
    try:
        kinds = [
            getattr(registry, name)
            for name in ("_activities", "_indexing", "_watching", "_spawning", "_changing")
        ]
        for kind in kinds:
            handlers = kind._handlers
            for position, handler in enumerate(handlers):
                handlers[position] = dataclasses.replace(handler, fn=_moving(handler.fn))
    except (AttributeError, TypeError) as error:
        logger.warning("kopf handlers cannot be tracked (%s): no verdict is reused", error)
        _tracked = False
        return False
    _tracked = True
    return True


def no_watches() -> None:
    """This process runs no watch: everything the gates read comes through the doors that
    move the epoch (``muster check``, benchmarks and tests judging in process)."""
    global _tracked
    _tracked = True


def _moving(fn: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def moving_async(*args: Any, **kwargs: Any) -> Any:
            changed()
            try:
                return await fn(*args, **kwargs)
            finally:
                changed()

        return moving_async

    @functools.wraps(fn)
    def moving(*args: Any, **kwargs: Any) -> Any:
        changed()
        try:
            return fn(*args, **kwargs)
        finally:
            changed()

    return moving
