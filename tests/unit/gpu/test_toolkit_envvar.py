"""Whether a node's container toolkit honours NVIDIA_VISIBLE_DEVICES from unprivileged
containers: read by the node agent from real toolkit config files, judged by the policy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from muster.cli import nodeagent as nodeagent_cli
from muster.gpu import nodeagent
from muster.gpu.rules import policies as gpupolicies
from muster.gpu.rules import stack as gpustack
from tests import gpuroots, paths

pytestmark = pytest.mark.unit

TOOLKIT = paths.FIXTURES / "gpu" / "container-toolkit"
KEY = "accept-nvidia-visible-devices-envvar-when-unprivileged"
# (file, what the toolkit does with it): absent, commented out, or written as true.
CONFIGS = [
    ("config.toml.centos", True),
    ("config.toml.ubuntu", True),
    ("nvidia-ctk-default-config.toml", True),
    ("nvidia-ctk-installer-config.toml", True),
]


def hardened(name: str) -> str:
    """The real file after NVIDIA's hardening advice: the key set to false (uncommented in the
    packaged files, written so by the installer, added at the top where it is absent)."""
    text = (TOOLKIT / name).read_text(encoding="utf-8")
    for line in (f"#{KEY} = true", f"{KEY} = true"):
        if line in text:
            return text.replace(line, f"{KEY} = false", 1)
    return f"{KEY} = false\n{text}"


@pytest.mark.parametrize(("name", "accepts"), CONFIGS)
def test_real_toolkit_configs_honour_the_variable_by_default(name: str, accepts: bool) -> None:
    assert gpustack.parse_toolkit_config((TOOLKIT / name).read_text(encoding="utf-8")) is accepts


@pytest.mark.parametrize(("name", "_"), CONFIGS)
def test_the_hardened_real_configs_do_not(name: str, _: bool) -> None:
    assert gpustack.parse_toolkit_config(hardened(name)) is False


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (f'{KEY} = "false"\n', "not true or false"),
        (f"{KEY} = false\n{KEY} = true\n", "not TOML"),
        ("[nvidia-container-cli\n", "not TOML"),
    ],
)
def test_a_config_the_toolkit_would_refuse_is_an_agent_error(text: str, error: str) -> None:
    with pytest.raises(gpustack.AgentOutputError, match=error):
        gpustack.parse_toolkit_config(text)


def _root(tmp_path: Path, config: str | None, where: str = nodeagent.TOOLKIT_CONFIGS[0]) -> Path:
    root = gpuroots.host_root(tmp_path, driver="580.95.05")
    if config is not None:
        path = root / where.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config, encoding="utf-8")
    return root


def test_the_agent_reports_the_packaged_config(tmp_path: Path) -> None:
    text = (TOOLKIT / "config.toml.ubuntu").read_text(encoding="utf-8")
    measurement = nodeagent.measure(_root(tmp_path, text), use_nvml=False)
    assert measurement.toolkit_accepts_envvar is True
    assert measurement.toolkit_configs == ("/etc/nvidia-container-runtime/config.toml",)
    assert nodeagent.attestation(measurement)["toolkitAcceptsEnvvarUnprivileged"] is True


def test_the_agent_reports_a_hardened_gpu_operator_config(tmp_path: Path) -> None:
    root = _root(
        tmp_path, hardened("nvidia-ctk-installer-config.toml"), nodeagent.TOOLKIT_CONFIGS[1]
    )
    measurement = nodeagent.measure(root, use_nvml=False)
    assert measurement.toolkit_accepts_envvar is False
    assert measurement.problems == ()
    parsed = gpustack.parse_attestation(json.dumps(nodeagent.attestation(measurement)))
    assert parsed.toolkit_accepts_envvar is False


def test_any_config_that_honours_it_counts(tmp_path: Path) -> None:
    root = _root(tmp_path, hardened("config.toml.ubuntu"))
    other = root / nodeagent.TOOLKIT_CONFIGS[1].lstrip("/")
    other.parent.mkdir(parents=True)
    other.write_text((TOOLKIT / "nvidia-ctk-installer-config.toml").read_text(encoding="utf-8"))
    assert nodeagent.measure(root, use_nvml=False).toolkit_accepts_envvar is True


def test_without_a_config_the_toolkit_default_is_reported(tmp_path: Path) -> None:
    measurement = nodeagent.measure(_root(tmp_path, None), use_nvml=False)
    assert measurement.toolkit_accepts_envvar is True  # the toolkit is there, on its default
    assert measurement.toolkit_configs == ()


def test_no_toolkit_no_config_reports_nothing(tmp_path: Path) -> None:
    root = gpuroots.host_root(tmp_path, driver="580.95.05", toolkit=None)
    measurement = nodeagent.measure(root, use_nvml=False)
    assert measurement.toolkit_accepts_envvar is None
    assert "toolkitAcceptsEnvvarUnprivileged" not in nodeagent.attestation(measurement)


def test_a_broken_config_is_a_problem_not_a_guess(tmp_path: Path) -> None:
    measurement = nodeagent.measure(_root(tmp_path, f'{KEY} = "no"\n'), use_nvml=False)
    assert measurement.toolkit_accepts_envvar is None
    assert any("not true or false" in problem for problem in measurement.problems)


def test_the_cli_reads_the_config_path_it_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _root(tmp_path, hardened("config.toml.ubuntu"), "/opt/toolkit/config.toml")
    parser = argparse.ArgumentParser(prog="muster")
    nodeagent_cli.register(parser.add_subparsers())
    args = parser.parse_args(
        ["node-agent", "--once", f"--host-root={root}", "--toolkit-config=/opt/toolkit/config.toml"]
    )
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "NVIDIA_VISIBLE_DEVICES honoured from unprivileged containers: no" in out
    assert "/opt/toolkit/config.toml" in out


# --- the policy --------------------------------------------------------------------------

_LABELS = {"nvidia.com/gpu.present": "true", "nvidia.com/cuda.driver-version.full": "580.95.05"}


def _assess(accepts: bool | None, **spec: Any) -> gpustack.Compliance:
    policy = gpupolicies.parse_spec({"requireEnvvarDevicesOff": True, **spec})
    facts = gpustack.node_facts(_LABELS, name="gpu-1")
    raw: dict[str, Any] = {"driverVersion": "580.95.05"}
    if accepts is not None:
        raw["toolkitAcceptsEnvvarUnprivileged"] = accepts
    return gpustack.assess(facts, policy, gpustack.parse_attestation(raw))


def test_a_node_whose_toolkit_honours_the_variable_is_non_compliant() -> None:
    compliance = _assess(True)
    assert compliance.state is gpustack.State.NON_COMPLIANT
    (reason,) = compliance.reasons
    assert reason.code == "ToolkitAcceptsEnvvarDevices"
    assert KEY in reason.message and "Preventing Unprivileged Access" in (reason.source or "")


def test_a_node_that_does_not_report_it_is_not_compliant_either() -> None:
    compliance = _assess(None)
    assert not compliance.compliant
    assert compliance.state is gpustack.State.UNKNOWN
    assert [r.code for r in compliance.reasons] == ["ToolkitEnvvarSettingUnknown"]
    facts = gpustack.node_facts(_LABELS, name="gpu-1")
    policy = gpupolicies.parse_spec({"requireEnvvarDevicesOff": True})
    assert not gpustack.assess(facts, policy, None).compliant  # no agent at all


def test_a_hardened_node_is_compliant_and_the_rule_is_off_by_default() -> None:
    assert _assess(False).compliant
    facts = gpustack.node_facts(_LABELS, name="gpu-1")
    attestation = gpustack.parse_attestation({"toolkitAcceptsEnvvarUnprivileged": True})
    assert gpupolicies.parse_spec({}).require_envvar_devices_off is False
    assert gpustack.assess(facts, gpupolicies.parse_spec({}), attestation).compliant


def test_the_attestation_field_must_be_a_boolean() -> None:
    with pytest.raises(ValueError, match="must be true or false"):
        gpustack.parse_attestation({"toolkitAcceptsEnvvarUnprivileged": "false"})


def test_the_crd_schema_carries_the_field() -> None:
    schema: dict[str, Any] = gpupolicies.openapi_schema()
    field = schema["properties"]["spec"]["properties"]["requireEnvvarDevicesOff"]
    assert field["type"] == "boolean"
    assert KEY in field["description"]
