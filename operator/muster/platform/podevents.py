"""One kopf handler for every pod event, fanned out to the areas that listen to pods.

Every pod the cluster creates, updates or deletes reaches the operator's pod watch, in every
namespace, judged or not; a large training launch sends thousands at once. kopf's cost of an
event grows with each handler it invokes (an invocation with its own bookkeeping and a log
record), so the areas that react to all pods (BOMs, vulnerability scans) do not register kopf
handlers of their own: they add a *listener* here, and one kopf handler calls them in turn.

A listener is a plain function ``(pod, event_type) -> None``: synchronous, no I/O, quick (note
what to do, let a worker do it later), and it must decide early, before any copying, that a pod
is none of its business. One listener raising does not keep the event from the others.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import kopf

__all__ = ["Listener", "listen", "listeners", "skip_diff_bases"]

logger = logging.getLogger("muster.podevents")

Listener = Callable[[Mapping[str, Any], str | None], None]


class _Dispatch:
    def __init__(self) -> None:
        self.listeners: list[tuple[str, Listener]] = []

    def __call__(self, body: Mapping[str, Any], event_type: str | None) -> None:
        for name, listener in self.listeners:
            try:
                listener(body, event_type)
            except Exception:  # one area's bug must not cost the others their events
                logger.exception("pod event listener %s failed", name)


# One dispatch per kopf registry (an operator builds a fresh registry each run).
_dispatches: weakref.WeakKeyDictionary[kopf.OperatorRegistry, _Dispatch] = (
    weakref.WeakKeyDictionary()
)


def listen(registry: kopf.OperatorRegistry, name: str, listener: Listener) -> None:
    """Call ``listener`` on every pod event; the first listener registers the kopf handler."""
    dispatch = _dispatches.get(registry)
    if dispatch is None:
        dispatch = _dispatches[registry] = _Dispatch()
        call = dispatch

        @kopf.on.event("", "v1", "pods", id="pod-events", registry=registry)
        async def pod_event(body: kopf.Body, type: str | None, **_: Any) -> None:
            call(body, type)

    dispatch.listeners.append((name, listener))


def listeners(registry: kopf.OperatorRegistry) -> list[str]:
    """The names of the listeners registered on ``registry``, in calling order."""
    dispatch = _dispatches.get(registry)
    return [name for name, _ in dispatch.listeners] if dispatch is not None else []


class _NoDiffBase(kopf.DiffBaseStorage):
    """A diff base nobody reads: kopf builds one (a deep copy of the object, and a read of its
    ``last-handled-configuration`` annotation) on every event of every watched object, for
    change handlers (``on.create``/``update``/``delete``/``resume``) and daemons only."""

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def skip_diff_bases(settings: kopf.OperatorSettings, registry: kopf.OperatorRegistry) -> bool:
    """Stop kopf building diff bases when no handler of ``registry`` could use one.

    Muster's controllers are event handlers only (no change handlers, no daemons or timers),
    so the diff base kopf builds for each event (a fifth of the CPU a pod event costs it) is
    thrown away. Should a change handler or a daemon ever be registered, or kopf's registry
    not say, the default storage stays. True when the diff bases are skipped."""
    changing = getattr(registry, "_changing", None)
    spawning = getattr(registry, "_spawning", None)
    if changing is None or spawning is None:
        return False
    if list(changing.get_all_handlers()) or list(spawning.get_all_handlers()):
        return False
    settings.persistence.diffbase_storage = _NoDiffBase()
    return True
