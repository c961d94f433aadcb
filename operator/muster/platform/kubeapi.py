"""A small asyncio client for the Kubernetes API, for the operator's own calls.

kopf keeps its API client private; Muster's gates and controllers need a few plain calls
(post an Event, patch a Node's labels, read a Secret named by a policy) without blocking the
event loop, so this wraps one pooled aiohttp session with the credentials the official client
resolves (in-cluster service account, or a kubeconfig).
"""

from __future__ import annotations

import dataclasses
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from muster.platform import connections, statechanges

__all__ = ["ApiError", "Credentials", "KubeApi"]

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class ApiError(Exception):
    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.body = body or {}


@dataclasses.dataclass(frozen=True)
class Credentials:
    host: str
    ca_file: str | None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    token_file: Path | None = None  # re-read per request: projected tokens rotate

    @classmethod
    def resolve(cls, kubeconfig: str | None = None) -> Credentials:
        """In-cluster service account first (unless a kubeconfig is named), then kubeconfig."""
        # The kubernetes client only reads the configuration: imported here, so a command that
        # never talks to a cluster (``muster check`` of files) starts without it.
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config

        configuration = k8s_client.Configuration()
        if kubeconfig is None:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                return cls(
                    host=configuration.host,
                    ca_file=configuration.ssl_ca_cert,
                    token_file=SERVICE_ACCOUNT_TOKEN,
                )
            except k8s_config.ConfigException:
                pass
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
        header = configuration.get_api_key_with_prefix(
            "BearerToken"
        ) or configuration.get_api_key_with_prefix("authorization")
        token = header.split(" ", 1)[-1] if header else None
        return cls(
            host=configuration.host,
            ca_file=configuration.ssl_ca_cert,
            cert_file=configuration.cert_file,
            key_file=configuration.key_file,
            token=token,
        )


class KubeApi:
    """``await api.get("/api/v1/namespaces/x")``; non-2xx answers raise :class:`ApiError`."""

    def __init__(
        self, credentials: Credentials, *, timeout: float = 10.0, connection_limit: int = 20
    ) -> None:
        """``connection_limit`` bounds this client's pool: a background controller gets a
        client (and pool) of its own, so it can never hold the connections admission needs."""
        self.credentials = credentials
        self._timeout = timeout
        self._connection_limit = connection_limit
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            context = ssl.create_default_context(cafile=self.credentials.ca_file)
            if self.credentials.cert_file and self.credentials.key_file:
                context.load_cert_chain(self.credentials.cert_file, self.credentials.key_file)
            self._session = aiohttp.ClientSession(
                base_url=self.credentials.host,
                connector=connections.tcp_connector(ssl=context, limit=self._connection_limit),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        return self._session

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        token = self.credentials.token
        if self.credentials.token_file is not None:
            token = self.credentials.token_file.read_text().strip()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body)
        # What is read may refill what the gates read (writes change this process's state only
        # through watches, which move the epoch themselves: an Event posted does not).
        reading = method == "GET"
        if reading:
            statechanges.read()
        async with self._client().request(
            method,
            path,
            data=data,
            params=params,
            headers=self._headers(content_type if data is not None else None),
        ) as response:
            raw = await response.read()
        if reading:
            statechanges.read()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"message": raw[:200].decode(errors="replace")}
        if response.status >= 300:
            raise ApiError(response.status, str(parsed.get("message", response.reason)), parsed)
        return parsed if isinstance(parsed, dict) else {"items": parsed}

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body=body)

    async def patch(
        self, path: str, body: Any, *, content_type: str = "application/merge-patch+json"
    ) -> dict[str, Any]:
        return await self.request("PATCH", path, body=body, content_type=content_type)

    async def delete(self, path: str) -> dict[str, Any]:
        return await self.request("DELETE", path)

    async def lines(
        self, path: str, params: dict[str, str], *, idle: float
    ) -> AsyncIterator[bytes]:
        """The lines of a streaming GET (a watch: one JSON event a line), read as they come.

        The client's total timeout does not apply: the stream ends when the server closes it,
        or raises :class:`TimeoutError` when nothing came for ``idle`` seconds."""
        async with self._client().get(
            path,
            params=params,
            headers=self._headers(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout, sock_read=idle),
        ) as response:
            if response.status >= 300:
                raw = await response.read()
                try:
                    parsed = json.loads(raw) if raw else {}
                except ValueError:
                    parsed = {"message": raw[:200].decode(errors="replace")}
                raise ApiError(response.status, str(parsed.get("message", response.reason)), parsed)
            rest = b""
            # Lines can outgrow aiohttp's readline limit (a large pod): split them here.
            async for chunk in response.content.iter_any():
                *complete, rest = (rest + chunk).split(b"\n")
                for line in complete:
                    yield line
            if rest.strip():
                yield rest
