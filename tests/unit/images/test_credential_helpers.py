"""Docker credential helpers: the pure rules (which helper, what an answer means) and running
a real helper executable (caching, refresh, timeouts, failures that never leak a secret)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from muster.kernel import credhelpers as rules
from muster.platform import credhelpers
from tests import credhelper

pytestmark = pytest.mark.unit

SECRET = "s3cret-that-must-not-leak"


# -- pure rules -------------------------------------------------------------------------------


def test_rules_are_parsed_and_normalised_like_image_references() -> None:
    assert rules.parse_rule("HTTPS://Registry.Example.COM:443/ignored=ecr-login") == (
        rules.HelperRule("registry.example.com", "ecr-login")
    )
    assert rules.parse_rule("index.docker.io=docker-credential-pass") == rules.HelperRule(
        "docker.io", "pass"
    )
    glob = rules.parse_rule("123456789012.dkr.ecr.*.amazonaws.com=ecr-login")
    assert glob.is_glob and glob.pattern == "123456789012.dkr.ecr.*.amazonaws.com"
    for bad in ("ecr-login", "=gcr", "host=", "host=../../bin/sh", "host=a b", "host=-x"):
        with pytest.raises(ValueError):
            rules.parse_rule(bad)


def test_an_exact_rule_wins_over_globs_and_globs_match_in_order() -> None:
    configured = [
        rules.parse_rule("*-docker.pkg.dev=gcr"),
        rules.parse_rule("*.amazonaws.com=other"),
        rules.parse_rule("123456789012.dkr.ecr.*.amazonaws.com=ecr-login"),
        rules.parse_rule("europe-docker.pkg.dev=exact"),
    ]
    assert rules.helper_for(configured, "us-docker.pkg.dev") == "gcr"
    assert rules.helper_for(configured, "Europe-Docker.pkg.dev") == "exact"
    assert rules.helper_for(configured, "123456789012.dkr.ecr.eu-west-1.amazonaws.com") == "other"
    assert rules.helper_for(configured, "ghcr.io") is None
    assert rules.helper_for([rules.parse_rule("host.example:5000=x")], "host.example") is None


def test_helpers_are_asked_as_docker_asks() -> None:
    assert rules.server_url("docker.io") == "https://index.docker.io/v1/"
    assert rules.server_url("Registry.Example.com:443") == "registry.example.com"
    assert rules.server_url("127.0.0.1:5000") == "127.0.0.1:5000"


def test_answers_are_read_and_bad_ones_never_quoted() -> None:
    good = b'{"ServerURL": "h", "Username": "AWS", "Secret": "%s"}' % SECRET.encode()
    assert rules.parse_answer(good, "ecr-login") == ("AWS", SECRET)
    bad_answers = [
        b"Secret=" + SECRET.encode(),
        b'["' + SECRET.encode() + b'"]',
        b'{"Username": "AWS"}',
        b'{"Username": "", "Secret": "%s"}' % SECRET.encode(),
        b'{"Username": "<token>", "Secret": "%s"}' % SECRET.encode(),
    ]
    for answer in bad_answers:
        with pytest.raises(rules.HelperAnswerInvalid) as error:
            rules.parse_answer(answer, "ecr-login")
        assert "docker-credential-ecr-login" in str(error.value)
        assert SECRET not in str(error.value)


# -- running a real helper ----------------------------------------------------------------------


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> credhelper.Helper:
    installed = credhelper.install(tmp_path / "bin")
    monkeypatch.setenv("PATH", credhelper.path_with(installed.directory))
    return installed


def _helpers(**kwargs: object) -> credhelpers.CredentialHelpers:
    return credhelpers.CredentialHelpers(
        [rules.parse_rule("*.registry.test=testhelper")],
        **kwargs,  # type: ignore[arg-type]
    )


async def test_answers_are_kept_for_the_ttl_and_shared_by_concurrent_requests(
    helper: credhelper.Helper,
) -> None:
    now = [0.0]
    helper.set(servers=["a.registry.test"], username="u", secret="one")
    found = _helpers(ttl=60, clock=lambda: now[0])
    assert await found.get("elsewhere.example") is None  # no rule: no helper run
    answers = await asyncio.gather(*(found.get("a.registry.test") for _ in range(5)))
    assert answers == [("u", "one")] * 5
    assert helper.asked == ["a.registry.test"]
    helper.set(servers=["a.registry.test"], username="u", secret="two")
    now[0] = 59
    assert await found.get("a.registry.test") == ("u", "one")
    now[0] = 61  # expired: the helper is asked again
    assert await found.get("a.registry.test") == ("u", "two")
    helper.set(servers=["a.registry.test"], username="u", secret="three")
    found.forget("a.registry.test")  # the registry refused it: asked again at once
    assert await found.get("a.registry.test") == ("u", "three")
    assert found.runs == 3


async def test_failures_name_the_helper_and_never_the_secret(
    helper: credhelper.Helper, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    found = _helpers(timeout=1.0)
    helper.set(mode="missing")
    with pytest.raises(credhelpers.HelperFailed, match="docker-credential-testhelper has no cr"):
        await found.get("a.registry.test")
    for mode in ("garbage", "fail"):
        helper.set(mode=mode, secret=SECRET)
        with pytest.raises(credhelpers.HelperFailed) as error:
            await found.get("a.registry.test")
        assert "docker-credential-testhelper" in str(error.value)
        assert SECRET not in str(error.value)
    assert SECRET not in caplog.text
    helper.set(mode="hang")
    started = asyncio.get_running_loop().time()
    with pytest.raises(credhelpers.HelperFailed, match=r"did not answer .* within 1 seconds"):
        await found.get("a.registry.test")
    assert asyncio.get_running_loop().time() - started < 5


async def test_a_helper_missing_from_path_is_named(tmp_path: Path) -> None:
    rule = rules.parse_rule("x.registry.test=absent-helper")
    with pytest.raises(ValueError, match=r"docker-credential-absent-helper .* not an executable"):
        credhelpers.check_rules([rule])
    with pytest.raises(credhelpers.HelperFailed, match="docker-credential-absent-helper"):
        await credhelpers.CredentialHelpers([rule]).get("x.registry.test")


async def test_kept_answers_are_bounded(helper: credhelper.Helper) -> None:
    hosts = [f"r{index}.registry.test" for index in range(3)]
    helper.set(servers=hosts, username="u", secret="one")
    found = _helpers()
    found.MAX_REGISTRIES = 2
    for host in hosts:
        assert await found.get(host) == ("u", "one")
    assert found.expires(hosts[0]) is None  # the oldest was dropped
    assert found.expires(hosts[2]) is not None
    await found.get(hosts[0])
    assert helper.asked == [*hosts, hosts[0]]
