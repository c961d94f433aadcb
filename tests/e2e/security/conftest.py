"""An operator of its own for the security tests: started with ``--exemption-group``, a short
``--admission-deadline`` and ``--insecure-registry`` for a fault-injecting proxy in front of the
real registry, with webhook configurations of their own that select only namespaces labelled
``muster-e2e.dev/security`` (so they never meet the session operator's).

The proxy exists because a real registry cannot be made to be down, slow, failing, throttling
or lying on demand; every answer it does not fault comes from the real registry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kubernetes import client

from muster.app import localoperator, webhookconfigs
from muster.platform import controlplane, kubesetup
from tests import kubeclients, peers
from tests.e2e.suites import mode_selector
from tests.integration.images.conftest import Signer, signers

__all__ = ["FaultProxy", "fault_proxy", "security_operator", "signers"]

OWN_NAMESPACE = "muster-security-e2e"
SELECT_LABEL = "muster-e2e.dev/security"
CONFIGURATION = "security-e2e.muster.dev"
BREAKGLASS = "muster-breakglass"
DEADLINE = 2.0

_by_mode = mode_selector(SELECT_LABEL)


def own(manifest: dict[str, Any], name: str = CONFIGURATION) -> dict[str, Any]:
    manifest = copy.deepcopy(manifest)
    manifest["metadata"]["name"] = name
    for hook in manifest["webhooks"]:
        _by_mode(hook)
    return manifest


def register(
    plane: controlplane.ControlPlane, operator: localoperator.LocalOperator, url: str | None = None
) -> None:
    ca_bundle = base64.b64encode(operator.ca_file.read_bytes()).decode("ascii")
    with contextlib.closing(kubesetup.api_client(plane.kubeconfig)) as api:
        kubesetup.ensure_namespace(api, OWN_NAMESPACE)
        for manifest in (
            webhookconfigs.validating(url or operator.url, ca_bundle, own_namespace=OWN_NAMESPACE),
            webhookconfigs.mutating(url or operator.url, ca_bundle, own_namespace=OWN_NAMESPACE),
        ):
            kubesetup.apply_webhook_configuration(api, own(manifest))


def unregister(plane: controlplane.ControlPlane) -> None:
    with contextlib.closing(kubesetup.api_client(plane.kubeconfig)) as api:
        admission: Any = client.AdmissionregistrationV1Api(api)
        with contextlib.suppress(client.ApiException):
            admission.delete_validating_webhook_configuration(CONFIGURATION)
        with contextlib.suppress(client.ApiException):
            admission.delete_mutating_webhook_configuration(CONFIGURATION)


class FaultProxy:
    """A registry front in its own thread. ``fault`` is one of None (pass through), "down"
    (connections dropped), "slow" (answers after ``delay`` s), "5xx" (503), "429" (429 with
    Retry-After: 1) or "corrupt" (content changed, so it no longer matches its digest).
    ``only``, when set, limits the fault to requests whose path contains it (e.g. "/blobs/":
    corrupt the signature payloads but nothing else)."""

    FAULTS = ("down", "slow", "5xx", "429", "corrupt")

    def __init__(self, upstream: str, delay: float = 4.0) -> None:
        self.upstream = upstream
        self.delay = delay
        self.fault: str | None = None
        self.only: str | None = None
        self.requests = 0
        self.faulted = 0
        self.host = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.host = f"127.0.0.1:{port}"
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(runner.cleanup())
            self._loop.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        fault = self.fault if self.only is None or self.only in request.path else None
        if fault is not None:
            self.faulted += 1
        if fault == "down":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=503)  # never reaches the client
        if fault == "5xx":
            return web.Response(status=503, text="registry overloaded")
        if fault == "429":
            return web.Response(status=429, headers={"Retry-After": "1"})
        if fault == "slow":
            await asyncio.sleep(self.delay)
        body = await request.read()
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method,
                f"http://{self.upstream}{request.path_qs}",
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
                data=body or None,
                allow_redirects=False,
            ) as answer,
        ):
            data = await answer.read()
            if fault == "corrupt" and data and request.method == "GET":
                data = data.replace(b"sha256", b"sha257", 1) if b"sha256" in data else data + b" "
            headers = {
                k: v
                for k, v in answer.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
            }
            return web.Response(status=answer.status, body=data, headers=headers)


@contextlib.contextmanager
def signed_image_policy(
    plane: controlplane.ControlPlane,
    prefix: str,
    images: str,
    signer: Signer,
    label: str = SELECT_LABEL,
) -> Iterator[str]:
    """An ImagePolicy ``prefix-XXXXXX`` that wants ``signer``'s signature (authority ``alice``)
    on ``images`` in namespaces carrying ``label``, for the length of the block."""
    spec = {
        "images": [images],
        "namespaceSelector": {"matchExpressions": [{"key": label, "operator": "Exists"}]},
        "authorities": [{"name": "alice", "key": {"data": signer.pem}}],
    }
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    with kubeclients.muster_object(plane, "imagepolicies", "ImagePolicy", name, spec):
        yield name


@pytest.fixture(scope="module")
def fault_proxy(registry: peers.Registry) -> Iterator[FaultProxy]:
    proxy = FaultProxy(registry.host).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def security_operator(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    fault_proxy: FaultProxy,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    localoperator.install_crds(control_plane)
    operator = localoperator.start(
        control_plane,
        own_namespace=OWN_NAMESPACE,
        workdir=tmp_path_factory.mktemp("muster-security"),
        extra_args=(
            f"--insecure-registry={registry.host}",
            f"--insecure-registry={fault_proxy.host}",
            f"--exemption-group={BREAKGLASS}",
            f"--admission-deadline={DEADLINE}",
        ),
    )
    try:
        register(control_plane, operator)
        yield operator
    finally:
        unregister(control_plane)
        operator.stop()
        print(f"--- muster run (security) log ---\n{operator.log.read_text()[-4000:]}")
