"""Operator-level registry credentials (a mounted dockerconfigjson) and start-up file checks."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from muster.kernel import pki
from muster.platform import registries

pytestmark = pytest.mark.unit


def _write(path: Path, entries: dict[str, tuple[str, str]]) -> None:
    auths = {
        host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
        for host, (user, password) in entries.items()
    }
    path.write_text(json.dumps({"auths": auths}))


def test_entries_are_normalised_and_reread_when_the_secret_changes(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    _write(path, {"https://index.docker.io/v1/": ("hub", "one"), "ghcr.io": ("gh", "two")})
    found = registries.CredentialsFile(path)
    assert found("docker.io") == registries.Credentials("hub", "one")
    assert found("ghcr.io") == registries.Credentials("gh", "two")
    assert found("quay.io") is None
    _write(path, {"ghcr.io": ("gh", "rotated")})
    os.utime(path, ns=(1, 1))  # a distinct stamp even within the same clock tick
    assert found("ghcr.io") == registries.Credentials("gh", "rotated")
    assert found.registries == frozenset({"ghcr.io"})


def test_a_broken_update_keeps_the_last_good_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.json"
    _write(path, {"ghcr.io": ("gh", "good-password")})
    found = registries.CredentialsFile(path)
    path.write_text('{"auths": {"ghcr.io": {"auth": "%%%"}}}')
    os.utime(path, ns=(2, 2))
    assert found("ghcr.io") == registries.Credentials("gh", "good-password")
    assert "keeping the previous credentials" in caplog.text
    assert "good-password" not in caplog.text


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "No such file or directory"),
        ("not json", "pull secret is not JSON"),
        ('{"registry": "x"}', "pull secret has no auths object"),
        ('{"auths": {"ghcr.io": {"auth": "!!secret!!"}}}', "has invalid auth"),
    ],
)
def test_unusable_files_fail_at_start_up_without_their_content(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=reason) as raised:
        registries.check_files(None, path)
    assert str(raised.value).startswith(f"--registry-credentials: registry credentials file {path}")
    assert "!!secret!!" not in str(raised.value)


def test_ca_bundle_is_checked_at_start_up(tmp_path: Path) -> None:
    good = tmp_path / "ca.crt"
    good.write_bytes(pki.new_ca("test CA").cert_pem)
    registries.check_files(good, None)
    bad = tmp_path / "bad.crt"
    bad.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match=f"--registry-ca-file {bad}: not a readable PEM"):
        registries.check_files(bad, None)
    with pytest.raises(ValueError, match="not a readable PEM CA bundle"):
        registries.check_files(tmp_path / "missing.crt", None)
