"""Credential helpers with bearer-token auth: the helper's answer goes to the token service, and
a token service that stops accepting it (a rotated password) makes Muster ask the helper again,
once, without a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from muster.kernel import credhelpers as rules
from muster.platform import registries
from tests import credhelper
from tests.integration import test_registry_token_auth as token_auth
from tests.integration.test_registry_token_auth import token_registry, token_service

pytestmark = pytest.mark.integration

__all__ = ["token_registry", "token_service"]  # fixtures, used by name


async def test_a_refused_helper_answer_is_refreshed_at_the_token_service(
    token_registry: tuple[str, token_auth.TokenService],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, service = token_registry
    helper = credhelper.install(tmp_path / "bin")
    monkeypatch.setenv("PATH", credhelper.path_with(helper.directory))
    helper.set(servers=[host], username=token_auth.USER, secret=token_auth.PASSWORD)
    settings = registries.RegistrySettings(
        insecure_registries=frozenset({host}),
        allow_private=True,  # the token service is another loopback port
        credential_helpers=(rules.parse_rule(f"{host}=testhelper"),),
    )
    async with registries.RegistryClient(settings) as client:
        # Nothing is there: NotFound proves the registry accepted the token the helper got.
        with pytest.raises(registries.NotFound):
            await client.manifest(host, "team/app", "v1")
        assert helper.asked == [host]
        refused_before = service.refused
        monkeypatch.setattr(token_auth, "PASSWORD", "rotated-t0ken-s3cret")
        helper.set(servers=[host], username=token_auth.USER, secret="rotated-t0ken-s3cret")
        with pytest.raises(registries.NotFound):
            await client.manifest(host, "team/other", "v1")  # a new scope: a new token
        assert service.refused == refused_before + 1  # the kept answer, once
        assert helper.asked == [host, host]
        # A helper still answering the old password is a clear refusal, not a loop.
        monkeypatch.setattr(token_auth, "PASSWORD", "rotated-again")
        with pytest.raises(registries.Unauthorized, match="token service answered HTTP 401"):
            await client.manifest(host, "team/third", "v1")
        assert len(helper.asked) == 3
