"""The scan relay: one scan's registry endpoint on 127.0.0.1, for trivy to pull from.

It serves only the repositories registered under its tokens (the image being scanned, and the
vulnerability DB repository when trivy may download it), fetching every manifest and blob with
Muster's :class:`~muster.platform.registries.RegistryClient`, so each connection a scan causes
passes the client's egress rules; see ``vulnerabilities/rules/relay.py`` for why a relay and
not a proxy. Blobs are streamed, never held whole. Requests trivy sends to it as its HTTP(S)
proxy are refused and recorded, as is everything the client refused or could not fetch, so the
scan's error names the real cause rather than trivy's account of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Any

from aiohttp import web

from muster.platform import registries
from muster.vulnerabilities.rules import relay as scanrelay

__all__ = ["MAX_BLOB_BYTES", "Relay"]

logger = logging.getLogger("muster.scanrelay")

# A sanity bound on one streamed layer; the scan's timeout bounds the time it takes.
MAX_BLOB_BYTES = 64 * 1024**3
MAX_RECORDED = 20
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _error(status: int, code: str, message: str) -> web.Response:
    body = json.dumps({"errors": [{"code": code, "message": message}]})
    return web.Response(status=status, text=body, content_type="application/json")


def _media_type(manifest: registries.Manifest) -> str:
    if manifest.media_type:
        return manifest.media_type
    try:
        is_index = "manifests" in manifest.json()
    except (ValueError, registries.RegistryError):
        is_index = False
    return registries.OCI_INDEX if is_index else _OCI_MANIFEST


class Relay:
    """Start with ``async with Relay(client) as relay``; register upstreams with :meth:`add`."""

    def __init__(self, client: registries.RegistryClient) -> None:
        self.client = client
        self.host = ""  # "127.0.0.1:PORT" once started
        self.requests = 0
        # What the relay refused or could not fetch (the first few), for the scan's error.
        self.failures: list[str] = []
        # Requests trivy sent to the relay as its proxy: it tried to reach something directly.
        self.strays: list[str] = []
        self._upstreams: dict[str, scanrelay.Upstream] = {}
        self._manifests: dict[tuple[str, str], registries.Manifest] = {}
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def proxy_url(self) -> str:
        return f"http://{self.host}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._refuse_proxying])
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # trivy has exited when the relay closes: what it left running is not waited for long.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        address = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
        self.host = f"127.0.0.1:{address[1]}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def add(self, upstream: scanrelay.Upstream) -> str:
        """Open ``upstream`` under a fresh token (unguessable: other local processes cannot
        use the relay to read anything else)."""
        token = secrets.token_hex(16)
        self._upstreams[token] = upstream
        return token

    def reference(self, token: str, reference: str | None) -> str:
        """The name trivy pulls a token's upstream at ``reference`` (digest, tag, None) by."""
        return scanrelay.relay_reference(self.host, token, self._upstreams[token], reference)

    async def manifest(self, token: str, reference: str) -> registries.Manifest:
        """The upstream's manifest (kept for the relay's life); RegistryError as the client
        raises it, after recording it."""
        key = (token, reference)
        found = self._manifests.get(key)
        if found is None:
            upstream = self._upstreams[token]
            try:
                found = await self.client.manifest(
                    upstream.registry, upstream.repository, reference
                )
            except registries.RegistryError as error:
                self._record(str(error))
                raise
            self._manifests[key] = found
        return found

    def _record(self, failure: str) -> None:
        if len(self.failures) < MAX_RECORDED:
            self.failures.append(failure)

    @web.middleware
    async def _refuse_proxying(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # A proxied request is a CONNECT or names another host than the relay itself.
        if request.method == "CONNECT" or request.host != self.host:
            target = request.raw_path if request.method == "CONNECT" else str(request.url)
            refusal = scanrelay.proxy_refusal(request.method, target)
            logger.warning("%s", refusal)
            if len(self.strays) < MAX_RECORDED:
                self.strays.append(refusal)
            response = _error(403, "DENIED", refusal)
            response.force_close()
            return response
        result: web.StreamResponse = await handler(request)
        return result

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if scanrelay.is_ping(request.path):
            return web.json_response({})
        route = scanrelay.parse_path(request.path)
        if route is None:
            return _error(404, "NAME_UNKNOWN", "not a path the scan relay serves")
        refusal = scanrelay.route_refusal(self._upstreams.get(route.token), route)
        if refusal is not None:
            self._record(refusal)
            return _error(403, "DENIED", refusal)
        if route.kind == "manifests" and request.method in ("GET", "HEAD"):
            return await self._manifest(route)
        if route.kind == "blobs" and request.method == "GET":
            return await self._blob(request, route)
        return _error(405, "UNSUPPORTED", f"{request.method} is not served by the scan relay")

    async def _manifest(self, route: scanrelay.Route) -> web.StreamResponse:
        try:
            manifest = await self.manifest(route.token, route.reference)
        except registries.RegistryError as error:
            return _answer(error, "MANIFEST_UNKNOWN")
        return web.Response(
            body=manifest.raw,
            headers={
                "Content-Type": _media_type(manifest),
                "Docker-Content-Digest": manifest.digest,
            },
        )

    async def _blob(self, request: web.Request, route: scanrelay.Route) -> web.StreamResponse:
        upstream = self._upstreams[route.token]
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Docker-Content-Digest": route.reference,
            }
        )

        async def sink(chunk: bytes) -> None:
            if not response.prepared:
                await response.prepare(request)
            await response.write(chunk)

        try:
            await self.client.blob_stream(
                upstream.registry,
                upstream.repository,
                route.reference,
                sink,
                max_bytes=MAX_BLOB_BYTES,
            )
        except (registries.RegistryError, OSError, asyncio.CancelledError) as error:
            if not isinstance(error, asyncio.CancelledError):
                self._record(str(error))
            if not response.prepared and isinstance(error, registries.RegistryError):
                return _answer(error, "BLOB_UNKNOWN")
            # Part of the blob is out: cut the connection so trivy never reads it as complete.
            if request.transport is not None:
                request.transport.abort()
            if isinstance(error, asyncio.CancelledError):
                raise
            return response
        if not response.prepared:  # an empty blob
            await response.prepare(request)
        await response.write_eof()
        return response


def _answer(error: registries.RegistryError, unknown: str) -> web.Response:
    """The registry error the client raised, as a registry would answer it."""
    message = str(error)
    if isinstance(error, registries.NotFound):
        return _error(404, unknown, message)
    if isinstance(error, registries.Refused | registries.Unauthorized):
        return _error(403, "DENIED", message)
    if isinstance(error, registries.Unavailable):
        return _error(503, "UNAVAILABLE", message)
    # Not worth a retry (a digest mismatch, an oversized or unreadable answer).
    return _error(400, "UNSUPPORTED", message)
