"""docs/datasets.md's revocation, run for real: the page's own Datasets are created, its
``kubectl patch`` revokes the crawl, and the dataset controller says so on the crawl and on the
Dataset derived from it, as the page says."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from muster.datasets import controllers
from muster.platform import controlplane
from tests.apiwaits import eventually
from tests.integration import docblocks
from tests.integration.datasets.conftest import INSTANCE
from tests.integration.datasets.stored import API, delete, watched

pytestmark = pytest.mark.integration


def _examples(title: str) -> list[dict[str, Any]]:
    (block,) = [b for b in docblocks.blocks("docs/datasets.md") if b.info.get("title") == title]
    return [doc for doc in yaml.safe_load_all(block.body) if doc]


async def test_the_pages_revocation_reaches_the_derived_dataset(
    control_plane: controlplane.ControlPlane,
    controller: controllers.DatasetController,
) -> None:
    made = [
        obj
        for obj in (
            *_examples("examples/web-crawl-dataset.yaml"),
            *_examples("examples/tuned-model.yaml"),
        )
        if obj["kind"] == "Dataset"
    ]
    names = [obj["metadata"]["name"] for obj in made]
    assert {"web-crawl-2024", "chat-instructions"} <= set(names)
    kube = controller.kube
    try:
        for obj in made:
            await kube.create(f"{API}/datasets", obj)
            await watched(controller, obj["metadata"]["name"], "ADDED")
        (block,) = docblocks.named("delegated", "tests/integration/datasets/test_datasets_page.py")
        (argv,) = docblocks.command_lines(block)
        assert argv[:3] == ["kubectl", "patch", "dataset"], argv
        done = controlplane.kubectl(control_plane, *argv[1:], check=False)
        assert done.returncode == 0, done.stderr

        body = await watched(controller, "web-crawl-2024")
        assert body["spec"]["revocationReason"] == "poisoned samples found"
        assert body["status"]["revoked"] is True
        derived = await kube.get(f"{API}/datasets/chat-instructions")
        assert derived["status"]["revokedThrough"] == "web-crawl-2024"

        async def notes() -> dict[str, str]:
            found = await kube.get("/apis/events.k8s.io/v1/namespaces/default/events")
            return {
                e["regarding"]["name"]: e["note"]
                for e in found.get("items", [])
                if e["reason"] == controllers.REVOKED
                and e["regarding"]["name"] in names
                and e.get("reportingInstance") == INSTANCE
            }

        said = await eventually(
            lambda: _both(notes), "DatasetRevoked on the crawl and the derived Dataset"
        )
        assert (
            said["web-crawl-2024"] == "Dataset 'web-crawl-2024' is revoked: poisoned samples found"
        )
        # The derived Dataset's Event says through which ancestor.
        assert said["chat-instructions"].startswith(
            "Dataset 'chat-instructions' is revoked through lineage: web-crawl-2024 revoked: "
            "poisoned samples found"
        )
        assert "research-only" not in said
    finally:
        await delete(kube, *names)


async def _both(notes: Any) -> dict[str, str] | None:
    found: dict[str, str] = await notes()
    return found if {"web-crawl-2024", "chat-instructions"} <= set(found) else None
