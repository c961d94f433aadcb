"""Every webhook request is timed end to end and its errors counted once, through the real
aiohttp server: those cut off at the deadline, those a gate failed on, malformed ones and those
the pipeline itself failed on (answered fail-closed)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from muster.admission import observer as observability
from muster.admission import pipeline as admissions
from muster.admission import server as webhooks
from muster.images.rules import pinning
from muster.kernel import findings, gates, reviews
from muster.platform import metrics
from tests.unit.admission.test_admission import PINNED, BrokenGate, SlowGate, pod_review

pytestmark = pytest.mark.unit

BODY = json.dumps(pod_review({"containers": [{"name": "a", "image": PINNED}]})).encode()


class OtherSlowGate(SlowGate):
    name = "other-slow"


class FailingPipeline(admissions.Pipeline):
    async def judge(self, *args: Any, **kwargs: Any) -> tuple[reviews.Response, str | None]:
        raise RuntimeError("a bug in the pipeline")


def pipeline(m: metrics.Metrics, *active: Any, deadline: float = 8.0) -> admissions.Pipeline:
    return admissions.Pipeline(
        active_gates=active,
        deadline=deadline,
        observers=[observability.DecisionObserver(m)],
        request_observers=[m],
    )


async def _post(judge: admissions.Pipeline, body: bytes, path: str) -> tuple[int, Any]:
    runner = web.AppRunner(webhooks.build_app(judge), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{port}{path}", data=body) as answer,
        ):
            text = await answer.text()
            return answer.status, json.loads(text) if answer.status == 200 else text
    finally:
        await runner.cleanup()


def post(judge: admissions.Pipeline, body: bytes = BODY, path: str = "/validate/enforce") -> Any:
    return asyncio.run(_post(judge, body, path))


def sample(m: metrics.Metrics, name: str, **labels: str) -> float:
    value = m.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def errors(m: metrics.Metrics) -> dict[tuple[str, str, str], float]:
    """The non-zero per-request error counts, by (phase, mode, reason)."""
    found: dict[tuple[str, str, str], float] = {}
    for family in m.registry.collect():
        for s in family.samples:
            if s.name == "muster_admission_request_errors_total" and s.value:
                found[(s.labels["phase"], s.labels["mode"], s.labels["reason"])] = s.value
    return found


def test_a_request_cut_off_at_the_deadline_is_timed_and_counted_once() -> None:
    m = metrics.Metrics()
    status, answer = post(
        pipeline(m, pinning.PinningGate(), SlowGate(), OtherSlowGate(), deadline=0.2)
    )
    assert status == 200 and answer["response"]["allowed"] is False
    labels = {"phase": "validate", "mode": "enforce"}
    assert sample(m, "muster_admission_request_duration_seconds_count", **labels) == 1
    seconds = sample(m, "muster_admission_request_duration_seconds_sum", **labels)
    assert 0.2 <= seconds < 2
    # Two gates ran out of time: one request, one error.
    assert errors(m) == {("validate", "enforce", "DeadlineExceeded"): 1}
    # The cut-off gates' durations reached the observers (they used to arrive after them).
    for gate in ("slow", "other-slow"):
        assert sample(m, "muster_admission_duration_seconds_count", gate=gate) == 1
        assert sample(m, "muster_admission_duration_seconds_sum", gate=gate) >= 0.2
        assert sample(m, "muster_admission_duration_seconds_bucket", gate=gate, le="0.1") == 0


def test_a_failing_gate_is_one_internal_error_in_warn_mode_too() -> None:
    m = metrics.Metrics()
    status, answer = post(pipeline(m, BrokenGate(), pinning.PinningGate()), path="/validate/warn")
    assert status == 200 and answer["response"]["allowed"] is True  # warn: admitted, warned
    assert errors(m) == {("validate", "warn", "InternalError"): 1}
    labels = {"phase": "validate", "mode": "warn"}
    assert sample(m, "muster_admission_request_duration_seconds_count", **labels) == 1


def test_a_clean_request_is_timed_without_an_error() -> None:
    m = metrics.Metrics()
    status, answer = post(pipeline(m, pinning.PinningGate()), path="/mutate/enforce")
    assert status == 200 and answer["response"]["allowed"] is True
    assert (
        sample(m, "muster_admission_request_duration_seconds_count", phase="mutate", mode="enforce")
        == 1
    )
    assert errors(m) == {}


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{not json", 400), (json.dumps({"kind": "AdmissionReview"}).encode(), 200)],
)
def test_malformed_requests_are_timed_and_counted(body: bytes, status: int) -> None:
    m = metrics.Metrics()
    answered, _ = post(pipeline(m, pinning.PinningGate()), body)
    assert answered == status
    assert errors(m) == {("validate", "enforce", "MalformedReview"): 1}
    labels = {"phase": "validate", "mode": "enforce"}
    assert sample(m, "muster_admission_request_duration_seconds_count", **labels) == 1


def test_a_pipeline_failure_is_answered_fail_closed_and_counted() -> None:
    m = metrics.Metrics()
    failing = FailingPipeline(active_gates=(), request_observers=[m])
    status, answer = post(failing)
    assert status == 200
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 500
    assert errors(m) == {("validate", "enforce", "PipelineFailed"): 1}


def test_a_failing_request_observer_never_changes_the_answer() -> None:
    class Broken:
        def answered(self, *args: object) -> None:
            raise RuntimeError("observer bug")

    judge = admissions.Pipeline(active_gates=(pinning.PinningGate(),), request_observers=[Broken()])
    status, answer = post(judge)
    assert status == 200 and answer["response"]["allowed"] is True


def test_buckets_resolve_the_deadline_and_the_webhook_timeout() -> None:
    for edge in (2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 30):
        assert edge in metrics.REQUEST_BUCKETS
    assert list(metrics.REQUEST_BUCKETS) == sorted(metrics.REQUEST_BUCKETS)


def test_request_series_exist_at_zero_for_every_phase_mode_and_reason() -> None:
    m = metrics.Metrics()
    for phase in gates.Phase:
        for mode in findings.Mode:
            labels = {"phase": phase.value, "mode": mode.value}
            assert (
                m.registry.get_sample_value(
                    "muster_admission_request_duration_seconds_count", labels
                )
                == 0
            )
            for reason in metrics.REQUEST_ERRORS:
                assert (
                    m.registry.get_sample_value(
                        "muster_admission_request_errors_total", {**labels, "reason": reason}
                    )
                    == 0
                )
    assert metrics.REQUEST_ERRORS == admissions.REQUEST_ERRORS
