"""``muster dev up`` yields a control plane with Muster in it; ``dev down`` leaves nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from muster.adapters import controlplane, processes, tools

pytestmark = pytest.mark.e2e


def _muster(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "muster", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=180,
        check=False,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def test_dev_up_then_kubectl_then_dev_down_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {"MUSTER_DEV_DIR": str(tmp_path / "dev")}
    up = _muster("dev", "up", "--format=json", env=env)
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    state = controlplane.ControlPlaneState.load(Path(info["dir"]))
    try:
        assert set(state.pids) >= {"etcd", "kube-apiserver", "muster-operator"}
        kubectl = subprocess.run(
            [
                str(tools.find("kubectl")),
                f"--kubeconfig={info['kubeconfig']}",
                "get",
                "ns",
                "-o",
                "name",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert {"namespace/default", "namespace/demo", "namespace/muster-system"} <= set(
            kubectl.stdout.split()
        )
        denied = subprocess.run(
            [
                str(tools.find("kubectl")),
                f"--kubeconfig={info['kubeconfig']}",
                "-n",
                "demo",
                "run",
                "unpinned",
                "--image=nginx:1.27",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert denied.returncode == 1
        assert "not pinned by digest" in denied.stderr

        again = _muster("dev", "up", env=env)
        assert again.returncode == 2
        assert "already up" in again.stderr
    finally:
        down = _muster("dev", "down", "--format=json", env=env)
    assert down.returncode == 0, down.stderr
    assert set(json.loads(down.stdout)["stopped"]) == set(state.pids)
    assert [name for name, pid in state.pids.items() if _alive(pid)] == []
    assert [name for name, port in state.ports.items() if processes.port_is_open(port)] == []
    assert not Path(info["dir"]).exists()
