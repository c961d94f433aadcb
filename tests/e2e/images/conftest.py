"""An operator of its own for the image tests: it must speak plain HTTP to the test registry.

Its webhook configurations have their own names and select only namespaces labelled
``muster-e2e.dev/images``, so they never meet the session operator's (which selects
``muster.dev/enforce``) and the session operator never judges these namespaces.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from muster.app import localoperator
from muster.platform import controlplane
from tests import peers
from tests.e2e.suites import suite_operator
from tests.integration.images.conftest import signers

__all__ = ["SELECT_LABEL", "image_operator", "signers"]

OWN_NAMESPACE = "muster-images-e2e"
SELECT_LABEL = "muster-e2e.dev/images"


def _select(hook: dict[str, Any]) -> None:
    mode = hook["clientConfig"]["url"].rsplit("/", 1)[-1]
    hook["namespaceSelector"] = {"matchLabels": {SELECT_LABEL: mode}}


@pytest.fixture(scope="module")
def image_operator(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    with suite_operator(
        control_plane,
        configuration="images-e2e.muster.dev",
        own_namespace=OWN_NAMESPACE,
        workdir=tmp_path_factory.mktemp("muster-images"),
        select=_select,
        extra_args=(f"--insecure-registry={registry.host}",),
    ) as operator:
        yield operator
