from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import muster
from muster.cli import main
from tests import commandline

pytestmark = pytest.mark.unit


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"muster {muster.__version__}"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: muster" in capsys.readouterr().err


def test_unknown_option_is_a_usage_error() -> None:
    assert main(["run", "--no-such-flag"]) == 2


def test_run_refuses_to_serve_without_tls(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "TLS" in capsys.readouterr().err


def test_run_names_a_missing_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.crt"
    assert main(["run", f"--tls-cert-file={missing}", f"--tls-key-file={missing}"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "Traceback" not in err


def test_dev_down_with_nothing_up_is_fine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dev", "down", f"--dir={tmp_path / 'none'}", "--format=json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"stopped": []}


def test_python_dash_m_runs_the_same_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "muster", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"muster {muster.__version__}"


def test_run_flags_reach_the_operator_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every flag `muster run` offers must land in the settings it runs with.
    from muster.cli import run as run_cli

    code, seen = commandline.run_settings(
        tmp_path,
        monkeypatch,
        "--port=9999",
        "--insecure-registry=127.0.0.1:5000",
        "--admission-deadline=3",
        "--priority=7",
        "--namespace=ops",
        "--peering=muster",
    )
    assert code == 0
    (settings,) = seen
    assert settings.webhook.port == 9999
    assert settings.registry.insecure_registries == frozenset({"127.0.0.1:5000"})
    assert settings.admission_deadline == 3
    assert settings.priority == 7
    assert settings.own_namespace == "ops"
    assert settings.peering == "muster"
    assert run_cli.register is not None


@pytest.mark.parametrize("scope", [["cluster"], ["namespace", "ml"]])
def test_bom_with_an_unusable_kubeconfig_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], scope: list[str]
) -> None:
    (tmp_path / "empty").write_text("")
    for kubeconfig in (tmp_path / "missing", tmp_path / "empty"):
        assert main(["bom", *scope, "--kubeconfig", str(kubeconfig)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("muster: error: cannot use the kubeconfig: "), err
        assert "\n" not in err
