"""Every chart value an area declares for its flags exists, and reaches the flag.

The areas declare which chart value each of their ``muster run`` flags comes from
(``Flags.chart_values``); here the real helm renders the chart with those values set and the
real ``muster run`` parser reads the Deployment's arguments back into settings.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from muster.app import areas
from muster.cli import build_parser
from muster.cli import run as run_cli
from tests.integration.chart import rendering

pytestmark = pytest.mark.integration

# Values that turn every area flag on, with values that differ from the defaults.
VALUES = {
    "images": {"uncovered": "warn"},
    "operator": {
        "evictRevokedModelPods": True,
        "keepBoms": False,
        "drift": {"intervalSeconds": 42},
        "scanning": {
            "enabled": True,
            "concurrency": 3,
            "timeoutSeconds": 99,
            "dbRepository": "registry.example/trivy-db",
        },
    },
    "policyReports": {"enabled": True, "maxResults": 7, "auditNamespaces": True},
    "namespaceGuard": {
        "enabled": True,
        "managers": {"groups": ["platform"], "users": ["alice"]},
        "protectedLabels": ["team.example/tier"],
    },
}


def _lookup(values: dict[str, Any], path: str) -> Any:
    found: Any = values
    for key in path.split("."):
        assert isinstance(found, dict) and key in found, f"values.yaml has no {path}"
        found = found[key]
    return found


def _declared() -> list[tuple[str, str, str]]:
    return [
        (area.name, flag, value)
        for area in areas.AREAS
        if area.flags is not None
        for flag, value in area.flags.chart_values.items()
    ]


def test_every_declared_chart_value_is_in_values_yaml() -> None:
    defaults = yaml.safe_load((rendering.CHART / "values.yaml").read_text())
    declared = _declared()
    assert len(declared) >= 10
    for _, _, path in declared:
        _lookup(defaults, path)


def test_each_declared_value_reaches_its_flag_and_the_settings(tmp_path: Any) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(VALUES))
    docs = rendering.documents(rendering.template("-f", str(values_file)))
    (operator,) = [
        c
        for d in rendering.by_kind(docs, "Deployment")
        for c in rendering.containers(d)
        if (c.get("args") or [""])[0] == "run"
    ]
    args = [str(arg) for arg in operator["args"]]
    for area, flag, path in _declared():
        negated = f"--no-{flag[2:]}"  # a boolean flag turned off
        assert any(arg in (flag, negated) or arg.startswith(f"{flag}=") for arg in args), (
            f"{area}: {flag} (from {path}) is not passed"
        )
    # The real parser reads them back into the settings the areas declared (the cache
    # directory is the pod's volume, not a directory here).
    parsed = build_parser().parse_args([a for a in args if not a.startswith("--trivy-cache")])
    settings = run_cli._area_settings(parsed)
    assert str(settings["uncovered_images"]) == "warn"
    assert settings["evict_revoked_model_pods"] is True
    assert settings["keep_boms"] is False
    assert settings["drift_interval"] == 42
    assert settings["scan_concurrency"] == 3 and settings["scan_timeout"] == 99
    assert settings["trivy_db_repository"] == "registry.example/trivy-db"
    assert settings["policy_reports"] is True and settings["audit_namespaces"] is True
    assert settings["policy_report_max_results"] == 7
    guard = settings["namespace_guard"]
    assert guard.manager_groups == ("platform",) and guard.manager_users == ("alice",)
    assert guard.protected_labels == ("team.example/tier",)
