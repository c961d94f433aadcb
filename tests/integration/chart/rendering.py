"""The real helm, run against the chart in the checkout, and views of what it renders."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests import peers

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "muster"
SCENARIOS = sorted((CHART / "ci").glob("*.yaml"))
# helm template knows no cluster: tell it which Kubernetes the chart is rendered for.
KUBE_VERSION = "1.36.0"


def helm(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return peers.run_tool("helm", *args, check=check, timeout=timeout)


def template(*args: str, release: str = "muster", namespace: str = "muster-system") -> str:
    return helm(
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        *args,
    ).stdout


def documents(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"] if "template" in doc["spec"] else doc["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def refusal(*args: str, schema: bool = True, kube_version: str = KUBE_VERSION) -> str:
    """What helm says when it refuses to render the chart with these arguments.

    ``schema=False`` renders without values.schema.json, so that only the guards in the
    templates can refuse.
    """
    result = helm(
        "template",
        "muster",
        str(CHART),
        "--kube-version",
        kube_version,
        *(() if schema else ("--skip-schema-validation",)),
        *args,
        check=False,
    )
    assert result.returncode != 0, result.stdout
    return result.stderr
