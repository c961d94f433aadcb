"""A drift pass lets admission requests go first, and still ends while requests keep coming."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from muster.admission import pipeline as admissions
from muster.admission import server
from muster.app import runtime
from muster.drift import controller as drift_controller
from muster.drift.rules import passes as drift
from muster.kernel import findings, gates, subjects
from muster.platform import objectstore, registries

pytestmark = pytest.mark.unit


class Counting:
    """A gate that notes whether an admission request was being judged when it ran."""

    name = "images"

    def __init__(self) -> None:
        self.pipeline: admissions.Pipeline | None = None
        self.seen: list[int] = []

    async def judge(self, subject: subjects.Subject, phase: gates.Phase) -> gates.GateResult:
        assert self.pipeline is not None
        self.seen.append(self.pipeline.reviewing)
        return gates.GateResult()


def setup() -> tuple[drift_controller.DriftController, admissions.Pipeline, Counting]:
    settings = runtime.OperatorSettings(webhook=server.WebhookSettings())
    services: Any = runtime.Services(
        settings=settings,
        kube=objectstore.ObjectStore([]),
        registries=registries.RegistryClient(settings.registry),
    )
    gate = Counting()
    pipeline = gate.pipeline = admissions.Pipeline(active_gates=[gate])
    rules = drift.DriftRules(checks=("images",), not_drift=frozenset())
    return drift_controller.DriftController(services, rules=rules, interval=300), pipeline, gate


def pods(count: int) -> list[drift.Candidate]:
    return [
        (
            {
                "metadata": {"name": f"p{i}", "namespace": "team", "uid": f"u{i}"},
                "spec": {"containers": [{"name": "c", "image": "registry.example/a:1"}]},
            },
            findings.Mode.ENFORCE,
        )
        for i in range(count)
    ]


async def test_pods_wait_while_a_request_is_being_judged() -> None:
    controller, pipeline, gate = setup()
    pipeline.reviewing = 1  # a request is being judged
    passing = asyncio.create_task(controller._judge_all(pipeline, pods(8)))
    await asyncio.sleep(0.002)
    assert gate.seen == []  # every worker waits for it
    pipeline.reviewing = 0
    assert await passing == [()] * 8
    assert gate.seen == [0] * 8


async def test_a_stream_of_requests_slows_a_pass_but_never_stops_it() -> None:
    controller, pipeline, gate = setup()
    pipeline.reviewing = 1  # and it never ends
    async with asyncio.timeout(5):
        results = await controller._judge_all(pipeline, pods(8))
    assert results == [()] * 8
    assert gate.seen == [1] * 8
