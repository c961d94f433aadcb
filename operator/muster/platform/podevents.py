"""One pod watch for the whole process, fanned out to the areas that listen to pods.

Every pod the cluster creates, updates or deletes reaches the operator's pod watch, in every
namespace, judged or not; a large training launch sends thousands at once. kopf's machinery
costs about 0.4 ms of CPU per event (a per-object worker, a Body view, its bookkeeping and a
log context for each), so pods are not watched through kopf: :class:`PodWatch` lists and
watches them with a plain streaming GET and calls each area in turn.

Areas subscribe on the operator's kopf registry before it runs:

* :func:`listen`: a *listener* ``(pod, event_type) -> None`` for every pod event. Synchronous,
  no I/O, quick (note what to do, let a worker do it later), and it must decide early, before
  any copying, that a pod is none of its business. One listener raising does not keep the
  event from the others.
* :func:`handle`: an async *handler* ``(pod, event_type)`` for pods carrying given labels
  (checked on the pod itself, as kopf's ``labels=`` filters were: a pod that loses the label
  is simply not heard of again). Each handler awaits its events one at a time, in the order
  they came, on a task of its own, so its I/O never holds up the watch or the other areas.

The event type is ``ADDED``, ``MODIFIED`` or ``DELETED``, or ``None`` for a pod found by a
listing (at start, and after the watch had to start over: kopf's convention). The composition
root calls :func:`serve` last: it starts the watch on kopf's start-up when anyone subscribed.

The pod given to listeners and handlers is the apiserver's object less
``metadata.managedFields`` (nothing in Muster reads them; often half the object). It is not
shared with anything else, but one pod goes to every subscriber: copy what you keep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import kopf

from muster.platform import kubeapi, tasks

__all__ = [
    "Handler",
    "Listener",
    "PodWatch",
    "Subscribers",
    "handle",
    "handlers",
    "listen",
    "listeners",
    "serve",
    "skip_diff_bases",
    "subscribers",
]

logger = logging.getLogger("muster.podevents")

Listener = Callable[[Mapping[str, Any], str | None], None]
Handler = Callable[[Mapping[str, Any], str | None], Awaitable[None]]
Active = Callable[[], Awaitable[bool]]

PODS = "/api/v1/pods"
PAGE = 500  # pods per page of a listing
SERVER_TIMEOUT_SECONDS = 300  # the apiserver ends each watch request after this long
PEERING_TIMEOUT_SECONDS = 60  # with peering: how often a replica re-checks it is the active one
IDLE_SECONDS = 330.0  # no byte (not even a bookmark) for this long: the connection is dead
BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclasses.dataclass
class _Labelled:
    name: str
    labels: Mapping[str, str]
    handler: Handler
    queue: asyncio.Queue[tuple[Mapping[str, Any], str | None]] | None = None
    task: asyncio.Task[None] | None = None


class Subscribers:
    """The listeners and labelled handlers of one registry; calling it delivers an event."""

    def __init__(self) -> None:
        self.listeners: list[tuple[str, Listener]] = []
        self.labelled: list[_Labelled] = []

    def __call__(self, body: Mapping[str, Any], event_type: str | None) -> None:
        for name, listener in self.listeners:
            try:
                listener(body, event_type)
            except Exception:  # one area's bug must not cost the others their events
                logger.exception("pod event listener %s failed", name)
        if self.labelled:
            labels = (body.get("metadata") or {}).get("labels") or {}
            for each in self.labelled:
                if each.queue is not None and all(
                    labels.get(key) == value for key, value in each.labels.items()
                ):
                    each.queue.put_nowait((body, event_type))

    def start(self) -> None:
        for each in self.labelled:
            if each.task is None:
                queue: asyncio.Queue[tuple[Mapping[str, Any], str | None]] = asyncio.Queue()
                each.queue = queue
                each.task = asyncio.create_task(_drain(each, queue), name=f"pod-events-{each.name}")

    async def stop(self) -> None:
        await tasks.cancel_and_wait(each.task for each in self.labelled)
        for each in self.labelled:
            each.task = each.queue = None


async def _drain(
    labelled: _Labelled, queue: asyncio.Queue[tuple[Mapping[str, Any], str | None]]
) -> None:
    while True:
        body, event_type = await queue.get()
        try:
            await labelled.handler(body, event_type)
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed event must not stop the next one
            logger.exception("pod event handler %s failed", labelled.name)


# One dispatch per kopf registry (an operator builds a fresh registry each run).
_dispatches: weakref.WeakKeyDictionary[kopf.OperatorRegistry, Subscribers] = (
    weakref.WeakKeyDictionary()
)


def subscribers(registry: kopf.OperatorRegistry) -> Subscribers:
    """Who subscribed on ``registry`` (none yet: an empty set, kept for later subscriptions)."""
    dispatch = _dispatches.get(registry)
    if dispatch is None:
        dispatch = _dispatches[registry] = Subscribers()
    return dispatch


def listen(registry: kopf.OperatorRegistry, name: str, listener: Listener) -> None:
    """Call ``listener`` on every pod event."""
    subscribers(registry).listeners.append((name, listener))


def handle(
    registry: kopf.OperatorRegistry, name: str, handler: Handler, *, labels: Mapping[str, str]
) -> None:
    """Await ``handler`` on each event of a pod carrying all of ``labels``, in order."""
    subscribers(registry).labelled.append(_Labelled(name, dict(labels), handler))


def listeners(registry: kopf.OperatorRegistry) -> list[str]:
    """The names of the listeners registered on ``registry``, in calling order."""
    dispatch = _dispatches.get(registry)
    return [name for name, _ in dispatch.listeners] if dispatch is not None else []


def handlers(registry: kopf.OperatorRegistry) -> list[str]:
    """The names of the labelled handlers registered on ``registry``."""
    dispatch = _dispatches.get(registry)
    return [each.name for each in dispatch.labelled] if dispatch is not None else []


def serve(
    registry: kopf.OperatorRegistry,
    credentials: kubeapi.Credentials,
    *,
    active: Active | None = None,
) -> PodWatch | None:
    """Watch pods while the operator runs, when anything subscribed on ``registry``.

    ``active`` says whether this replica runs the controllers (with peering; None: always):
    a standby replica does not watch, as kopf does not run a standby's handlers."""
    dispatch = _dispatches.get(registry)
    if dispatch is None or (not dispatch.listeners and not dispatch.labelled):
        return None
    watch = PodWatch(credentials, dispatch, active=active)

    @kopf.on.startup(registry=registry)
    async def start_pod_watch(**_: Any) -> None:
        watch.start()

    @kopf.on.cleanup(registry=registry)
    async def stop_pod_watch(**_: Any) -> None:
        await watch.stop()

    return watch


class PodWatch:
    """List then watch every pod, resuming from the last resource version seen; list again
    when the apiserver no longer has it (410 Gone) or after a pause as a standby replica."""

    def __init__(
        self,
        credentials: kubeapi.Credentials,
        deliver: Subscribers,
        *,
        active: Active | None = None,
        server_timeout: int | None = None,
        idle: float = IDLE_SECONDS,
        recheck: float = PEERING_TIMEOUT_SECONDS,
    ) -> None:
        self.credentials = credentials
        self.deliver = deliver
        self.active = active
        if server_timeout is None:
            server_timeout = SERVER_TIMEOUT_SECONDS if active is None else PEERING_TIMEOUT_SECONDS
        self.server_timeout = server_timeout
        self.idle = idle
        self.recheck = recheck  # as a standby: how long until asking again
        self.listings = 0  # full listings done: 1 at start, one more per start-over
        self.events = 0  # watch events delivered (not the listed pods)
        self.listed = asyncio.Event()  # set once the first listing was delivered
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the handlers' tasks and the watch (on the running event loop)."""
        if self._task is None:
            self.deliver.start()
            self._task = asyncio.create_task(self.run(), name="muster-pod-watch")

    async def stop(self) -> None:
        if self._task is not None:
            await tasks.cancel_and_wait([self._task])
            self._task = None
            await self.deliver.stop()

    async def run(self) -> None:
        kube = kubeapi.KubeApi(self.credentials, timeout=30.0, connection_limit=2)
        version: str | None = None
        failures = 0
        try:
            while True:
                try:
                    if self.active is not None and not await self.active():
                        version = None  # a standby hears nothing: list again once active
                        await asyncio.sleep(self.recheck)
                        continue
                    if version is None:
                        version = await self._list(kube)
                    version = await self._watch(kube, version)
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except (
                    kubeapi.ApiError,
                    aiohttp.ClientError,
                    OSError,
                    TimeoutError,
                    ValueError,
                ) as error:
                    delay = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
                    failures += 1
                    logger.warning("pod watch failed, again in %.0fs: %s", delay, error)
                    await asyncio.sleep(delay)
        finally:
            await kube.close()

    async def _list(self, kube: kubeapi.KubeApi) -> str:
        """Deliver every pod (event type None), page by page; the listing's resource version."""
        params = {"limit": str(PAGE)}
        while True:
            page = await kube.get(PODS, params)
            for item in page.get("items") or ():
                # List items come without kind and apiVersion (kopf adds them too).
                item.setdefault("kind", "Pod")
                item.setdefault("apiVersion", "v1")
                self._deliver(item, None)
            metadata = page.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                self.listings += 1
                self.listed.set()
                return str(metadata.get("resourceVersion", ""))
            params = {"limit": str(PAGE), "continue": str(token)}

    async def _watch(self, kube: kubeapi.KubeApi, version: str) -> str | None:
        """Deliver the events after ``version`` until the server ends the request; the last
        version seen, or None when it is gone and the pods must be listed again."""
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": version,
            "timeoutSeconds": str(self.server_timeout),
        }
        try:
            async for line in kube.lines(PODS, params, idle=self.idle):
                if not line.strip():
                    continue
                event = json.loads(line)
                kind = event.get("type")
                body = event.get("object") or {}
                if kind == "ERROR":
                    if body.get("code") == 410:
                        logger.info("pod watch expired (410 Gone): listing the pods again")
                        return None
                    raise kubeapi.ApiError(int(body.get("code") or 500), str(body.get("message")))
                version = str((body.get("metadata") or {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.events += 1
                    self._deliver(body, kind)
        except kubeapi.ApiError as error:
            if error.status == 410:
                logger.info("pod watch expired (410 Gone): listing the pods again")
                return None
            raise
        return version

    def _deliver(self, body: dict[str, Any], event_type: str | None) -> None:
        metadata = body.get("metadata")
        if isinstance(metadata, dict):
            metadata.pop("managedFields", None)
        self.deliver(body, event_type)


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
