"""The areas' declarations are the one source every consumer reads.

Each assertion here would fail if an area's registration and what ``muster run``, the drift
pass, metrics or the CRD catalogue use drifted apart.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import pytest

from muster.admission import server
from muster.app import admissiongates, areas, catalog, runtime
from muster.app.settings import OperatorSettings
from muster.cli import build_parser, common
from muster.cli import run as run_cli
from muster.platform import objectstore, registries

pytestmark = pytest.mark.unit


def test_area_names_are_unique_and_gates_come_first() -> None:
    names = [area.name for area in areas.AREAS]
    assert len(names) == len(set(names))
    assert list(areas.AREAS[: len(areas.GATES)]) == list(areas.GATES)


def test_every_check_belongs_to_one_area() -> None:
    checks = [check for area in areas.AREAS for check in area.checks]
    assert len(checks) == len(set(checks))
    for area in areas.AREAS:
        assert set(area.drift_checks) <= set(area.checks), area.name


def test_the_crd_catalogue_is_the_areas_resources() -> None:
    kinds = [crd["spec"]["names"]["kind"] for crd in catalog.definitions()]
    declared = [build()["spec"]["names"]["kind"] for a in areas.AREAS for build in a.resources]
    assert kinds == declared
    assert set(kinds) == {
        "GPUStackPolicy",
        "Dataset",
        "DatasetPolicy",
        "Model",
        "ModelPolicy",
        "ImagePolicy",
        "ImageScan",
        "WorkloadBOM",
    }


def test_metrics_series_come_from_the_declarations() -> None:
    labels = areas.metric_labels()
    assert labels.checks == tuple(c for a in areas.AREAS for c in a.checks)
    assert set(labels.drift_checks) == {"image-signature", "gpu-stack", "datasets", "models"}
    assert "vulnerabilities" in labels.checks and "vulnerabilities" not in labels.drift_checks


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def test_each_area_flag_sets_fields_of_the_settings_and_no_two_areas_set_the_same() -> None:
    fields = {field.name for field in dataclasses.fields(OperatorSettings)}
    args = _parse("--tls-cert-file=c", "--tls-key-file=k")
    seen: dict[str, str] = {}
    for area in areas.AREAS:
        if area.flags is None:
            continue
        for name in area.flags.settings(args):
            assert name in fields, f"{area.name} sets {name}, not a setting"
            assert name not in seen, f"{name} is set by {seen[name]} and {area.name}"
            seen[name] = area.name
    # The areas' flags reach the settings muster run builds.
    assert {"uncovered_images", "drift_interval", "keep_boms", "namespace_guard"} <= set(seen)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--drift-interval=-1",), "--drift-interval must not be negative"),
        (("--scan-concurrency=0",), "--scan-concurrency and --scan-timeout must be positive"),
        (("--trivy-cache-dir=/nonexistent/trivy",), "is not a directory"),
    ],
)
def test_a_bad_area_flag_is_a_clear_error(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(common.CommandError, match=message):
        run_cli._area_settings(_parse("--tls-cert-file=c", "--tls-key-file=k", *argv))


def test_area_flags_reach_the_settings(tmp_path: Any) -> None:
    args = _parse(
        "--tls-cert-file=c",
        "--tls-key-file=k",
        "--uncovered-images=warn",
        "--drift-interval=7",
        "--no-keep-boms",
        "--namespace-manager-group=platform",
        f"--trivy-cache-dir={tmp_path}",
        "--scan-concurrency=3",
    )
    settings = OperatorSettings(
        webhook=runtime.webhooks.WebhookSettings(), **run_cli._area_settings(args)
    )
    assert str(settings.uncovered_images) == "warn"
    assert settings.drift_interval == 7
    assert settings.keep_boms is False
    assert settings.namespace_guard.manager_groups == ("platform",)
    assert settings.trivy_cache_dir == tmp_path and settings.scan_concurrency == 3


def test_check_builds_the_gates_muster_run_builds() -> None:
    # ``muster check`` imports muster.app.admissiongates alone: the areas with gates must be
    # exactly those, in the same order, or check would judge with other gates than admission.
    assert [area for area in areas.AREAS if area.gates is not None] == list(admissiongates.GATES)
    assert areas.GATES is admissiongates.GATES
    settings = OperatorSettings(webhook=server.WebhookSettings())
    services = runtime.Services(
        settings=settings,
        kube=objectstore.ObjectStore([]),  # as muster check gives it
        registries=registries.RegistryClient(settings.registry),
    )
    run_gates = [type(gate) for gate in areas.gates(services)]
    assert run_gates == [type(gate) for gate in admissiongates.gates(services)]
    assert len(run_gates) >= len(admissiongates.GATES)
