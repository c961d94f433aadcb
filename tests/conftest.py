"""Session-wide real peers. Each is started on random loopback ports and stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from muster.platform import controlplane
from tests import peers

LAYERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test says which layer it belongs to, so `-m unit` and friends select honestly."""
    unmarked = [
        item.nodeid
        for item in items
        if sum(item.get_closest_marker(layer) is not None for layer in LAYERS) != 1
    ]
    if unmarked:
        raise pytest.UsageError(
            f"tests must carry exactly one of the markers {LAYERS}: {', '.join(unmarked[:10])}"
        )


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    """A real etcd + kube-apiserver (+ controller-manager) for the whole session."""
    plane = controlplane.start(tmp_path_factory.mktemp("control-plane"))
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.Registry]:
    """Debian's docker-registry: no referrers API, so cosign v3 uses the tag fallback."""
    with peers.registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="session")
def referrers_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.Registry]:
    """go-containerregistry's registry, serving the OCI 1.1 referrers API."""
    with peers.referrers_registry(tmp_path_factory.mktemp("referrers-registry")) as running:
        yield running


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[peers.Prometheus]:
    with peers.prometheus(tmp_path) as running:
        yield running


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
