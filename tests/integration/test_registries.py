"""The OCI registry client against real registries (and a fault injector where none can fail)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from muster.kernel import references
from muster.platform import registries
from tests import peers

pytestmark = pytest.mark.integration

BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"


def client_for(*hosts: str, **overrides: object) -> registries.RegistryClient:
    settings = registries.RegistrySettings(insecure_registries=frozenset(hosts), **overrides)  # type: ignore[arg-type]
    return registries.RegistryClient(settings)


async def test_manifest_by_tag_and_digest_agree(registry: peers.Registry, tmp_path: Path) -> None:
    digest = peers.push_image(registry, "client/app", "v1", workdir=tmp_path)
    async with client_for(registry.host) as client:
        by_tag = await client.manifest(registry.host, "client/app", "v1")
        by_digest = await client.manifest(registry.host, "client/app", digest)
        resolved = await client.resolve(references.parse(f"{registry.host}/client/app:v1"))
    assert by_tag.digest == by_digest.digest == resolved == digest
    assert by_digest.raw == by_tag.raw
    config = by_digest.json()["config"]
    blob = await _blob(registry, "client/app", config["digest"])
    assert hashlib.sha256(blob).hexdigest() == config["digest"].removeprefix("sha256:")


async def _blob(registry: peers.Registry, repository: str, digest: str) -> bytes:
    async with client_for(registry.host) as client:
        return await client.blob(registry.host, repository, digest)


async def test_missing_things_are_not_found_with_names(registry: peers.Registry) -> None:
    async with client_for(registry.host) as client:
        with pytest.raises(registries.NotFound, match="client/none:v1 does not exist"):
            await client.manifest(registry.host, "client/none", "v1")
        with pytest.raises(registries.NotFound, match="blob"):
            await client.blob(registry.host, "client/none", "sha256:" + "0" * 64)


async def test_size_caps_refuse_before_buffering(registry: peers.Registry, tmp_path: Path) -> None:
    digest = peers.push_image(registry, "client/capped", workdir=tmp_path)
    async with client_for(registry.host, max_manifest_bytes=64) as client:
        with pytest.raises(registries.BlobTooLarge, match="over the limit of 64"):
            await client.manifest(registry.host, "client/capped", digest)


@pytest.mark.parametrize("which", ["registry", "referrers_registry"])
async def test_referrers_via_api_or_tag_fallback(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    registry: peers.Registry = request.getfixturevalue(which)
    digest = peers.push_image(registry, "client/signed", workdir=tmp_path)
    peers.run_tool(
        "cosign",
        "generate-key-pair",
        f"--output-key-prefix={tmp_path / 'k'}",
        env={"COSIGN_PASSWORD": ""},
    )
    peers.run_tool(
        "cosign",
        "sign",
        f"--key={tmp_path / 'k.key'}",
        "--tlog-upload=false",
        "--use-signing-config=false",
        "--allow-http-registry",
        "-y",
        f"{registry.host}/client/signed@{digest}",
        env={"COSIGN_PASSWORD": ""},
    )
    async with client_for(registry.host) as client:
        found = await client.referrers(registry.host, "client/signed", digest)
        assert len(found) == 1
        manifest = await client.manifest(registry.host, "client/signed", found[0]["digest"])
        assert manifest.json()["artifactType"] == BUNDLE
        assert manifest.json()["subject"]["digest"] == digest
        unsigned = peers.push_image(registry, "client/unsigned", workdir=tmp_path)
        assert await client.referrers(registry.host, "client/unsigned", unsigned) == []


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.Registry]:
    with peers.registry(tmp_path_factory.mktemp("private"), users={"ci": "s3cret"}) as running:
        yield running


async def test_basic_auth_with_credentials(
    private_registry: peers.Registry, tmp_path: Path
) -> None:
    host = private_registry.host
    digest = peers.push_image(
        private_registry, "private/app", workdir=tmp_path, credentials=("ci", "s3cret")
    )
    creds = {host: registries.Credentials("ci", "s3cret")}
    settings = registries.RegistrySettings(insecure_registries=frozenset({host}))
    async with registries.RegistryClient(settings, creds.get) as client:
        manifest = await client.manifest(host, "private/app", digest)
    assert manifest.digest == digest
    async with registries.RegistryClient(settings) as anonymous:
        with pytest.raises(registries.Unauthorized, match="requires credentials"):
            await anonymous.manifest(host, "private/app", digest)
    wrong = {host: registries.Credentials("ci", "wrong")}
    async with registries.RegistryClient(settings, wrong.get) as client:
        with pytest.raises(registries.Unauthorized, match="refused access") as raised:
            await client.manifest(host, "private/app", digest)
    assert "wrong" not in str(raised.value)
    assert repr(wrong[host]) == "Credentials(username='ci')"  # the password never prints


# -- faults a real registry cannot be made to produce on demand --------------------------------
# A small proxy in front of the real registry injects them (this is the one mock here, and it
# only decides *when* to fail; every successful answer comes from the real registry).


class Faults:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.plan: list[tuple[int, dict[str, str]]] = []
        self.corrupt = False
        self.garbage: bytes | None = None
        self.seen = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen += 1
        if self.plan:
            status, headers = self.plan.pop(0)
            return web.Response(status=status, headers=headers)
        if self.garbage is not None:
            return web.Response(body=self.garbage, content_type="application/json")
        async with (
            ClientSession() as session,
            session.request(
                request.method,
                f"http://{self.upstream}{request.path_qs}",
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
            ) as upstream,
        ):
            body = await upstream.read()
            if self.corrupt and body:
                body = body.replace(b"linux", b"Linux") if b"linux" in body else body + b" "
            headers = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding")
            }
            return web.Response(status=upstream.status, body=body, headers=headers)


@pytest.fixture
async def faulty(registry: peers.Registry) -> AsyncIterator[tuple[Faults, str]]:
    faults = Faults(registry.host)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", faults.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield faults, f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_retries_honour_retry_after_then_succeed(
    faulty: tuple[Faults, str], registry: peers.Registry, tmp_path: Path
) -> None:
    faults, host = faulty
    digest = peers.push_image(registry, "client/flaky", workdir=tmp_path)
    faults.plan = [(429, {"Retry-After": "1"}), (503, {})]
    async with client_for(host, backoff_base=0.01) as client:
        started = asyncio.get_running_loop().time()
        manifest = await client.manifest(host, "client/flaky", digest)
        waited = asyncio.get_running_loop().time() - started
    assert manifest.digest == digest
    assert client.stats.retries == 2
    assert waited >= 1.0  # the registry asked for a second; it got it


async def test_persistent_5xx_is_unavailable(faulty: tuple[Faults, str]) -> None:
    faults, host = faulty
    faults.plan = [(502, {})] * 3
    async with client_for(host, backoff_base=0.01, max_attempts=3) as client:
        with pytest.raises(registries.Unavailable, match="HTTP 502 3 times"):
            await client.manifest(host, "client/any", "v1")
    assert faults.seen == 3


async def test_unreachable_registry_is_unavailable() -> None:
    from muster.platform import processes

    host = f"127.0.0.1:{processes.free_port()}"
    async with client_for(host, backoff_base=0.01) as client:
        with pytest.raises(registries.Unavailable, match="unreachable after 3 attempts"):
            await client.manifest(host, "x/y", "v1")


async def test_content_that_does_not_match_its_digest_is_refused(
    faulty: tuple[Faults, str], registry: peers.Registry, tmp_path: Path
) -> None:
    faults, host = faulty
    digest = peers.push_image(registry, "client/tampered", workdir=tmp_path)
    faults.corrupt = True
    async with client_for(host) as client:
        with pytest.raises(registries.DigestMismatch, match=f"does not match {digest}"):
            await client.manifest(host, "client/tampered", digest)
        with pytest.raises(registries.DigestMismatch, match="registry claims"):
            await client.manifest(host, "client/tampered", "latest")


async def test_garbage_manifest_is_a_clear_error(faulty: tuple[Faults, str]) -> None:
    faults, host = faulty

    faults.garbage = b"\x00\xffnot json"
    async with client_for(host) as client:
        with pytest.raises(registries.RegistryError, match="not a JSON document"):
            await client.manifest(host, "client/garbage", "v1")
