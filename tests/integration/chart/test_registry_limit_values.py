"""The chart passes the bound on requests in flight per registry to ``muster run``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from muster.cli import build_parser
from muster.platform import registries
from tests.integration.chart import rendering

pytestmark = pytest.mark.integration
FLAG = "--registry-max-requests"


def _operator_args(*helm_args: str) -> list[str]:
    docs = rendering.documents(rendering.template(*helm_args))
    (operator,) = [
        c
        for d in rendering.by_kind(docs, "Deployment")
        for c in rendering.containers(d)
        if (c.get("args") or [""])[0] == "run"
    ]
    return [str(arg) for arg in operator["args"]]


def test_the_default_is_muster_runs_own_default() -> None:
    args = _operator_args()
    assert f"{FLAG}={registries.RegistrySettings.max_requests_per_registry}" in args


def test_a_value_reaches_the_parser(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"operator": {"registryMaxRequests": 4}}))
    args = _operator_args("-f", str(values))
    assert f"{FLAG}=4" in args
    parsed = build_parser().parse_args([a for a in args if not a.startswith("--trivy-cache")])
    assert parsed.registry_max_requests == 4


def test_the_schema_refuses_no_requests_at_all() -> None:
    refused = rendering.refusal("--set", "operator.registryMaxRequests=0")
    assert "registryMaxRequests" in refused
