"""Credential helpers against the password-protected registry: a real
``docker-credential-testhelper`` executable on PATH, a real registry demanding basic auth
(htpasswd), and Muster's registry client with only the helper configured."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from muster.kernel import credhelpers as rules
from muster.kernel import references
from muster.platform import registries
from tests import credhelper, peers
from tests.integration.images.test_cli import run_cli

pytestmark = pytest.mark.integration

USER, FIRST, SECOND = "ci", "first-pa55word", "rotated-pa55word"


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[peers.Registry, Path]]:
    workdir = tmp_path_factory.mktemp("helper-registry")
    with peers.registry(workdir, users={USER: FIRST}) as running:
        yield running, workdir / "htpasswd"


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> credhelper.Helper:
    installed = credhelper.install(tmp_path / "bin")
    monkeypatch.setenv("PATH", credhelper.path_with(installed.directory))
    return installed


def _rotate(htpasswd: Path, password: str) -> None:
    """The registry re-reads its htpasswd file when it changes: the old password stops working."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"{USER}:{hashed}\n")


def _settings(host: str, **fields: object) -> registries.RegistrySettings:
    return registries.RegistrySettings(
        insecure_registries=frozenset({host}),
        credential_helpers=(rules.parse_rule(f"{host}=testhelper"),),
        **fields,  # type: ignore[arg-type]
    )


async def test_a_helper_alone_opens_the_private_registry_and_recovers_from_rotation(
    private: tuple[peers.Registry, Path], helper: credhelper.Helper, tmp_path: Path
) -> None:
    registry, htpasswd = private
    _rotate(htpasswd, FIRST)
    digest = peers.push_image(
        registry, "helper/app", "v1", workdir=tmp_path, credentials=(USER, FIRST)
    )
    image = references.parse(registry.ref("helper/app", "v1"))
    helper.set(servers=[registry.host], username=USER, secret=FIRST)
    async with registries.RegistryClient(_settings(registry.host)) as client:
        assert await client.resolve(image) == digest
        assert await client.resolve(image) == digest
        assert client.helpers is not None
        assert helper.asked == [registry.host]  # kept, not asked per request
        # The password is rotated; the helper's kept answer is now refused.
        _rotate(htpasswd, SECOND)
        async with registries.RegistryClient(
            registries.RegistrySettings(insecure_registries=frozenset({registry.host})),
            {registry.host: registries.Credentials(USER, FIRST)}.get,
        ) as stale:
            with pytest.raises(registries.Unauthorized):
                await stale.resolve(image)
        helper.set(servers=[registry.host], username=USER, secret=SECOND)
        # No restart: the refusal makes the client ask the helper again, once, and retry.
        assert await client.resolve(image) == digest
        assert len(helper.asked) == 2
    _rotate(htpasswd, FIRST)


async def test_the_pods_own_secret_comes_before_the_helper(
    private: tuple[peers.Registry, Path], helper: credhelper.Helper, tmp_path: Path
) -> None:
    registry, htpasswd = private
    _rotate(htpasswd, FIRST)
    digest = peers.push_image(registry, "helper/own", workdir=tmp_path, credentials=(USER, FIRST))
    helper.set(servers=[registry.host], username=USER, secret=FIRST)
    wrong = {registry.host: registries.Credentials(USER, "not-the-password")}
    async with registries.RegistryClient(_settings(registry.host), wrong.get) as client:
        with pytest.raises(registries.Unauthorized, match="refused access"):
            await client.manifest(registry.host, "helper/own", digest)
    assert helper.asked == []


async def test_helper_failures_are_clear_and_keep_the_secret(
    private: tuple[peers.Registry, Path],
    helper: credhelper.Helper,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, _ = private
    caplog.set_level(logging.DEBUG)
    secret = "garbage-s3cret-never-logged"
    settings = _settings(registry.host, credential_helper_timeout=1.0)
    async with registries.RegistryClient(settings) as client:
        helper.set(mode="missing")
        with pytest.raises(registries.Unauthorized) as missing:
            await client.manifest(registry.host, "helper/app", "v1")
        assert "credential helper docker-credential-testhelper has no credentials for" in str(
            missing.value
        )
        assert registry.host in str(missing.value)
        helper.set(mode="garbage", secret=secret)
        with pytest.raises(registries.Unauthorized) as garbage:
            await client.manifest(registry.host, "helper/app", "v1")
        assert "docker-credential-testhelper answered something that is not JSON" in str(
            garbage.value
        )
        helper.set(mode="hang")
        with pytest.raises(registries.Unauthorized, match=r"did not answer .* within 1 seconds"):
            await client.manifest(registry.host, "helper/app", "v1")
        assert secret not in str(garbage.value)
    assert secret not in caplog.text


def test_muster_run_refuses_unusable_helper_rules(
    helper: credhelper.Helper, tmp_path: Path
) -> None:
    for option, expected in [
        ("--credential-helper=ghcr.io", "--credential-helper: 'ghcr.io' is not REGISTRY=NAME"),
        (
            "--credential-helper=ghcr.io=not-installed",
            "--credential-helper: docker-credential-not-installed (for ghcr.io) is not an "
            "executable on PATH",
        ),
        ("--credential-helper-ttl=0", "--credential-helper-ttl 0: must be above 0 seconds"),
    ]:
        for name in ("tls.crt", "tls.key"):
            (tmp_path / name).write_text("")  # checked after the options this test is about
        code, _, err = run_cli(
            "run",
            f"--tls-cert-file={tmp_path / 'tls.crt'}",
            f"--tls-key-file={tmp_path / 'tls.key'}",
            "--credential-helper=ghcr.io=testhelper",
            option,
        )
        assert code == 2, err
        assert expected in err
