"""A tiny vulnerability DB and images with a planted vulnerable Debian package."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests import peers, trivydb

PLANTED = (
    trivydb.Advisory("CVE-2099-0001", "libplanted", "HIGH", fixed_version="1.0-2"),
    trivydb.Advisory("CVE-2099-0002", "libplanted", "LOW"),  # no fix yet
    trivydb.Advisory("CVE-2099-0003", "safe", "CRITICAL", fixed_version="1.5-1"),  # 2.0 is fixed
)


@dataclasses.dataclass(frozen=True)
class Images:
    vulnerable: str  # host/repo@digest
    clean: str
    digest: str


@pytest.fixture(scope="session")
def trivy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("trivy-cache")
    trivydb.write_db(cache, PLANTED)
    return cache


@pytest.fixture(scope="session")
def planted_images(registry: peers.Registry, tmp_path_factory: pytest.TempPathFactory) -> Images:
    workdir = tmp_path_factory.mktemp("planted-images")
    files = trivydb.debian_image_files({"libplanted": "1.0-1", "safe": "2.0-1"})
    digest = peers.push_image(registry, "vulns/app", "v1", files=files, workdir=workdir)
    clean = peers.push_image(
        registry,
        "vulns/clean",
        "v1",
        files=trivydb.debian_image_files({"safe": "2.0-1"}),
        workdir=workdir,
    )
    return Images(
        vulnerable=f"{registry.host}/vulns/app@{digest}",
        clean=f"{registry.host}/vulns/clean@{clean}",
        digest=digest,
    )
