"""Drift of running pods: existing pods re-judged by the admission gates, on the active peer.

Every ``--drift-interval`` seconds, and :data:`DEBOUNCE_SECONDS` after the last change to an
ImagePolicy, GPUStackPolicy, Model or ModelPolicy (a burst of changes is one pass, delayed at
most :data:`MAX_DELAY_SECONDS`), the controller:

1. lists the namespaces and keeps those admission judges (``muster.kernel.scopes.watched_mode``),
2. lists their pods and keeps the running ones (``muster.drift.rules.passes.candidates``),
3. builds for each the Subject admission would build for its CREATE and runs the drift checks'
   gates in the VALIDATE phase through the admission pipeline (same gates, same caches, same
   deadline; :data:`CONCURRENCY` pods at a time),
4. sets ``muster_drifted_pods{check}`` to the pods with at least one finding per check, and
   posts one Warning Event ``PodDrifted`` on each drifted pod naming the findings (repeats fold
   into the Event's series),
5. hands what it found (:class:`muster.drift.rules.passes.PassOutcome`) to its listeners
   (``muster.reports`` writes PolicyReports from it). With :attr:`DriftController.audit` set,
   the pass also judges the running pods of namespaces that have not opted in
   (``passes.audited``) for those listeners only: no Event, no gauge.

Only the replica that runs the controllers does this: the policy watches run on the active kopf
peer only, and the periodic pass checks the peering object with kopf's own rule first. Nothing
here runs on the admission path.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import kopf

from muster.admission import pipeline as admissions
from muster.drift.rules import passes as drift
from muster.kernel import findings, gates, scopes, subjects
from muster.platform import events, kubeapi, namespaces, tasks
from muster.platform.services import Services, SharedSettings

__all__ = [
    "AREA",
    "CONCURRENCY",
    "DEBOUNCE_SECONDS",
    "MAX_DELAY_SECONDS",
    "PIPELINE_AREA",
    "DriftController",
    "Listener",
    "active_replica",
    "register_controller",
]


class DriftSettings(SharedSettings, Protocol):
    """What the drift controller reads: its interval and the operator's peering."""

    @property
    def drift_interval(self) -> float: ...

    @property
    def peering(self) -> str | None: ...

    @property
    def priority(self) -> int: ...


logger = logging.getLogger("muster.drift")

AREA = "drift"  # where register_controller leaves the controller in Services
PIPELINE_AREA = "pipeline"  # where build_pipeline leaves the admission pipeline in Services
DEBOUNCE_SECONDS = 5.0
MAX_DELAY_SECONDS = 30.0
CONCURRENCY = 4
# Before each pod, a pass waits up to YIELD_STEPS x YIELD_SECONDS while admission requests are
# being judged: never longer, so a steady stream of requests slows a pass but cannot stop it.
YIELD_STEPS = 10
YIELD_SECONDS = 0.001
PEERINGS = "/apis/kopf.dev/v1/clusterkopfpeerings"
# Called after each pass with what it found; a failing listener is logged, never fatal.
Listener = Callable[[drift.PassOutcome], Awaitable[None]]
# Policies whose changes can make admitted pods fail now: (group, version, plural).


class DriftController:
    """One per process; :meth:`poke` from the policy watches, :meth:`start` the loop."""

    def __init__(
        self,
        services: Services[DriftSettings],
        *,
        rules: drift.DriftRules,
        interval: float,
        debounce: float = DEBOUNCE_SECONDS,
        max_delay: float = MAX_DELAY_SECONDS,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.services = services
        self.rules = rules
        self.interval = interval
        self.debounce = debounce
        self.max_delay = max_delay
        self.concurrency = concurrency
        self.passes = 0
        # Also judge namespaces in reach that have not opted in, for the listeners only.
        self.audit = False
        self.listeners: list[Listener] = []
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def poke(self) -> None:
        """A policy changed: re-judge soon (no I/O, no waiting)."""
        self._poked.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="muster-drift")

    async def stop(self) -> None:
        await tasks.cancel_and_wait([self._task])
        self._task = None

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), self.interval)
            if self._poked.is_set():
                await self._settle()
            try:
                if await self.active():
                    await self.run_pass()
            except asyncio.CancelledError:
                raise
            except (kubeapi.ApiError, OSError, TimeoutError) as error:
                logger.warning("drift pass failed, trying again at the next one: %s", error)
            except Exception:  # one failed pass must not stop the next
                logger.exception("drift pass failed")

    async def _settle(self) -> None:
        """Wait until no poke came for ``debounce`` seconds (at most ``max_delay``)."""
        deadline = time.monotonic() + self.max_delay
        while self._poked.is_set():
            self._poked.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), min(self.debounce, left))

    async def active(self) -> bool:
        """Whether this replica runs the controllers (always, without peering)."""
        return await active_replica(self.services)

    # -- one pass ---------------------------------------------------------------------------

    async def run_pass(self) -> dict[str, int]:
        """Re-judge every running pod in scope; returns the counts per check it set."""
        pipeline = self.services.areas.get(PIPELINE_AREA)
        if not isinstance(pipeline, admissions.Pipeline):
            logger.warning("no admission pipeline in this process: no drift pass")
            return {}
        started = time.monotonic()
        kube = self.services.kube
        listed = await kube.get("/api/v1/namespaces")
        labels: dict[str, Mapping[str, str]] = {}
        index = namespaces.index_for(self.services)
        for item in listed.get("items") or ():
            metadata = item.get("metadata") or {}
            name = str(metadata.get("name", ""))
            labels[name] = metadata.get("labels") or {}
            index.update(name, labels[name])  # the gates the pass runs read them from here
        settings = self.services.settings
        scoped = [
            name
            for name, found in labels.items()
            if scopes.watched_mode(
                name,
                found,
                own_namespace=settings.own_namespace,
                selector=settings.namespace_selector,
                enforcement=settings.enforcement,
            )
            is not None
        ]
        audited = [
            name
            for name, found in labels.items()
            if self.audit
            and drift.audited(
                name,
                found,
                own_namespace=settings.own_namespace,
                selector=settings.namespace_selector,
                enforcement=settings.enforcement,
            )
        ]
        limit = asyncio.Semaphore(self.concurrency)
        unlisted: set[str] = set()

        async def pods_of(namespace: str) -> list[Mapping[str, Any]]:
            async with limit:
                try:
                    found = await kube.get(f"/api/v1/namespaces/{namespace}/pods")
                except kubeapi.ApiError as error:
                    if error.status != 404:
                        logger.warning("cannot list the pods of %s: %s", namespace, error)
                        unlisted.add(namespace)
                    return []
            items = list(found.get("items") or ())
            for item in items:
                # Nothing judges them and a pass holds every pod at once: often half a pod.
                (item.get("metadata") or {}).pop("managedFields", None)
            return items

        listed_pods = await asyncio.gather(*map(pods_of, [*scoped, *audited]))
        pods = [pod for each in listed_pods for pod in each]
        chosen = drift.candidates(
            pods,
            labels,
            own_namespace=settings.own_namespace,
            selector=settings.namespace_selector,
            enforcement=settings.enforcement,
        )

        results = await self._judge_all(pipeline, chosen)
        # Audit judges as enforcement would: what it finds is what would be denied.
        audit_pods = drift.audit_candidates(
            pods,
            labels,
            own_namespace=settings.own_namespace,
            selector=settings.namespace_selector,
            enforcement=settings.enforcement,
        )
        audit_results = await self._judge_all(
            pipeline, [(pod, findings.Mode.ENFORCE) for pod in audit_pods]
        )
        totals = drift.counts(results, self.rules.checks)
        for check, count in totals.items():
            self.services.metrics.set_drifted_pods(check, count)
        recorder = self.services.events
        drifted = [(pod, found) for (pod, _), found in zip(chosen, results, strict=True) if found]
        if recorder is not None and drifted:
            recorder.start()
            for pod, found in drifted:
                recorder.submit(drift.notice(pod, found))
        self.passes += 1
        logger.info(
            "drift pass: %d pods re-judged in %.2fs, drifted: %s%s",
            len(chosen),
            time.monotonic() - started,
            ", ".join(f"{check}={count}" for check, count in sorted(totals.items())),
            f"; audit: {len(audit_pods)} pods in {len(audited)} namespaces not opted in, "
            f"{sum(1 for found in audit_results if found)} would be denied"
            if self.audit
            else "",
        )
        if self.listeners:
            outcome = drift.PassOutcome(
                judged=(
                    *(
                        drift.Judged(pod, found)
                        for (pod, _), found in zip(chosen, results, strict=True)
                    ),
                    *(
                        drift.Judged(pod, found, audit=True)
                        for pod, found in zip(audit_pods, audit_results, strict=True)
                    ),
                ),
                namespaces={name: labels[name] for name in (*scoped, *audited)},
                checks=self.rules.checks,
                unlisted=frozenset(unlisted),
            )
            for listener in self.listeners:
                try:
                    await listener(outcome)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a reader of drift must not stop the next pass
                    logger.exception("a reader of the drift pass failed")
        return totals

    async def _judge_all(
        self, pipeline: admissions.Pipeline, chosen: Sequence[drift.Candidate]
    ) -> list[tuple[findings.Finding, ...]]:
        """Judge ``chosen`` :attr:`concurrency` at a time, results in their order: a few
        workers, not a task per pod (a pass over 10,000 pods held 10,000 tasks at once)."""
        results: list[tuple[findings.Finding, ...]] = [()] * len(chosen)
        positions = iter(range(len(chosen)))

        async def worker() -> None:
            for position in positions:
                # Admission first: a request being judged would otherwise wait for every
                # worker's pod at each of its steps (a warm judgement is all CPU).
                for _ in range(YIELD_STEPS):
                    if not pipeline.reviewing:
                        break
                    await asyncio.sleep(YIELD_SECONDS)
                pod, mode = chosen[position]
                results[position] = await self._judge(pipeline, pod, mode)

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(chosen)))))
        return results

    async def _judge(
        self, pipeline: admissions.Pipeline, pod: Mapping[str, Any], mode: findings.Mode
    ) -> tuple[findings.Finding, ...]:
        subject = subjects.from_review(
            drift.pod_review(pod),
            mode=mode,
            own_namespace=self.services.settings.own_namespace,
            template_paths=pipeline.template_paths,
            enforcement=pipeline.enforcement,
        )
        if subject is None:
            return ()
        results = await pipeline.evaluate(
            subject, gates.Phase.VALIDATE, checks=frozenset(self.rules.checks)
        )
        verdict = gates.verdict(subject, results)
        return drift.drifted((*verdict.denials, *verdict.warnings), self.rules)


async def active_replica(services: Services[DriftSettings]) -> bool:
    """Whether this replica runs the controllers (always, without peering): kopf's own rule
    over the peering object; False when it cannot be read."""
    settings = services.settings
    if settings.peering is None:
        return True
    try:
        peering = await services.kube.get(
            f"{PEERINGS}/{urllib.parse.quote(settings.peering, safe='')}"
        )
    except (kubeapi.ApiError, OSError, TimeoutError) as error:
        logger.warning("cannot read the peering object, taking this replica as standby: %s", error)
        return False
    return drift.active_peer(
        peering.get("status"), settings.priority, datetime.datetime.now(datetime.UTC)
    )


def register_controller(
    registry: kopf.OperatorRegistry,
    services: Services[DriftSettings],
    *,
    rules: drift.DriftRules,
    watched: Sequence[tuple[str, str, str]],
) -> None:
    """Re-judge running pods every interval, and soon after any ``watched`` resource changes."""
    interval = services.settings.drift_interval
    if interval <= 0:
        return  # drift detection turned off
    if services.events is None:
        services.events = events.EventRecorder(services.kube)
    controller = services.areas[AREA] = DriftController(services, rules=rules, interval=interval)

    @kopf.on.startup(registry=registry)
    async def start_drift(**_: Any) -> None:
        controller.start()

    def watch(resource: Sequence[str]) -> None:
        @kopf.on.event(*resource, id=f"drift-{resource[2]}", registry=registry)
        async def policy_changed(**_: Any) -> None:
            controller.poke()  # no I/O here: the pass runs later, once the changes settle

    for resource in watched:
        watch(resource)

    @kopf.on.cleanup(registry=registry)
    async def stop_drift(**_: Any) -> None:
        await controller.stop()
