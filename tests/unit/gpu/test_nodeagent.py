"""The node agent against fake host roots built from the real GPU captures."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from muster.gpu import nodeagent
from muster.gpu.rules import policies as gpupolicies
from muster.gpu.rules import stack as gpustack
from tests import gpuroots, paths
from tests.commandline import muster

pytestmark = pytest.mark.unit

CAPTURE = (
    paths.FIXTURES
    / "gpu/nvidia-smi/extracted/linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01"
    / "nvidia-smi--version.txt"
)


def _captured_driver() -> str:
    match = re.search(r"DRIVER version\s*:\s*(\S+)", CAPTURE.read_text())
    assert match is not None
    return match[1]


def test_measures_driver_toolkit_and_digests_of_the_running_kernel(tmp_path: Path) -> None:
    driver = _captured_driver()
    assert driver == "590.48.01"
    root = gpuroots.host_root(tmp_path, driver=driver)
    measurement = nodeagent.measure(root, use_nvml=False)
    assert measurement.problems == ()
    assert measurement.driver == "590.48.01"
    assert measurement.module_version == "590.48.01"
    assert measurement.open_kernel_module is True
    assert measurement.toolkit == "1.17.8"
    assert measurement.toolkit_command == "nvidia-container-toolkit"
    # Only the running kernel's module, keyed by its host path.
    assert measurement.module_digests == {f"/{gpuroots.MODULE}": gpuroots.module_digest()}
    # Regular files only: libcuda.so.1 is a symlink to the measured file.
    assert sorted(measurement.library_digests) == [
        "/usr/lib/x86_64-linux-gnu/libcuda.so.590.48.01",
        "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.590.48.01",
    ]


@pytest.mark.parametrize("version", ["1.10.0", "1.14.0", "1.16.0", "1.17.8"])
def test_every_captured_toolkit_output_is_read(tmp_path: Path, version: str) -> None:
    root = gpuroots.host_root(tmp_path, driver="580.95.05", toolkit=version)
    assert nodeagent.measure(root, use_nvml=False).toolkit == version


def test_once_json_prints_a_measurement_whose_attestation_the_operator_reads(
    tmp_path: Path,
) -> None:
    root = gpuroots.host_root(tmp_path, driver="590.48.01")
    code, out, _ = muster("node-agent", "--once", "--format=json", f"--host-root={root}")
    assert code == 0
    printed: dict[str, Any] = json.loads(out)
    assert printed["driverVersion"] == "590.48.01"
    parsed = gpustack.parse_attestation(json.dumps(printed["attestation"]))
    assert str(parsed.driver) == "590.48.01"
    assert parsed.toolkit is not None and str(parsed.toolkit) == "1.17.8"
    assert dict(parsed.module_digests) == {f"/{gpuroots.MODULE}": gpuroots.module_digest()}
    assert len(parsed.library_digests) == 2


def _judge(root: Path, labels: dict[str, str], policy: gpupolicies.GPUStackPolicySpec) -> Any:
    raw = json.dumps(nodeagent.attestation(nodeagent.measure(root, use_nvml=False)))
    return gpustack.assess(
        gpustack.node_facts(labels, name="n"), policy, gpustack.parse_attestation(raw)
    )


def test_a_tampered_kernel_module_makes_the_node_non_compliant(tmp_path: Path) -> None:
    policy = gpupolicies.parse_spec(
        {**gpupolicies.DEFAULT_POLICY, "knownGoodModuleDigests": [gpuroots.module_digest()]}
    )
    labels = {"nvidia.com/cuda.driver-version.full": "590.48.01", "nvidia.com/gpu.present": "true"}
    root = gpuroots.host_root(tmp_path, driver="590.48.01")
    assert _judge(root, labels, policy).state is gpustack.State.COMPLIANT

    (root / gpuroots.MODULE).write_bytes(b"\x28\xb5\x2f\xfd a rootkit in the nvidia module")
    verdict = _judge(root, labels, policy)
    assert verdict.state is gpustack.State.NON_COMPLIANT
    (reason,) = verdict.reasons
    assert reason.code == "ModuleDigestUnknown"
    assert f"/{gpuroots.MODULE}" in reason.message


def test_labels_claiming_another_driver_than_measured_are_a_violation(tmp_path: Path) -> None:
    real = json.loads(
        (
            paths.FIXTURES / "gpu/gfd-labels/gpu-operator-H100-mig-single-node-labels.json"
        ).read_text()
    )
    root = gpuroots.host_root(tmp_path, driver="590.48.01")
    verdict = _judge(root, real, gpupolicies.parse_spec({}))
    assert verdict.state is gpustack.State.NON_COMPLIANT
    assert [r.code for r in verdict.reasons] == ["AttestationMismatch"]
    assert "labels claim driver 550.54.15 but the node agent measured 590.48.01" in str(
        verdict.reasons[0]
    )


def test_a_vulnerable_toolkit_is_reported_with_its_bulletin(tmp_path: Path) -> None:
    root = gpuroots.host_root(tmp_path, driver="590.48.01", toolkit="1.17.3")
    labels = {"nvidia.com/cuda.driver-version.full": "590.48.01"}
    verdict = _judge(root, labels, gpupolicies.default_policy())
    assert verdict.state is gpustack.State.NON_COMPLIANT
    codes = {r.code: r for r in verdict.reasons}
    assert "CVE-2025-23266" in str(codes["ToolkitVulnerable"].source)


def test_a_node_without_a_driver_is_measured_with_problems(tmp_path: Path) -> None:
    measurement = nodeagent.measure(tmp_path, use_nvml=False)
    assert measurement.driver is None
    assert measurement.toolkit is None
    assert any("/proc/driver/nvidia/version is missing" in p for p in measurement.problems)
    assert nodeagent.attestation(measurement) == {}


def test_a_garbled_proc_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    root = gpuroots.host_root(tmp_path, driver="590.48.01")
    (root / "proc/driver/nvidia/version").write_text("something else\n")
    measurement = nodeagent.measure(root, use_nvml=False)
    assert measurement.driver == "590.48.01"  # from /sys/module/nvidia/version
    assert any("not an NVRM version line" in p for p in measurement.problems)


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    code, _, err = muster("node-agent", "--once", f"--host-root={tmp_path / 'missing'}")
    assert code == 2 and "is not a directory" in err
    code, _, err = muster("node-agent", f"--host-root={tmp_path}", "--node-name=")
    assert code == 2 and "--node-name" in err
