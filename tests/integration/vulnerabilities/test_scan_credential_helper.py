"""trivy scans an image in the password-protected registry with only a credential helper
configured: the scan relay fetches with Muster's registry client, so the helper's
credentials serve the scan as they serve the image gate, and trivy never sees them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from muster.kernel import credhelpers as rules
from muster.platform import registries
from muster.vulnerabilities import scanner
from tests import credhelper, peers, trivydb

pytestmark = pytest.mark.integration

USER, PASSWORD = "scanner", "helper-only-pa55word"


async def test_a_scan_of_a_private_image_uses_the_helpers_credentials(
    trivy_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper = credhelper.install(tmp_path / "bin")
    monkeypatch.setenv("PATH", credhelper.path_with(helper.directory))
    (tmp_path / "registry").mkdir()
    with peers.registry(tmp_path / "registry", users={USER: PASSWORD}) as registry:
        files = trivydb.debian_image_files({"libplanted": "1.0-1", "safe": "2.0-1"})
        digest = peers.push_image(
            registry,
            "private/app",
            "v1",
            files=files,
            workdir=tmp_path,
            credentials=(USER, PASSWORD),
        )
        image = f"{registry.host}/private/app@{digest}"
        cache = tmp_path / "trivy"
        shutil.copytree(trivy_cache / "db", cache / "db")
        settings = registries.RegistrySettings(
            insecure_registries=frozenset({registry.host}),
            credential_helpers=(rules.parse_rule(f"{registry.host}=testhelper"),),
        )
        async with registries.RegistryClient(settings) as client:
            trivy = scanner.Trivy(scanner.TrivySettings(cache_dir=cache), client)
            helper.set(mode="missing")
            with pytest.raises(scanner.ScanError) as refused:
                await trivy.scan(image)
            assert "docker-credential-testhelper has no credentials" in str(refused.value)
            helper.set(servers=[registry.host], username=USER, secret=PASSWORD)
            status = await trivy.scan(image)
        assert status.error == ""
        assert {finding.id for finding in status.findings} == {"CVE-2099-0001", "CVE-2099-0002"}
        assert PASSWORD not in repr(status)
