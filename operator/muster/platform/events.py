"""Posting Muster's Events (``events.k8s.io/v1``) off the admission path.

Admission only calls :meth:`EventRecorder.submit`, which puts a notice on a bounded queue and
returns at once (a full queue drops the notice and counts it). One worker task resolves the
object each notice is about, folds repeated identical notices into one Event series
(``series.count`` / ``series.lastObservedTime`` on one Event object, see
:class:`muster.kernel.observations.SeriesBook`) and writes at a bounded rate.

Other areas report their own Events (a Node's compliance, a Model's revocation) by
submitting a :class:`~muster.kernel.observations.Notice` with ``delivery=Delivery.NOW`` and the
object as ``target`` (``namespace=""`` for cluster-scoped objects) to ``Services.events``.

A denied request with no owner is also reported on each policy object its findings name
(``Finding.policy``: cluster-scoped, so those Events live in ``default``).

Target resolution:

* an owner that is a ReplicaSet is replaced by the ReplicaSet's own controller (its
  Deployment) when it has one; an owner or object that cannot be read falls back to the
  Namespace;
* an object admitted with warnings does not exist yet when admission answers: the worker
  looks it up after 0.5 s, 1 s, 2 s, 4 s and 8 s (the apiserver names ``generateName`` pods
  before validating admission, so the name is known) and, if it never appears (a later
  admission plugin or quota refused it), reports on its owner or Namespace instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import logging
import os
import secrets
import socket
import time
import urllib.parse
from collections.abc import Callable, Sequence

from muster.kernel import observations
from muster.platform import kubeapi, statechanges

__all__ = ["REPORTING_CONTROLLER", "EventRecorder", "reporting_instance"]

logger = logging.getLogger("muster.events")

REPORTING_CONTROLLER = "muster.dev/operator"
APPEAR_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)

Outcome = Callable[[str], None]  # "created" | "updated" | "dropped" | "failed"


def reporting_instance() -> str:
    """This replica's name: the pod name (``POD_NAME``, ``POD_ID``) or the host name."""
    name = os.environ.get("POD_NAME") or os.environ.get("POD_ID") or socket.gethostname()
    return name[:128]


def micro_time(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _path(ref: observations.ObjectRef) -> str:
    group, _, version = ref.api_version.rpartition("/")
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    plural = _PLURALS.get(ref.kind) or _plural(ref.kind)
    name = urllib.parse.quote(ref.name, safe="")
    if ref.namespace and ref.kind != "Namespace":
        return f"{base}/namespaces/{urllib.parse.quote(ref.namespace, safe='')}/{plural}/{name}"
    return f"{base}/{plural}/{name}"


_PLURALS = {"Namespace": "namespaces", "Pod": "pods", "ReplicaSet": "replicasets"}


def _plural(kind: str) -> str:
    """The resource name the way ``kubectl`` guesses it: ImagePolicy -> imagepolicies."""
    lower = kind.lower()
    if lower.endswith("y") and lower[-2:-1] not in ("a", "e", "i", "o", "u"):
        return lower[:-1] + "ies"
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    return lower + "s"


@dataclasses.dataclass(frozen=True, slots=True)
class _Pending:
    notice: observations.Notice
    attempt: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class _Flush:
    key: observations.SeriesKey
    notice: observations.Notice
    target: observations.ObjectRef


class _TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self._clock = rate, float(burst), clock
        self._tokens = float(burst)
        self._stamp = clock()

    def wait(self) -> float:
        """Seconds until a token is free (0: taken now)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


class EventRecorder:
    """``recorder.submit(notice)`` from anywhere on the loop; ``start()``/``stop()`` the worker."""

    def __init__(
        self,
        kube: kubeapi.KubeApi,
        *,
        instance: str | None = None,
        queue_size: int = 1000,
        book: observations.SeriesBook | None = None,
        rate: float = 10.0,
        burst: int = 50,
        appear_delays: Sequence[float] = APPEAR_DELAYS,
        outcome: Outcome | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.instance = instance or reporting_instance()
        self.book = book or observations.SeriesBook()
        self.appear_delays = tuple(appear_delays)
        self._queue: asyncio.Queue[_Pending | _Flush] = asyncio.Queue(maxsize=queue_size)
        self._bucket = _TokenBucket(rate, burst, clock)
        self._outcome = outcome or (lambda _: None)
        self._clock = clock
        self._worker: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._flushing: set[observations.SeriesKey] = set()
        self._owners: collections.OrderedDict[str, observations.ObjectRef | None] = (
            collections.OrderedDict()
        )

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name="muster-events")

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def drain(self) -> None:
        """Wait until everything queued now has been handled (tests, shutdown)."""
        await self._queue.join()

    # -- admission side ---------------------------------------------------------------------

    def submit(self, notice: observations.Notice) -> bool:
        """Queue a notice without waiting; False (and counted as dropped) when the queue is full."""
        return self._put(_Pending(notice))

    def _put(self, item: _Pending | _Flush) -> bool:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._outcome("dropped")
            return False
        return True

    def _later(self, delay: float, item: _Pending | _Flush) -> None:
        if len(self._timers) >= self._queue.maxsize:  # bounded like the queue
            self._outcome("dropped")
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            self._put(item)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    # -- worker -----------------------------------------------------------------------------

    async def _work(self) -> None:
        statechanges.reads_aside()  # the objects Events are about are not what gates read
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, _Pending):
                    await self._handle(item)
                else:
                    self._flushing.discard(item.key)
                    await self._flush(item.key, item.notice, item.target)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad Event must not stop the others
                logger.exception("could not post an Event")
                self._outcome("failed")
            finally:
                self._queue.task_done()

    async def _handle(self, item: _Pending) -> None:
        notice = item.notice
        target: observations.ObjectRef | None
        if notice.delivery is observations.Delivery.WHEN_CREATED:
            target = await self._lookup(notice.target)
            if target is None:
                if item.attempt < len(self.appear_delays):
                    self._later(
                        self.appear_delays[item.attempt],
                        _Pending(notice, item.attempt + 1),
                    )
                    return
                target = await self._resolve(notice.fallback or notice.target, notice)
        else:
            target = await self._resolve(notice.target, notice)
        if target is None:
            logger.warning("no object to report %s on; dropped", notice.reason)
            self._outcome("dropped")
            return
        key = observations.series_key(notice, target)
        self.book.observe(key, self._clock())
        await self._flush(key, notice, target)

    async def _lookup(self, ref: observations.ObjectRef) -> observations.ObjectRef | None:
        """The object with its uid, or None when it does not exist (or cannot be read)."""
        try:
            found = await self.kube.get(_path(ref))
        except kubeapi.ApiError as error:
            if error.status != 404:
                logger.warning("cannot read %s %s: %s", ref.kind, ref.name, error)
            return None
        metadata = found.get("metadata") or {}
        return dataclasses.replace(ref, uid=str(metadata.get("uid") or ""))

    async def _resolve(
        self, ref: observations.ObjectRef, notice: observations.Notice
    ) -> observations.ObjectRef | None:
        namespace = observations.namespace_ref(notice.namespace) if notice.namespace else None
        if ref.kind == "ReplicaSet" and ref.api_version == "apps/v1":
            found = await self._climb(ref)
        elif ref.uid:
            return ref
        else:
            found = await self._lookup(ref)
        if found is not None or namespace is None or ref == namespace:
            return found
        return await self._lookup(namespace)

    async def _climb(self, ref: observations.ObjectRef) -> observations.ObjectRef | None:
        """A ReplicaSet's controller (its Deployment), else the ReplicaSet itself."""
        cache_key = ref.uid or "/".join(ref.identity)
        if cache_key in self._owners:
            self._owners.move_to_end(cache_key)
            return self._owners[cache_key]
        try:
            replica_set = await self.kube.get(_path(ref))
        except kubeapi.ApiError as error:
            if error.status != 404:
                logger.warning("cannot read ReplicaSet %s: %s", ref.name, error)
            return None
        metadata = replica_set.get("metadata") or {}
        owner = observations.controller_owner(metadata, ref.namespace)
        resolved = owner or dataclasses.replace(ref, uid=str(metadata.get("uid") or ""))
        self._owners[cache_key] = resolved
        while len(self._owners) > 1024:
            self._owners.popitem(last=False)
        return resolved

    async def _flush(
        self,
        key: observations.SeriesKey,
        notice: observations.Notice,
        target: observations.ObjectRef,
    ) -> None:
        due = self.book.due(key, self._clock())
        if due is None:
            return
        if isinstance(due, float):
            if key not in self._flushing:
                self._flushing.add(key)
                self._later(due, _Flush(key, notice, target))
            return
        wait = self._bucket.wait()
        while wait > 0:
            await asyncio.sleep(wait)
            wait = self._bucket.wait()
        # Events about cluster-scoped objects (Nodes, policies) live in "default", as the API
        # asks (it refuses them anywhere else).
        namespace = target.namespace or "default"
        collection = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
        if due.name is not None:
            try:
                await self.kube.patch(
                    f"{collection}/{due.name}",
                    {
                        "series": {
                            "count": due.count,
                            "lastObservedTime": micro_time(due.last),
                        }
                    },
                )
            except kubeapi.ApiError as error:
                if error.status != 404:
                    raise
                self.book.forget(key)  # expired or deleted: start a new Event
                return await self._flush(key, notice, target)
            self.book.written(key, due, due.name, self._clock())
            self._outcome("updated")
            return
        name = f"{target.name[:200]}.{secrets.token_hex(8)}"
        body: dict[str, object] = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "eventTime": micro_time(due.first),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self.instance,
            "action": notice.action,
            "reason": notice.reason,
            "type": notice.type.value,
            "note": notice.note,
            "regarding": target.body(),
        }
        if due.count > 1:
            body["series"] = {"count": due.count, "lastObservedTime": micro_time(due.last)}
        await self.kube.create(collection, body)
        self.book.written(key, due, name, self._clock())
        self._outcome("created")
