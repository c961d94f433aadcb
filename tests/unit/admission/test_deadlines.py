"""The admission deadline agrees with the webhook timeout: derived from it, refused at or past
it, and cut per request to the time the apiserver says it has left (its ``?timeout=``)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from muster.admission import pipeline as admissions
from muster.admission import server
from muster.app import runtime
from muster.images.rules import pinning
from muster.kernel import deadlines, findings, gates, subjects
from tests import commandline
from tests.unit.admission.test_admission import PINNED, SlowGate, pod_review

pytestmark = pytest.mark.unit

# The margin is max(1 s, 20%), at most half the timeout: chosen values, written out.
EXPECTED = {1: 0.5, 2: 1.0, 3: 2.0, 4: 3.0, 5: 4.0, 6: 4.8, 10: 8.0, 15: 12.0, 20: 16.0, 30: 24.0}


@pytest.mark.parametrize(("timeout", "deadline"), sorted(EXPECTED.items()))
def test_the_deadline_is_derived_from_the_timeout(timeout: int, deadline: float) -> None:
    assert deadlines.admission_deadline(timeout) == deadline
    deadlines.check(deadline, timeout)  # what is derived is always accepted


def test_the_default_deadline_is_the_default_timeouts() -> None:
    assert admissions.DEFAULT_DEADLINE_SECONDS == 8.0
    assert runtime.OperatorSettings.__dataclass_fields__["admission_deadline"].default == 8.0


@given(st.floats(min_value=0.001, max_value=30))
def test_a_derived_deadline_always_leaves_room(timeout: float) -> None:
    deadline = deadlines.admission_deadline(timeout)
    assert 0 < deadline < timeout
    assert timeout - deadline >= min(deadlines.MIN_MARGIN_SECONDS, timeout / 2)
    assert timeout - deadline >= timeout / 5 - 1e-9
    # A longer timeout never gives a shorter deadline.
    assert deadlines.admission_deadline(timeout + 0.5) >= deadline


@pytest.mark.parametrize(
    ("deadline", "timeout", "message"),
    [
        (8, 5, "the admission deadline (8s) must be below the webhook timeout (5s)"),
        (5, 5, "must be below the webhook timeout (5s)"),
        (0, 10, "must be positive, not 0s"),
        (-1, 10, "must be positive"),
        (float("nan"), 10, "must be positive"),
        (float("inf"), 10, "must be positive"),
        (4, 0, "must be 1 to 30 seconds"),
        (4, 31, "must be 1 to 30 seconds"),
    ],
)
def test_deadlines_the_apiserver_would_not_wait_for_are_refused(
    deadline: float, timeout: float, message: str
) -> None:
    with pytest.raises(ValueError) as raised:
        deadlines.check(deadline, timeout)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("1m0s", 60.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("", None),
        ("10", None),
        ("ten seconds", None),
        ("-1s", None),
        ("0s", None),
        ("10s;rm", None),
        ("1" * 100 + "s", None),
    ],
)
def test_the_apiservers_timeout_parameter(text: str, seconds: float | None) -> None:
    assert deadlines.parse_go_duration(text) == seconds


# -- through the real webhook handler ------------------------------------------------------


class QuickGate:
    name = "quick"

    async def judge(self, subject: subjects.Subject, phase: gates.Phase) -> gates.GateResult:
        return gates.GateResult()


async def _post(deadline: float, query: str) -> tuple[dict[str, Any], float]:
    pipeline = admissions.Pipeline(
        active_gates=(pinning.PinningGate(), SlowGate()),
        own_namespace="muster-system",
        deadline=deadline,
    )
    runner = web.AppRunner(server.build_app(pipeline), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    body = json.dumps(pod_review({"containers": [{"name": "a", "image": PINNED}]}))
    try:
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            async with session.post(
                f"http://127.0.0.1:{port}/validate/enforce{query}", data=body
            ) as answer:
                assert answer.status == 200
                payload = await answer.json()
            return payload["response"], time.monotonic() - started
    finally:
        await runner.cleanup()


def test_a_request_stops_in_time_for_the_apiserver() -> None:
    # Started with an 8 s deadline, but this webhook call has 2 s: the gates get 1 s.
    response, seconds = asyncio.run(_post(8.0, "?timeout=2s"))
    assert response["allowed"] is False
    assert "no answer within 1s" in response["status"]["message"]
    assert seconds < 2


@pytest.mark.parametrize("query", ["?timeout=30s", "?timeout=banana", ""])
def test_a_shorter_configured_deadline_still_holds(query: str) -> None:
    response, seconds = asyncio.run(_post(0.3, query))
    assert response["allowed"] is False
    assert "no answer within 0.3s" in response["status"]["message"]
    assert seconds < 2


def test_the_time_left_is_passed_to_the_pipeline() -> None:
    data = pod_review({"containers": [{"name": "a", "image": PINNED}]})
    pipeline = admissions.Pipeline(active_gates=(QuickGate(), SlowGate()), deadline=8.0)
    answer = asyncio.run(
        pipeline.review(data, gates.Phase.VALIDATE, findings.Mode.WARN, time_left=1.0)
    )
    assert answer["response"]["allowed"] is True
    assert answer["response"]["warnings"] == [
        "muster: gate slow: no answer within 0.5s (registry slow or unreachable?); try again "
        "[DeadlineExceeded]"
    ]


# -- muster run --------------------------------------------------------------------------------


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> float | None:
    code, seen = commandline.run_settings(tmp_path, monkeypatch, *args)
    if code != 0:
        assert code == 2
        return None
    (settings,) = seen
    return settings.admission_deadline


@pytest.mark.parametrize(
    ("args", "deadline"),
    [
        ((), 8.0),
        (("--webhook-timeout=5",), 4.0),
        (("--webhook-timeout=1",), 0.5),
        (("--webhook-timeout=30",), 24.0),
        (("--webhook-timeout=5", "--admission-deadline=4.5"), 4.5),
        (("--admission-deadline=3",), 3.0),
    ],
)
def test_muster_run_derives_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], deadline: float
) -> None:
    assert _run(tmp_path, monkeypatch, *args) == deadline


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--webhook-timeout=5", "--admission-deadline=8"),
            "the admission deadline (8s) must be below the webhook timeout (5s)",
        ),
        (("--admission-deadline=10",), "must be below the webhook timeout (10s)"),
        (("--admission-deadline=0",), "must be positive"),
        (("--webhook-timeout=31",), "must be 1 to 30 seconds"),
        (("--webhook-timeout=0",), "must be 1 to 30 seconds"),
    ],
)
def test_muster_run_refuses_a_deadline_past_the_timeout(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    assert _run(tmp_path, monkeypatch, *args) is None
    error = capsys.readouterr().err
    assert message in error
    assert error.startswith("muster: error: --admission-deadline / --webhook-timeout: ")
