"""``muster bom`` against the real apiserver: what it says when there is nothing to collect."""

from __future__ import annotations

from pathlib import Path

import pytest

from muster.app import localoperator
from muster.cli import common
from muster.platform import controlplane
from tests import kubeclients
from tests.commandline import muster

pytestmark = pytest.mark.integration


def refused(*argv: str) -> str:
    """What ``muster bom ARGV`` says on stderr, having checked that it exits with an error."""
    code, out, err = muster("bom", *argv)
    assert (code, out) == (common.EXIT_ERROR, ""), (code, out, err)
    return err


@pytest.mark.parametrize(
    ("scope", "target"),
    [("pod", "only-a-name"), ("workload", "ns/name"), ("namespace", "a/b"), ("cluster", "x")],
)
def test_malformed_targets_are_named(scope: str, target: str) -> None:
    assert f"bom {scope} takes" in refused(scope, target)


def test_nothing_stored_is_an_error_not_an_empty_bom(
    control_plane: controlplane.ControlPlane, tmp_path: Path
) -> None:
    localoperator.install_crds(control_plane)
    namespace = kubeclients.namespace(control_plane, "bom-empty")
    kubeconfig = str(control_plane.kubeconfig)
    output = tmp_path / "bom.json"
    err = refused("workload", f"{namespace}/Deployment/absent", "--kubeconfig", kubeconfig)
    assert "no BOM stored for workload" in err
    err = refused("namespace", namespace, "--kubeconfig", kubeconfig, "-o", str(output))
    assert "no BOMs stored for namespace" in err
    assert "no BOM stored for pod" in refused(
        "pod", f"{namespace}/absent", "--kubeconfig", kubeconfig
    )
    assert not output.exists()
