"""Hostile registry answers: OCI manifests, indexes and referrer lists of any shape, served by
an in-process HTTP server, read by the real registry client. The answer is a value or a
RegistryError naming the object, in bounded time: never another exception."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muster.platform import registries

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "a" * 64


class Hostile:
    def __init__(self) -> None:
        self.body = b""
        self.content_type = "application/vnd.oci.image.index.v1+json"
        self.status = 200
        self.host = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        return web.Response(
            status=self.status, body=self.body, headers={"Content-Type": self.content_type}
        )

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.host = f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(runner.cleanup())
            self._loop.close()

    def __enter__(self) -> Hostile:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    with Hostile() as server:
        yield server


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)
MANIFESTS = st.one_of(
    st.binary(max_size=300),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"schemaVersion": st.integers(), "mediaType": JSON, "manifests": JSON, "layers": JSON}
    ).map(lambda v: json.dumps(v).encode()),
)


async def _read(host: str) -> list[Any]:
    settings_ = registries.RegistrySettings(
        insecure_registries=frozenset({host}), max_attempts=1, request_timeout=2
    )
    answers: list[Any] = []
    async with registries.RegistryClient(settings_) as client:
        for call in (
            lambda: client.manifest(host, "r/app", "v1"),
            lambda: client.referrers(host, "r/app", DIGEST),
            lambda: client.referrers(host, "r/app", DIGEST, "application/x"),
        ):
            try:
                answer = await call()
                if isinstance(answer, registries.Manifest):
                    answer.json()
                answers.append(answer)
            except registries.RegistryError as error:
                assert "r/app" in str(error) or "manifest" in str(error), error
                answers.append(error)
    return answers


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=MANIFESTS,
    status=st.sampled_from([200, 200, 200, 404, 400, 405, 418]),
    content_type=st.sampled_from(
        [
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
            "text/html",
            "",
        ]
    ),
)
def test_any_registry_answer_is_a_value_or_a_registry_error(
    hostile: Hostile, body: bytes, status: int, content_type: str
) -> None:
    hostile.body, hostile.status, hostile.content_type = body, status, content_type
    started = time.monotonic()
    answers = asyncio.run(_read(hostile.host))
    assert time.monotonic() - started < 5
    assert len(answers) == 3
    for answer in answers[1:]:
        if isinstance(answer, list):
            assert all(isinstance(d, dict) for d in answer)
