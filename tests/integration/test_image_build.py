"""The container image, built by hack/build-image.sh with buildah on a debootstrapped Debian base,
then run: `muster --version`, `trivy --version` (the scanner it ships), its user, and a node-agent
measurement of a host root made from the real GPU captures (mounted read-only at /host, as the
DaemonSet mounts the node's files)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import muster
from tests import gpuroots
from tests.paths import REPO

pytestmark = pytest.mark.integration


def test_the_image_builds_and_runs_the_cli_and_the_node_agent(tmp_path: Path) -> None:
    root = gpuroots.host_root(tmp_path / "host", driver="580.95.05", toolkit="1.17.8")
    result = subprocess.run(
        ["bash", str(REPO / "hack" / "build-image.sh"), "--node-agent-root", str(root)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert report["version"] == f"muster {muster.__version__}"
    # The vulnerability gate's scanner ships in the image, at the version the tests use.
    assert report["trivy"] == "0.76.0"
    assert report["user"] == "65532:65532"  # non-root, as the chart's runAsNonRoot needs
    measured = json.loads(report["node-agent"])
    assert measured["driverVersion"] == "580.95.05"
    assert measured["toolkitVersion"] == "1.17.8"
    assert measured["moduleDigests"] == {f"/{gpuroots.MODULE}": gpuroots.module_digest()}
    size = int(report["size"].removesuffix(" bytes"))
    assert 50_000_000 < size < 600_000_000, size
    print(f"image size: {size} bytes; {result.stderr.strip()}")
