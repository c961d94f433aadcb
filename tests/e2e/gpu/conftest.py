"""A ``muster run`` of its own for the GPU stack tests: it must read image configs from the
plain-HTTP test registry (``--insecure-registry``), which the session operator does not.

Its webhook configurations have their own names and select only namespaces labelled
``muster.dev/e2e=gpu``; those namespaces also carry ``muster.dev/ignore=true`` so that the
session operator's webhooks (which honour the opt-out label) leave them to this one.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from muster.app import localoperator
from muster.gpu import nodeagent
from muster.platform import controlplane, kubeapi
from tests import peers
from tests.e2e.suites import SUITE_LABEL, suite_labels, suite_operator, suite_selector

__all__ = [
    "NAMESPACE_LABELS",
    "SUITE_LABEL",
    "eventually",
    "gpu_operator",
    "publish_node",
    "warnings_of",
]

OWN_NAMESPACE = "muster-gpu-e2e"
NAMESPACE_LABELS = suite_labels("gpu")


@pytest.fixture(scope="package")
def gpu_operator(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    with suite_operator(
        control_plane,
        configuration="muster.dev.gpu-e2e",
        own_namespace=OWN_NAMESPACE,
        workdir=tmp_path_factory.mktemp("muster-gpu-operator"),
        select=suite_selector("gpu"),
        extra_args=(
            f"--insecure-registry={registry.host}",
            # The GPU stack is what is judged here; images no ImagePolicy covers are
            # tests/e2e/images/test_uncovered.py's.
            "--uncovered-images=allow",
        ),
    ) as operator:
        yield operator


def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """The first truthy answer of ``check``, asked every 0.2 s for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return result


def publish_node(plane: controlplane.ControlPlane, node: str, root: Path) -> None:
    """What ``muster node-agent`` does each interval: measure under the host root, publish."""

    async def publish() -> None:
        api = kubeapi.KubeApi(kubeapi.Credentials.resolve(str(plane.kubeconfig)))
        try:
            await nodeagent.publish(api, node, nodeagent.measure(root, use_nvml=False))
        finally:
            await api.close()

    asyncio.run(publish())


def warnings_of(headers: Mapping[str, str] | None) -> list[str]:
    """The texts of an apiserver response's Warning headers (``299 - "<text>"``, several
    joined by ", " when folded into one header, quotes and backslashes escaped)."""
    found: list[str] = []
    for key, value in (headers or {}).items():
        if key.lower() == "warning":
            texts = re.findall(r'299 - "((?:[^"\\]|\\.)*)"', value)
            found.extend(re.sub(r"\\(.)", r"\1", text) for text in texts)
    return found
