"""Scans cannot be aimed at internal hosts: real trivy, the real registry, and real listeners
that record every connection they accept, sitting where an attacker would aim a scan (a
loopback service, the cloud metadata address).

trivy pulls only from the scan relay, which fetches with Muster's registry client: a reference,
a redirect or a token realm naming an internal address is refused by the client's egress rule
before any connection, and the listener stays untouched. Each test also shows its listener is
real, with settings that do allow the address (or with trivy on its own): there it does record
a connection, so "no connection" is not an accident of a deaf listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from muster.platform import registries
from muster.vulnerabilities import relay as scanrelay
from muster.vulnerabilities import scanner
from muster.vulnerabilities.rules import relay as relayrules
from tests import peers, trivydb
from tests.integration.vulnerabilities.conftest import PLANTED, Images

pytestmark = pytest.mark.integration

METADATA = "169.254.169.254"
LOOPBACK_SERVICE = "127.0.0.9"  # not the registry's 127.0.0.1: loopback, but no registry
NOWHERE = "sha256:" + "1" * 64


class Listener:
    """A TCP listener that records the peer of every connection it accepts, then hangs up."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.accepted: list[tuple[str, int]] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(writer.get_extra_info("peername")[:2])
        writer.close()


def _bindable(address: str) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def _ip(*args: str) -> bool:
    try:
        return subprocess.run(["ip", *args], capture_output=True, check=False).returncode == 0
    except FileNotFoundError:
        return False


@pytest.fixture
def metadata_address() -> Iterator[str | None]:
    """169.254.169.254 on the loopback interface for one test, so a real listener can sit where
    the metadata service would; removed afterwards. None where this user may not add it (not
    root): the tests then show the refusal without a listener, and say so."""
    if _bindable(METADATA):
        yield METADATA
        return
    added = _ip("addr", "add", f"{METADATA}/32", "dev", "lo")
    try:
        yield METADATA if added and _bindable(METADATA) else None
    finally:
        if added:
            _ip("addr", "del", f"{METADATA}/32", "dev", "lo")


@pytest.fixture
def cache(trivy_cache: Path, tmp_path: Path) -> Path:
    """The tiny DB without trivy's cached analyses, so every scan reads the image's blobs."""
    fresh = tmp_path / "trivy"
    shutil.copytree(trivy_cache / "db", fresh / "db")
    return fresh


@contextlib.asynccontextmanager
async def reader(**settings: Any) -> AsyncIterator[registries.RegistryClient]:
    async with registries.RegistryClient(
        registries.RegistrySettings(max_attempts=1, **settings)
    ) as client:
        yield client


def trivy(cache: Path, client: registries.RegistryClient) -> scanner.Trivy:
    return scanner.Trivy(scanner.TrivySettings(cache_dir=cache, timeout=60), client)


Fault = Callable[[web.Request], web.StreamResponse | None]


@contextlib.asynccontextmanager
async def faulty_registry(
    upstream: str, fault: Fault, *, corrupt_blobs: bool = False
) -> AsyncIterator[str]:
    """The real registry behind a front that answers ``fault(request)`` where it gives one
    (a redirect, a challenge), and otherwise forwards; its host:port."""
    session = aiohttp.ClientSession(auto_decompress=False)
    hop = {"host", "content-length", "transfer-encoding", "content-encoding", "connection"}

    async def handle(request: web.Request) -> web.StreamResponse:
        answer = fault(request)
        if answer is not None:
            return answer
        async with session.request(
            request.method,
            f"http://{upstream}{request.path_qs}",
            headers={k: v for k, v in request.headers.items() if k.lower() not in hop},
        ) as got:
            body = await got.read()
            if corrupt_blobs and "/blobs/" in request.path and body:
                body = body[:-1] + bytes([body[-1] ^ 1])
            headers = {k: v for k, v in got.headers.items() if k.lower() not in hop}
            return web.Response(status=got.status, body=body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()
        await session.close()


def redirect_blobs(target: str) -> Fault:
    def fault(request: web.Request) -> web.StreamResponse | None:
        if "/blobs/" in request.path:
            raise web.HTTPTemporaryRedirect(f"http://{target}/blob")
        return None

    return fault


def challenge(realm: str) -> Fault:
    def fault(request: web.Request) -> web.StreamResponse | None:
        if request.path.startswith("/v2/") and "Authorization" not in request.headers:
            return web.Response(
                status=401,
                headers={"WWW-Authenticate": f'Bearer realm="http://{realm}/token",service="r"'},
            )
        return None

    return fault


def image_at(host: str, images: Images) -> str:
    return f"{host}/vulns/app@{images.digest}"


# ---------------------------------------------------------------------------------------------
# References naming internal addresses


async def test_an_image_at_a_loopback_service_is_never_contacted(
    cache: Path, registry: peers.Registry
) -> None:
    async with Listener(LOOPBACK_SERVICE) as service, Listener("127.0.0.1") as by_name:
        # Loopback is allowed for the test registry alone (an --insecure-registry), not for
        # every host: neither an address nor a name that resolves there is contacted.
        async with reader(insecure_registries=frozenset({registry.host})) as client:
            with pytest.raises(scanner.ScanError, match=r"127\.0\.0\.9 is a loopback address"):
                await trivy(cache, client).scan(f"{service.address}/internal@{NOWHERE}")
            assert client.stats.requests == 0  # an address: refused before any request
            # A name: resolved, and refused by the checking resolver before connecting.
            with pytest.raises(scanner.ScanError, match=r"'localhost' \(127.0.0.1\) is a loopback"):
                await trivy(cache, client).scan(f"localhost:{by_name.port}/x@{NOWHERE}")
        assert service.accepted == []
        assert by_name.accepted == []
        # The listener is real: with loopback opened to every registry
        # (--allow-private-registries) the same scan does connect (and fails: no registry).
        async with reader(allow_private=True) as client:
            with pytest.raises(scanner.ScanError, match="unreachable"):
                await trivy(cache, client).scan(f"{service.address}/internal@{NOWHERE}")
        assert service.accepted


async def test_an_image_at_the_metadata_address_is_never_contacted(
    cache: Path, metadata_address: str | None
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        service = (
            await stack.enter_async_context(Listener(metadata_address))
            if metadata_address
            else None
        )
        where = service.address if service else METADATA
        image = f"{where}/latest/meta-data@{NOWHERE}"
        # Not even --allow-private-registries opens the metadata address.
        async with reader(allow_private=True) as client:
            with pytest.raises(scanner.ScanError, match="is a cloud metadata address"):
                await trivy(cache, client).scan(image)
            assert client.stats.requests == 0
        if service is None:
            print(f"{METADATA} could not be put on lo here: the refusal shown, no listener")
            return
        assert service.accepted == []
        # Named exactly by the operator (--registry-allow HOST:PORT), it would be contacted.
        async with reader(allow_hosts=(service.address,)) as client:
            with pytest.raises(scanner.ScanError, match="unreachable"):
                await trivy(cache, client).scan(image)
        assert service.accepted


# ---------------------------------------------------------------------------------------------
# Redirects and token realms, while trivy pulls


@dataclasses.dataclass(frozen=True)
class Internal:
    """Where an attacker points a redirect or token realm: a listener's host, and the
    ``host:port`` the registry names (an address, or a name that resolves to it)."""

    bind: str
    named_by: str  # "address" or "localhost"
    refusal: str

    def where(self, service: Listener) -> str:
        return service.address if self.named_by == "address" else f"localhost:{service.port}"


INTERNAL = {
    "loopback-address": Internal(
        LOOPBACK_SERVICE, "address", r"127\.0\.0\.9 is a loopback address"
    ),
    "loopback-name": Internal(
        "127.0.0.1", "localhost", r"'localhost' \(127\.0\.0\.1\) is a loopback"
    ),
    "metadata-address": Internal(
        METADATA, "address", "169.254.169.254 is a cloud metadata address"
    ),
}


@pytest.mark.parametrize("fault", ["blob-redirect", "token-realm"])
@pytest.mark.parametrize("target", sorted(INTERNAL))
async def test_redirects_and_token_realms_to_internal_hosts_are_refused_mid_scan(
    cache: Path,
    registry: peers.Registry,
    planted_images: Images,
    metadata_address: str | None,
    fault: str,
    target: str,
) -> None:
    internal = INTERNAL[target]
    async with contextlib.AsyncExitStack() as stack:
        service = (
            await stack.enter_async_context(Listener(internal.bind))
            if _bindable(internal.bind)
            else None
        )
        where = internal.where(service) if service else f"{internal.bind}:80"
        faults = redirect_blobs(where) if fault == "blob-redirect" else challenge(where)
        front = await stack.enter_async_context(faulty_registry(registry.host, faults))
        image = image_at(front, planted_images)
        # The registry itself is allowed (explicitly, as an --insecure-registry); where it
        # sends the scan is judged on its own. A realm is met before trivy starts (the
        # manifest is fetched first), a blob redirect while trivy pulls through the relay.
        during = "not scanned: " if fault == "token-realm" else "trivy exited 1: "
        async with reader(insecure_registries=frozenset({front})) as client:
            with pytest.raises(scanner.ScanError, match=f"{during}.*{internal.refusal}"):
                await trivy(cache, client).scan(image)
        if service is None:
            print(f"{METADATA} could not be put on lo here: the refusal shown, no listener")
            return
        assert service.accepted == []
        # The listener is real: named exactly by the operator (--registry-allow HOST:PORT),
        # the same scan does connect there (and fails: it is no registry).
        allowed = (front, where)
        async with reader(insecure_registries=frozenset({front}), allow_hosts=allowed) as client:
            # (An unreachable token service is a registry error too, not a crash.)
            with pytest.raises(scanner.ScanError, match="unreachable"):
                await trivy(cache, client).scan(image)
        assert service.accepted


@pytest.mark.parametrize("fault", ["blob-redirect", "token-realm"])
async def test_trivy_on_its_own_would_reach_loopback_behind_any_proxy(
    cache: Path, registry: peers.Registry, planted_images: Images, fault: str
) -> None:
    """Why scans go through a relay and not just a proxy: trivy refuses redirects and realms
    to internal IP addresses itself, but follows a name that resolves to loopback, and Go
    never sends loopback through HTTPS_PROXY. With the very environment a scan gives it,
    trivy pulling on its own reaches the listener."""
    async with contextlib.AsyncExitStack() as stack:
        service = await stack.enter_async_context(Listener("127.0.0.1"))
        where = f"localhost:{service.port}"
        faults = redirect_blobs(where) if fault == "blob-redirect" else challenge(where)
        front = await stack.enter_async_context(faulty_registry(registry.host, faults))
        async with reader() as client, scanrelay.Relay(client) as relay:
            output = await _trivy_alone(cache, image_at(front, planted_images), relay)
        assert relay.strays == []  # not one request went to the proxy
        assert service.accepted, output


async def _trivy_alone(cache: Path, image: str, relay: scanrelay.Relay) -> bytes:
    """trivy pulling ``image`` itself, with the environment a scan gives it."""
    process = await asyncio.create_subprocess_exec(
        str(peers.tool("trivy")),
        "image",
        "--cache-dir",
        str(cache),
        "--skip-db-update",
        "--offline-scan",
        "--skip-java-db-update",
        "--skip-version-check",
        "--disable-telemetry",
        "--scanners",
        "vuln",
        "--image-src",
        "remote",
        "--insecure",
        "--quiet",
        image,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=scanner.environment(relay),
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return output


async def test_whatever_trivy_tries_past_the_relay_is_refused_and_recorded(
    cache: Path, registry: peers.Registry
) -> None:
    async with reader() as client, scanrelay.Relay(client) as relay:
        output = await _trivy_alone(cache, f"registry.example.invalid/x@{NOWHERE}", relay)
    assert b"registry.example.invalid" in output  # trivy failed on it
    assert relay.strays
    reached = ("reach registry.example.invalid:443 ", "reach http://registry.example.invalid/")
    assert all(any(target in stray for target in reached) for stray in relay.strays)
    assert any("(CONNECT)" in stray for stray in relay.strays)
    assert client.stats.requests == 0


# ---------------------------------------------------------------------------------------------
# A legitimate scan, and the relay itself


async def test_a_scan_of_the_real_registry_goes_through_the_relay(
    cache: Path, registry: peers.Registry, planted_images: Images
) -> None:
    seen: list[str] = []
    async with reader(insecure_registries=frozenset({registry.host})) as client:
        client.observer = lambda host, outcome, _: seen.append(f"{host} {outcome}")
        status = await trivy(cache, client).scan(planted_images.vulnerable)
    assert status.counts["HIGH"] == 1
    # Every registry round trip of the scan was Muster's client's, to the registry named.
    assert seen
    assert set(seen) == {f"{registry.host} success"}


async def test_the_relay_serves_one_repository_and_cuts_corrupted_blobs(
    registry: peers.Registry, planted_images: Images
) -> None:
    upstream, digest = relayrules.upstream_of(planted_images.vulnerable)
    assert digest is not None
    async with (
        faulty_registry(registry.host, lambda _: None, corrupt_blobs=True) as corrupting,
        reader(insecure_registries=frozenset({registry.host, corrupting})) as client,
        scanrelay.Relay(client) as relay,
        aiohttp.ClientSession() as session,
    ):
        token = relay.add(upstream)
        base = f"http://{relay.host}/v2/{token}/{upstream.repository}"
        async with session.get(f"http://{relay.host}/v2/") as ping:
            assert ping.status == 200
        async with session.get(f"{base}/manifests/{digest}") as answer:
            assert answer.status == 200
            raw = await answer.read()
            assert answer.headers["Docker-Content-Digest"] == digest
        manifest = (await client.manifest(upstream.registry, upstream.repository, digest)).json()
        assert raw == (await client.manifest(upstream.registry, upstream.repository, digest)).raw
        async with session.head(f"{base}/manifests/{digest}") as head:
            assert head.status == 200
            assert head.headers["Docker-Content-Digest"] == digest
        layer = manifest["layers"][0]["digest"]
        async with session.get(f"{base}/blobs/{layer}") as blob:
            assert blob.status == 200
            streamed = await blob.read()
        assert streamed == await client.blob(upstream.registry, upstream.repository, layer)
        # Only the token's repository, only by digest; proxied requests are refused.
        other = f"http://{relay.host}/v2/{token}/vulns/clean/manifests/{digest}"
        async with session.get(other) as refused:
            assert refused.status == 403
        async with session.get(f"{base}/manifests/v1") as by_tag:
            assert by_tag.status == 403
        async with session.get(
            f"http://{METADATA}/latest/meta-data", proxy=relay.proxy_url
        ) as proxied:
            assert proxied.status == 403
        assert relay.strays == [
            relayrules.proxy_refusal("GET", f"http://{METADATA}/latest/meta-data")
        ]
        assert [f for f in relay.failures if "vulns/clean" in f or "by tag" in f]

        # Blob bytes that do not match their digest: the connection is cut before the end,
        # so whoever reads through the relay never sees a complete blob.
        bad = relay.add(relayrules.Upstream(corrupting, upstream.repository))
        bad_blob = f"http://{relay.host}/v2/{bad}/{upstream.repository}/blobs/{layer}"
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.get(bad_blob) as cut:
                await cut.read()
        assert any("does not match" in failure for failure in relay.failures)


async def test_a_layer_larger_than_the_clients_read_cap_streams_through(
    registry: peers.Registry, tmp_path: Path
) -> None:
    """Layers are streamed: one over the 16 MiB the client ever holds in memory passes whole."""
    files = {"model.bin": os.urandom(20 * 1024 * 1024)}  # random: gzip cannot shrink it
    digest = peers.push_image(registry, "vulns/big", files=files, workdir=tmp_path)
    async with (
        reader(insecure_registries=frozenset({registry.host})) as client,
        scanrelay.Relay(client) as relay,
        aiohttp.ClientSession() as session,
    ):
        upstream = relayrules.Upstream(registry.host, "vulns/big")
        manifest = (await client.manifest(registry.host, "vulns/big", digest)).json()
        layer = manifest["layers"][0]
        assert layer["size"] > client.settings.max_blob_bytes
        token = relay.add(upstream)
        hashed = hashlib.sha256()
        async with session.get(
            f"http://{relay.host}/v2/{token}/vulns/big/blobs/{layer['digest']}"
        ) as blob:
            assert blob.status == 200
            async for chunk in blob.content.iter_chunked(1024 * 1024):
                hashed.update(chunk)
        assert f"sha256:{hashed.hexdigest()}" == layer["digest"]
        assert relay.failures == []


def push_db(registry: peers.Registry, repository: str, workdir: Path) -> None:
    """The tiny DB as trivy's DB artifact (one titled tar.gz layer), pushed by crane as
    ``repository:2`` (trivy's schema tag) from an OCI layout."""
    db_dir = trivydb.write_db(workdir / "db-source", PLANTED)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("trivy.db", "metadata.json"):
            tar.add(db_dir / name, arcname=name)
    layout = workdir / "db-layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data), **extra}

    layer = gzip.compress(buffer.getvalue(), mtime=0)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.aquasec.trivy.config.v1+json", b"{}"),
            "layers": [
                descriptor(
                    "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip",
                    layer,
                    annotations={"org.opencontainers.image.title": "db.tar.gz"},
                )
            ],
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [descriptor("application/vnd.oci.image.manifest.v1+json", manifest)],
    }
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps(index))
    peers.run_tool("crane", "push", "--insecure", str(layout), f"{registry.host}/{repository}:2")


async def test_the_vulnerability_db_is_downloaded_through_the_relay_too(
    registry: peers.Registry, planted_images: Images, tmp_path: Path
) -> None:
    push_db(registry, "mirror/trivy-db", tmp_path)
    allowed = frozenset({registry.host})
    for number, written in enumerate(("", ":2")):  # trivy adds its schema tag when none is
        cache = tmp_path / f"cache-{number}"
        cache.mkdir()  # no DB yet: trivy downloads it, through the relay
        settings = scanner.TrivySettings(
            cache_dir=cache, timeout=60, db_repository=f"{registry.host}/mirror/trivy-db{written}"
        )
        async with reader(insecure_registries=allowed) as client:
            status = await scanner.Trivy(settings, client).scan(planted_images.vulnerable)
        assert status.counts["HIGH"] == 1
        assert status.db_version == 2  # read from the downloaded DB's metadata
        assert (cache / "db" / "trivy.db").is_file()
    # A DB repository at a loopback service is refused like any registry: nothing connects.
    async with Listener(LOOPBACK_SERVICE) as service:
        settings = scanner.TrivySettings(
            cache_dir=tmp_path / "cache-refused",
            timeout=60,
            db_repository=f"{service.address}/mirror/trivy-db",
        )
        async with reader(insecure_registries=allowed) as client:
            with pytest.raises(scanner.ScanError, match=r"127\.0\.0\.9 is a loopback address"):
                await scanner.Trivy(settings, client).scan(planted_images.vulnerable)
        assert service.accepted == []
