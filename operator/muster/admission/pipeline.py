"""The admission pipeline: one request in, every gate consulted concurrently, one answer out.

Gates run under an internal deadline safely below the webhook timeout, so the apiserver never
times out on Muster: past the deadline the request is denied in enforce mode (warned about in
warn mode) with a reason that says so. A gate that raises is a bug; it never becomes an allow.
Each request's deadline is also kept below the time the apiserver says it has left (its
``timeout`` parameter, kernel/deadlines.py), whatever the configured one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
import types
from collections.abc import Callable, Coroutine, Generator, Hashable, Sequence
from typing import Any, Protocol, TypeVar

from muster.admission import verdicts as verdicts_
from muster.kernel import answers, deadlines, exemptions, findings, gates, reviews, scopes, subjects
from muster.platform import statechanges

__all__ = ["Auditor", "Observer", "Pipeline", "RequestObserver", "request_error"]

logger = logging.getLogger("muster.admission")

T = TypeVar("T")

# 8 s: below the chart's default webhook timeout of 10 s by the margin kernel/deadlines.py sets.
DEFAULT_DEADLINE_SECONDS = deadlines.admission_deadline(deadlines.DEFAULT_WEBHOOK_TIMEOUT_SECONDS)


class Observer(Protocol):
    """Told about every decision (metrics, Events). Must be cheap and must not raise."""

    def decided(
        self,
        subject: subjects.Subject,
        phase: gates.Phase,
        verdict: findings.Verdict,
        durations: dict[str, float],
    ) -> None: ...


class RequestObserver(Protocol):
    """Told about every request the webhook answered, however it ended, after the answer was
    built: its phase and mode, the seconds from arrival to answer, and why it got no real
    verdict (``request_error``), if so. Must be cheap and must not raise."""

    def answered(
        self, phase: gates.Phase, mode: findings.Mode, seconds: float, error: str | None
    ) -> None: ...


# Why a request got no real verdict, once per request whatever the number of gates involved;
# the webhook adds MalformedReview (not an AdmissionReview) and PipelineFailed (judging raised:
# the fail-closed answer).
REQUEST_ERRORS = ("DeadlineExceeded", "InternalError", "MalformedReview", "PipelineFailed")


def request_error(verdict: findings.Verdict) -> str | None:
    """``DeadlineExceeded`` when a gate ran out of time, else ``InternalError`` when one failed."""
    reasons = {finding.reason for finding in (*verdict.denials, *verdict.warnings)}
    for reason in REQUEST_ERRORS[:2]:
        if reason in reasons:
            return reason
    return None


# Told about every honoured exemption (an Event and a metric). If it raises, the request is
# denied: an exemption that cannot be audited is not granted.
Auditor = Callable[[subjects.Subject, exemptions.Exemption], None]


@dataclasses.dataclass
class Pipeline:
    active_gates: Sequence[gates.Gate]
    own_namespace: str | None = None
    deadline: float = DEFAULT_DEADLINE_SECONDS
    # Namespaces never judged besides the control plane's and Muster's own (the webhooks'
    # namespaceSelector says the same: this holds even when they are misconfigured).
    enforcement: scopes.Enforcement = scopes.NAMESPACED
    template_paths: subjects.TemplatePaths = dataclasses.field(
        default_factory=lambda: subjects.DEFAULT_TEMPLATE_PATHS
    )
    observers: list[Observer] = dataclasses.field(default_factory=list)
    request_observers: list[RequestObserver] = dataclasses.field(default_factory=list)
    # Break-glass exemptions (kernel/exemptions.py): groups whose members may use them (none:
    # exemptions are impossible) and who audits each one used.
    exemption_groups: frozenset[str] = frozenset()
    auditor: Auditor | None = None
    # The gates' results reused while nothing they read changed (admission/verdicts.py);
    # None: every request is judged.
    verdicts: verdicts_.Verdicts | None = None
    # Requests being judged right now: re-judging what exists (drift) lets them go first.
    reviewing: int = dataclasses.field(default=0, init=False, compare=False)

    async def review(
        self,
        review: reviews.Review,
        phase: gates.Phase,
        mode: findings.Mode,
        *,
        time_left: float | None = None,
    ) -> reviews.Response:
        """Judge one request; ``time_left``: the seconds the apiserver waits for this answer,
        when it said (the gates then stop in time for the answer to reach it)."""
        response, _ = await self.judge(review, phase, mode, time_left=time_left)
        return response

    async def judge(
        self,
        review: reviews.Review,
        phase: gates.Phase,
        mode: findings.Mode,
        *,
        time_left: float | None = None,
        content: bytes | None = None,
    ) -> tuple[reviews.Response, str | None]:
        """:meth:`review`, and why the answer is no real verdict (:func:`request_error`).

        ``content``: :func:`verdicts.content_key` of the request, when the caller has its body;
        with it, a verdict judged before is reused while nothing it read has changed."""
        subject = subjects.from_review(
            review,
            mode=mode,
            own_namespace=self.own_namespace,
            template_paths=self.template_paths,
            enforcement=self.enforcement,
        )
        if subject is None:
            return answers.not_judged(review), None
        deadline = self.deadline
        if time_left is not None and time_left > 0:
            deadline = min(deadline, deadlines.admission_deadline(time_left))
        durations: dict[str, float] = {}
        key = None
        if self.verdicts is not None and content is not None:
            key = (content, phase, subject.mode, datetime.datetime.now(datetime.UTC).date())
        self.reviewing += 1
        try:
            judged = await self._judged(subject, phase, durations, deadline, key)
        finally:
            self.reviewing -= 1
        results = self._exempt(subject, phase, judged)
        footer = exemptions.hint(self.exemption_groups)
        response = gates.respond(subject, results, phase, footer=footer)
        verdict = exemptions.without_used(gates.verdict(subject, results))
        for observer in self.observers:
            try:
                observer.decided(subject, phase, verdict, durations)
            except Exception:  # observability must never change a decision
                logger.exception("observer %r failed", observer)
        return response, request_error(verdict)

    async def _judged(
        self,
        subject: subjects.Subject,
        phase: gates.Phase,
        durations: dict[str, float],
        deadline: float,
        key: Hashable | None,
    ) -> list[gates.GateResult]:
        """The gates' results: reused when ``key`` names a verdict still valid, else judged
        (and kept under ``key`` when nothing changed while judging and no gate failed)."""
        if key is None or self.verdicts is None:
            return await self._run_gates(subject, phase, durations, deadline=deadline)
        started = time.perf_counter()
        reused = self.verdicts.get(key)
        if reused is not None:
            results, recording = reused
            recording.replay()
            took = time.perf_counter() - started
            for gate in self.active_gates:
                durations[gate.name] = took
            return list(results)
        epoch = statechanges.epoch()
        recording = statechanges.Recording()
        token = statechanges.recording(recording)
        try:
            results = await self._run_gates(subject, phase, durations, deadline=deadline)
        finally:
            statechanges.stop_recording(token)
        if request_error(gates.verdict(subject, results)) is None:
            self.verdicts.put(key, epoch, results, recording)
        return results

    def answered(
        self, phase: gates.Phase, mode: findings.Mode, seconds: float, error: str | None
    ) -> None:
        for observer in self.request_observers:
            try:
                observer.answered(phase, mode, seconds, error)
            except Exception:  # observability must never change an answer
                logger.exception("request observer %r failed", observer)

    async def evaluate(
        self, subject: subjects.Subject, phase: gates.Phase, *, checks: frozenset[str] | None = None
    ) -> list[gates.GateResult]:
        """The gates' results for ``subject`` (only those named in ``checks``, when given),
        under the same deadline, without observers or exemptions: for re-judging what exists
        (drift), never for answering a request."""
        chosen = [g for g in self.active_gates if checks is None or g.name in checks]
        return await self._run_gates(subject, phase, {}, chosen)

    def _exempt(
        self, subject: subjects.Subject, phase: gates.Phase, results: list[gates.GateResult]
    ) -> list[gates.GateResult]:
        decision = exemptions.decide(subject, results, self.exemption_groups, phase)
        if decision.exemption is None:
            return list(decision.results)
        try:
            if self.auditor is None:
                raise RuntimeError("no auditor configured")
            self.auditor(subject, decision.exemption)
        except Exception:  # an exemption that cannot be audited is not granted
            logger.exception("could not audit the exemption on %s", subject.display)
            failure = findings.Finding(
                check=exemptions.CHECK,
                reason="InternalError",
                subject=f"annotation {exemptions.ANNOTATION}",
                message="the exemption could not be audited, so it is not granted; "
                "see the muster operator logs",
            )
            return [*results, gates.GateResult(findings=(failure,))]
        logger.warning(
            "exemption used on %s by %s: %r (waived: %s)",
            subject.display,
            decision.exemption.user,
            decision.exemption.reason,
            ", ".join(decision.exemption.waived_checks) or "nothing",
        )
        return list(decision.results)

    async def _run_gates(
        self,
        subject: subjects.Subject,
        phase: gates.Phase,
        durations: dict[str, float],
        chosen: Sequence[gates.Gate] | None = None,
        *,
        deadline: float | None = None,
    ) -> list[gates.GateResult]:
        active = self.active_gates if chosen is None else chosen
        deadline = self.deadline if deadline is None else deadline

        async def timed(gate: gates.Gate) -> gates.GateResult:
            started = time.perf_counter()
            try:
                return await gate.judge(subject, phase)
            finally:
                # A gate cut off at the deadline was timed below, before the observers ran.
                durations.setdefault(gate.name, time.perf_counter() - started)

        began = time.perf_counter()
        # A warm gate answers without waiting for anything: its first step runs here, and only
        # a gate that really waits becomes a task (a task per gate was half the warm CPU).
        tasks = [_start(timed(gate)) for gate in active]
        if not tasks:
            return []
        waiting = [task for task in tasks if not task.done()]
        pending: set[asyncio.Future[gates.GateResult]] = set()
        if waiting:
            _, pending = await asyncio.wait(waiting, timeout=deadline)
        for gate, task in zip(active, tasks, strict=True):
            if task in pending:
                # Its own ``finally`` runs only once the cancellation is delivered, after the
                # observers have run: without this the slowest requests would go unrecorded.
                durations[gate.name] = time.perf_counter() - began
                task.cancel()
        results: list[gates.GateResult] = []
        for gate, task in zip(active, tasks, strict=True):
            if task in pending:
                results.append(
                    _failure(
                        gate,
                        "DeadlineExceeded",
                        f"no answer within {deadline:g}s "
                        "(registry slow or unreachable?); try again",
                    )
                )
            elif task.exception() is not None:
                logger.error(
                    "gate %s failed on %s", gate.name, subject.display, exc_info=task.exception()
                )
                results.append(
                    _failure(gate, "InternalError", "internal error; see the muster operator logs")
                )
            else:
                results.append(task.result())
        return results


def _start(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run ``coro`` up to its first wait now (as Python 3.12's eager tasks do): a done future
    when it needed none, else a task that carries on from where it stopped."""
    try:
        waited = coro.send(None)
    except StopIteration as done:
        finished: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        finished.set_result(done.value)
        return finished
    except Exception as error:  # the caller treats it as the task's exception
        failed: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        failed.set_exception(error)
        return failed
    return asyncio.ensure_future(_carry_on(coro, waited))


async def _carry_on(coro: Coroutine[Any, Any, T], waited: Any) -> T:
    return await _resume(coro, waited)  # a task takes a coroutine, not a generator


@types.coroutine
def _resume(coro: Coroutine[Any, Any, T], waited: Any) -> Generator[Any, Any, T]:
    """Hand the future ``coro`` waits on to the task, then pass every step (and every
    exception thrown in, such as a cancellation) on to ``coro``."""
    while True:
        try:
            sent = yield waited
        except BaseException as error:  # a cancellation too: it is delivered to coro
            try:
                waited = coro.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                waited = coro.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


def _failure(gate: gates.Gate, reason: str, message: str) -> gates.GateResult:
    return gates.GateResult(
        findings=(
            findings.Finding(
                check=gate.name, reason=reason, subject=f"gate {gate.name}", message=message
            ),
        )
    )
