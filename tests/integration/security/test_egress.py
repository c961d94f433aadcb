"""Untrusted references: the registry client refuses internal addresses, denied hosts,
credentials across redirects, slow and oversized answers — against the real registry.

Where a real registry cannot misbehave on demand (redirect elsewhere, stall, stream an endless
body, a DNS answer that rebinds), a small proxy or a scripted resolver injects the fault; every
successful answer still comes from the real registry.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import aiohttp.abc
import pytest
from aiohttp import web

from muster.kernel import egress
from muster.platform import registries
from tests import peers

pytestmark = pytest.mark.integration

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _serve(handler: Handler) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def _forward(upstream: str, request: web.Request) -> web.Response:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            request.method,
            f"http://{upstream}{request.path_qs}",
            headers={
                k: v
                for k, v in request.headers.items()
                if k.lower() not in ("host", "authorization")
            },
        ) as answer,
    ):
        body = await answer.read()
        headers = {
            k: v
            for k, v in answer.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding")
        }
        return web.Response(status=answer.status, body=body, headers=headers)


@pytest.fixture
async def pushed(registry: peers.Registry, tmp_path: Path) -> str:
    return peers.push_image(registry, "egress/app", workdir=tmp_path)


async def test_an_unconfigured_loopback_registry_is_refused_before_connecting(
    registry: peers.Registry, pushed: str
) -> None:
    async with registries.RegistryClient(registries.RegistrySettings()) as client:
        with pytest.raises(registries.Refused, match="loopback address") as raised:
            await client.manifest(registry.host, "egress/app", pushed)
    assert client.stats.requests == 0  # refused before a single round trip
    assert "--allow-private-registries" in str(raised.value)
    # Configured as an insecure registry, it is explicitly allowed.
    settings = registries.RegistrySettings(insecure_registries=frozenset({registry.host}))
    async with registries.RegistryClient(settings) as client:
        assert (await client.manifest(registry.host, "egress/app", pushed)).digest == pushed


async def test_host_names_are_resolved_and_every_address_checked(
    registry: peers.Registry, pushed: str
) -> None:
    port = registry.host.rpartition(":")[2]
    by_name = f"localhost:{port}"  # a name, so the checking resolver runs (real DNS)
    settings = registries.RegistrySettings(insecure_registries=frozenset({by_name}))
    async with registries.RegistryClient(settings) as client:
        assert (await client.manifest(by_name, "egress/app", pushed)).digest == pushed
    resolver = registries.CheckedResolver(egress.EgressPolicy())
    with pytest.raises(registries.Refused, match=r"'localhost'.*loopback"):
        await resolver.resolve("localhost", int(port), socket.AF_UNSPEC)
    opened = registries.CheckedResolver(egress.EgressPolicy(allow_private=True))
    answers = await opened.resolve("localhost", int(port), socket.AF_UNSPEC)
    assert answers
    assert all(answer["port"] == int(port) for answer in answers)
    await resolver.close()
    await opened.close()


async def test_allow_and_deny_lists(registry: peers.Registry, pushed: str) -> None:
    host = registry.host
    for settings, expected in [
        (dict(deny_hosts=("127.0.0.*",)), "deny list entry '127.0.0.\\*'"),
        (dict(allow_hosts=("ghcr.io", "*.corp.example")), "not on the registry allow list"),
    ]:
        configured = registries.RegistrySettings(
            insecure_registries=frozenset({host}),
            **settings,  # type: ignore[arg-type]
        )
        async with registries.RegistryClient(configured) as client:
            with pytest.raises(registries.Refused, match=expected):
                await client.manifest(host, "egress/app", pushed)
        assert client.stats.requests == 0
    allowed = registries.RegistrySettings(
        insecure_registries=frozenset({host}), allow_hosts=("127.0.0.1:*",)
    )
    async with registries.RegistryClient(allowed) as client:
        assert (await client.manifest(host, "egress/app", pushed)).digest == pushed


class ScriptedResolver(aiohttp.abc.AbstractResolver):
    """DNS answers a real resolver cannot be made to give: a rebinding name."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        self.asked.append(host)
        addresses = self.answers[host].pop(0)
        return [
            aiohttp.abc.ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        pass


async def test_dns_rebinding_cannot_slip_an_internal_address_in(
    registry: peers.Registry, pushed: str
) -> None:
    port = int(registry.host.rpartition(":")[2])
    policy = egress.EgressPolicy(allow_private=True)
    # One answer mixing a fine address with the metadata endpoint refuses the host outright.
    mixed = ScriptedResolver({"rebind.test": [["127.0.0.1", "169.254.169.254"]]})
    with pytest.raises(registries.Refused, match="cloud metadata"):
        await registries.CheckedResolver(policy, mixed).resolve("rebind.test", port)
    # A name that answers a harmless address first and the metadata endpoint next: the
    # connection uses exactly the checked answer, and the next lookup is checked again.
    rebinding = ScriptedResolver({"rebind.test": [["127.0.0.1"], ["169.254.169.254"]]})
    connector = aiohttp.TCPConnector(
        resolver=registries.CheckedResolver(policy, rebinding),
        use_dns_cache=False,
        force_close=True,
    )
    url = f"http://rebind.test:{port}/v2/egress/app/manifests/{pushed}"
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(url, headers={"Accept": "*/*"}) as answer:
            assert answer.status == 200  # went to the checked 127.0.0.1: the real registry
            await answer.read()
        with pytest.raises(registries.Refused, match=r"'rebind\.test' \(169\.254\.169\.254\)"):
            async with session.get(url):
                pass
    assert rebinding.asked == ["rebind.test", "rebind.test"]


@pytest.fixture
async def redirector(
    registry: peers.Registry,
) -> AsyncIterator[tuple[dict[str, list[str | None]], str, str]]:
    """A registry front that demands basic auth, then redirects every read to another host
    (``localhost:<port>``, a recording proxy in front of the real registry)."""
    seen: dict[str, list[str | None]] = {"front": [], "elsewhere": []}
    target: dict[str, str] = {}

    async def elsewhere(request: web.Request) -> web.StreamResponse:
        seen["elsewhere"].append(request.headers.get("Authorization"))
        return await _forward(registry.host, request)

    async def front(request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        seen["front"].append(authorization)
        if authorization is None:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="front"'})
        location = target.get("location", f"http://localhost:{target['port']}") + request.path_qs
        return web.Response(status=307, headers={"Location": location})

    runner_b, port_b = await _serve(elsewhere)
    target["port"] = str(port_b)
    runner_a, port_a = await _serve(front)
    try:
        yield seen, f"127.0.0.1:{port_a}", f"localhost:{port_b}"
        target.clear()
    finally:
        await runner_a.cleanup()
        await runner_b.cleanup()


async def test_credentials_never_cross_a_redirect_to_another_host(
    redirector: tuple[dict[str, list[str | None]], str, str], pushed: str
) -> None:
    seen, front, elsewhere = redirector
    settings = registries.RegistrySettings(
        insecure_registries=frozenset({front}), allow_hosts=(front, elsewhere)
    )
    secret = registries.Credentials("ci", "s3cret-never-forwarded")
    async with registries.RegistryClient(settings, {front: secret}.get) as client:
        manifest = await client.manifest(front, "egress/app", pushed)
    assert manifest.digest == pushed
    assert seen["front"][0] is None  # first try anonymous, then the challenge
    assert seen["front"][-1] is not None
    assert seen["front"][-1].startswith("Basic ")
    assert seen["elsewhere"]
    assert seen["elsewhere"] == [None] * len(seen["elsewhere"])  # never the credentials


async def test_a_redirect_to_an_internal_address_is_refused(
    redirector: tuple[dict[str, list[str | None]], str, str], pushed: str
) -> None:
    _, front, _ = redirector
    # The redirect target is not explicitly configured and resolves to loopback: refused.
    settings = registries.RegistrySettings(insecure_registries=frozenset({front}))
    secret = registries.Credentials("ci", "s3cret")
    async with registries.RegistryClient(settings, {front: secret}.get) as client:
        with pytest.raises(registries.Refused, match=r"'localhost'.*loopback"):
            await client.manifest(front, "egress/app", pushed)


async def test_a_redirect_to_the_metadata_service_is_refused_without_connecting(
    registry: peers.Registry,
) -> None:
    asked: list[str] = []

    async def front(request: web.Request) -> web.StreamResponse:
        asked.append(request.path)
        return web.Response(
            status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}
        )

    runner, port = await _serve(front)
    host = f"127.0.0.1:{port}"
    settings = registries.RegistrySettings(
        insecure_registries=frozenset({host}), allow_private=True, request_timeout=30
    )
    try:
        async with registries.RegistryClient(settings) as client:
            started = asyncio.get_running_loop().time()
            with pytest.raises(registries.Refused, match="cloud metadata address"):
                await client.manifest(host, "egress/app", "v1")
            assert asyncio.get_running_loop().time() - started < 5  # no connection attempted
    finally:
        await runner.cleanup()
    assert asked == ["/v2/egress/app/manifests/v1"]


async def test_a_token_realm_on_an_internal_address_is_refused() -> None:
    async def front(request: web.Request) -> web.StreamResponse:
        challenge = 'Bearer realm="http://169.254.169.254/token",service="x"'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    runner, port = await _serve(front)
    host = f"127.0.0.1:{port}"
    try:
        settings = registries.RegistrySettings(insecure_registries=frozenset({host}))
        async with registries.RegistryClient(settings) as client:
            with pytest.raises(registries.Refused, match="cloud metadata"):
                await client.manifest(host, "egress/app", "v1")
        assert client.stats.token_requests == 0
    finally:
        await runner.cleanup()


async def test_a_registry_slower_than_the_request_timeout_is_unavailable(
    registry: peers.Registry,
) -> None:
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=200)

    runner, port = await _serve(stall)
    host = f"127.0.0.1:{port}"
    settings = registries.RegistrySettings(
        insecure_registries=frozenset({host}),
        request_timeout=0.3,
        max_attempts=2,
        backoff_base=0.01,
    )
    try:
        async with registries.RegistryClient(settings) as client:
            started = asyncio.get_running_loop().time()
            with pytest.raises(registries.Unavailable, match="unreachable after 2 attempts"):
                await client.manifest(host, "slow/app", "v1")
            assert asyncio.get_running_loop().time() - started < 3
    finally:
        release.set()
        await runner.cleanup()


async def test_an_endless_body_without_length_is_cut_at_the_cap() -> None:
    sent: list[int] = []

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(10_000):
                await response.write(b"x" * 65536)
                sent.append(1)
        except (ConnectionError, RuntimeError):
            pass
        return response

    runner, port = await _serve(endless)
    host = f"127.0.0.1:{port}"
    settings = registries.RegistrySettings(
        insecure_registries=frozenset({host}), max_manifest_bytes=256 * 1024
    )
    try:
        async with registries.RegistryClient(settings) as client:
            with pytest.raises(registries.BlobTooLarge, match="over the limit of 262144 bytes"):
                await client.manifest(host, "big/app", "v1")
    finally:
        await runner.cleanup()
    assert len(sent) < 10_000  # the client hung up; it did not read 640 MiB
