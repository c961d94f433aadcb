"""Hostile AdmissionReview bodies through the real webhook HTTP handler (aiohttp, served
in-process on loopback): never a 5xx, a traceback or a hang, and never an allow of a pod that
policy forbids. Example counts are modest for CI; MUSTER_FUZZ_EXAMPLES=5000 runs longer
(see docs/security.md)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muster.admission import pipeline as admissions
from muster.admission import server as webhooks
from muster.images.rules import pinning

pytestmark = pytest.mark.unit

EXAMPLES = int(os.environ.get("MUSTER_FUZZ_EXAMPLES", "80"))


class Server:
    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        pipeline = admissions.Pipeline(
            active_gates=(pinning.PinningGate(),), own_namespace="muster-system", deadline=1.0
        )
        runner = web.AppRunner(webhooks.build_app(pipeline), handle_signals=False)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(runner.cleanup())
            self._loop.close()

    def __enter__(self) -> Server:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def post(self, path: str, body: bytes) -> tuple[int, bytes, float]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        started = time.monotonic()
        try:
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            return answer.status, answer.read(), time.monotonic() - started
        finally:
            connection.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server() as running:
        yield running


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def _check(status: int, body: bytes, seconds: float) -> dict[str, Any] | None:
    assert status in (200, 400, 404, 413), (status, body[:200])
    assert b"Traceback" not in body
    assert seconds < 3
    if status != 200:
        return None
    answer = json.loads(body)
    assert isinstance(answer["response"]["allowed"], bool)
    return dict(answer["response"])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        JSON.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
        st.builds(
            lambda request: json.dumps(
                {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
            ).encode(),
            JSON,
        ),
    )
)
def test_garbage_is_never_allowed_in_enforce(server: Server, body: bytes) -> None:
    answer = _check(*server.post("/validate/enforce", body))
    if answer is not None:
        assert answer["allowed"] is False, answer


CONTAINER_EXTRAS = st.dictionaries(
    st.sampled_from(["ports", "env", "command", "args", "resources", "weird", "image "]),
    JSON,
    max_size=3,
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    extras=st.lists(CONTAINER_EXTRAS, min_size=1, max_size=3),
    hostile_image=st.one_of(
        st.just("registry.example/app:v1"),
        st.text(max_size=60),
        JSON,
        st.just("registry.example/app@sha256:" + "z" * 64),
        st.just("registry.example/app@sha256:" + "a" * 63),
    ),
    spot=st.sampled_from(["containers", "initContainers", "ephemeralContainers"]),
    annotations=st.dictionaries(st.text(max_size=30), st.text(max_size=30), max_size=3),
)
def test_a_pod_with_an_unpinned_or_hostile_image_is_never_allowed(
    server: Server,
    extras: list[dict[str, Any]],
    hostile_image: Any,
    spot: str,
    annotations: dict[str, str],
) -> None:
    pinned = "registry.example/app@sha256:" + "a" * 64
    containers = [{**extra, "name": f"c{i}", "image": pinned} for i, extra in enumerate(extras)]
    spec: dict[str, Any] = {"containers": containers}
    spec.setdefault(spot, []).append({"name": "hostile", "image": hostile_image})
    annotations.pop("muster.dev/exemption", None)
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team",
            "operation": "CREATE",
            "userInfo": {"username": "mallory"},
            "object": {"metadata": {"name": "p", "annotations": annotations}, "spec": spec},
        },
    }
    answer = _check(*server.post("/validate/enforce", json.dumps(review).encode()))
    assert answer is not None
    assert answer["uid"] == "u-1"
    assert answer["allowed"] is False, answer
    warned = _check(*server.post("/validate/warn", json.dumps(review).encode()))
    assert warned is not None
    assert warned["allowed"] is True
    assert warned.get("warnings"), warned


def test_an_oversized_body_is_refused_not_buffered(server: Server) -> None:
    status, _, seconds = server.post("/validate/enforce", b"[" + b"1," * (4 * 1024 * 1024) + b"1]")
    assert status == 413
    assert seconds < 5
