"""``muster bom`` against the real apiserver: what it says when there is nothing to collect."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from muster.adapters import controlplane, localoperator
from muster.cli import bom, common
from tests import kubeclients

pytestmark = pytest.mark.integration


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="muster")
    bom.register(parser.add_subparsers())
    args = parser.parse_args(["bom", *argv])
    result: int = args.handler(args)
    return result


@pytest.mark.parametrize(
    ("scope", "target"),
    [("pod", "only-a-name"), ("workload", "ns/name"), ("namespace", "a/b"), ("cluster", "x")],
)
def test_malformed_targets_are_named(scope: str, target: str) -> None:
    with pytest.raises(common.CommandError, match=f"bom {scope} takes"):
        run(scope, target)


def test_nothing_stored_is_an_error_not_an_empty_bom(
    control_plane: controlplane.ControlPlane, tmp_path: Path
) -> None:
    localoperator.install_crds(control_plane)
    namespace = kubeclients.namespace(control_plane, "bom-empty")
    kubeconfig = str(control_plane.kubeconfig)
    output = tmp_path / "bom.json"
    with pytest.raises(common.CommandError, match="no BOM stored for workload"):
        run("workload", f"{namespace}/Deployment/absent", "--kubeconfig", kubeconfig)
    with pytest.raises(common.CommandError, match="no BOMs stored for namespace"):
        run("namespace", namespace, "--kubeconfig", kubeconfig, "-o", str(output))
    with pytest.raises(common.CommandError, match="no BOM stored for pod"):
        run("pod", f"{namespace}/absent", "--kubeconfig", kubeconfig)
    assert not output.exists()
