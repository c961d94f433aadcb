"""Bearer-token auth against a real registry: Debian's docker-registry with ``auth: token``.

The registry verifies every token itself (ES256 JWT, x5c chain to its root bundle, issuer,
audience, expiry, granted actions); the token service is a few lines here, because no token
server ships as a package. It grants only to the right user and password, and only ``pull``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from muster.kernel import pki
from muster.platform import localregistry, processes, registries
from tests import peers

pytestmark = pytest.mark.integration

SERVICE = "muster-test-registry"
ISSUER = "muster-test-token-service"
USER, PASSWORD = "ci", "t0ken-s3cret"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    def __init__(self, signer: pki.KeyPair) -> None:
        self.signer = signer
        self.issued: list[str] = []  # scopes granted
        self.refused = 0

    def token(self, scope: str) -> str:
        key = serialization.load_pem_private_key(self.signer.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        leaf = x509.load_pem_x509_certificate(self.signer.cert_pem)
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode()],
        }
        _, name, actions = scope.split(":")
        granted = [a for a in actions.split(",") if a == "pull"]  # read-only tokens
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": USER,
            "aud": SERVICE,
            "iat": now,
            "nbf": now - 10,
            "exp": now + 300,
            "jti": f"{now}-{len(self.issued)}",
            "access": [{"type": "repository", "name": name, "actions": granted}],
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = utils.decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        self.issued.append(scope)
        return f"{signing_input}.{_b64(signature)}"

    async def handle(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            self.refused += 1
            return web.Response(status=401, text="bad credentials")
        scope = request.query.get("scope", "")
        if request.query.get("service") != SERVICE or not scope.startswith("repository:"):
            return web.Response(status=400, text="bad request")
        return web.json_response({"token": self.token(scope), "expires_in": 300})


@pytest.fixture(scope="module")
def token_service() -> Iterator[tuple[TokenService, pki.KeyPair]]:
    ca = pki.new_ca("muster test token CA")
    signer = pki.issue(ca, "token-signer")
    yield TokenService(signer), ca


@pytest.fixture
async def token_registry(
    token_service: tuple[TokenService, pki.KeyPair], tmp_path: Path
) -> AsyncIterator[tuple[str, TokenService]]:
    service, ca = token_service
    app = web.Application()
    app.router.add_get("/token", service.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = processes.free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    root = tmp_path / "token-root.crt"
    root.write_bytes(ca.cert_pem)
    running = localregistry.start(
        tmp_path / "registry",
        extra_config={
            "auth": {
                "token": {
                    "realm": f"http://127.0.0.1:{port}/token",
                    "service": SERVICE,
                    "issuer": ISSUER,
                    "rootcertbundle": str(root),
                }
            }
        },
    )
    try:
        yield running.host, service
    finally:
        running.stop()
        await runner.cleanup()


async def test_bearer_tokens_are_fetched_cached_and_scoped(
    token_registry: tuple[str, TokenService], tmp_path: Path
) -> None:
    host, service = token_registry
    # The token service is another loopback port, which egress control refuses by default.
    settings = registries.RegistrySettings(
        insecure_registries=frozenset({host}), allow_private=True
    )
    creds = {host: registries.Credentials(USER, PASSWORD)}
    async with registries.RegistryClient(settings, creds.get) as client:
        # Nothing is there yet: the registry still demands and verifies a token first.
        with pytest.raises(registries.NotFound):
            await client.manifest(host, "team/app", "v1")
        assert service.issued == ["repository:team/app:pull"]
        with pytest.raises(registries.NotFound):
            await client.manifest(host, "team/app", "v2")
        assert client.stats.token_requests == 1  # the token was cached for the scope
    async with registries.RegistryClient(settings) as anonymous:
        with pytest.raises(registries.Unauthorized, match="token service answered HTTP 401"):
            await anonymous.manifest(host, "team/app", "v1")
    wrong = {host: registries.Credentials(USER, "nope")}
    async with registries.RegistryClient(settings, wrong.get) as client:
        with pytest.raises(registries.Unauthorized) as raised:
            await client.manifest(host, "team/app", "v1")
    assert "nope" not in str(raised.value)
    assert service.refused >= 2
    assert peers.Registry(host=host, referrers_api=False).ref("x") == f"{host}/x:latest"
