"""``muster gpu check``: the GPU gate offline, with real node label sets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from muster.cli import common
from muster.gpu.rules import stack as gpustack
from tests.commandline import muster
from tests.paths import fixture
from tests.unit.gpu.conftest import label_sets, node_label_files, node_labels

pytestmark = pytest.mark.unit

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run() -> Run:
    """``muster ARGV`` through the real entry point, returning (code, stdout, stderr)."""
    return muster


def write(path: Path, document: Any) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def node(name: str, labels: dict[str, str], attestation: dict[str, Any] | None = None) -> Any:
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if attestation is not None:
        metadata["annotations"] = {gpustack.ATTESTATION_ANNOTATION: json.dumps(attestation)}
    return {"apiVersion": "v1", "kind": "Node", "metadata": metadata}


H100_JSON = node_label_files()[0]  # driver 550.54.15, CUDA 12.4: R550 is end of life
MODERN = {
    "nvidia.com/cuda.driver-version.full": "580.159.03",
    "nvidia.com/cuda.driver-version.major": "580",
    "nvidia.com/cuda.driver-version.minor": "159",
    "nvidia.com/cuda.driver-version.revision": "03",
    "nvidia.com/cuda.runtime-version.full": "13.0",
    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    "nvidia.com/gpu.compute.major": "9",
    "nvidia.com/gpu.compute.minor": "0",
}
ATTESTED = {"driverVersion": "580.159.03", "cudaDriverVersion": 13000, "toolkitVersion": "1.17.8"}


def test_real_label_file_meets_its_own_cuda(run: Run) -> None:
    code, out, err = run("gpu", "check", "--require", "cuda>=12.4", "--node", H100_JSON)
    assert code == common.EXIT_OK, out + err
    assert f"{H100_JSON.name}: PASS" in out
    assert "1 of 1 nodes" in out


def test_real_label_file_refuses_a_newer_cuda(run: Run) -> None:
    code, out, _ = run("gpu", "check", "--require", "cuda>=12.8", "--node", H100_JSON)
    assert code == common.EXIT_FAIL
    assert "unsatisfied condition: cuda>=12.8" in out
    assert "0 of 1 nodes" in out


def test_a_real_image_requirement_against_both_real_nodes(run: Run) -> None:
    requirement = (
        "cuda>=12.4 brand=tesla,driver>=470,driver<471 brand=unknown,driver>=470,driver<471"
    )
    argv = ["gpu", "check", "--require", requirement, "--format", "json"]
    for path in node_label_files():
        argv += ["--node", str(path)]
    code, out, _ = run(*argv)
    assert code == common.EXIT_OK
    report = json.loads(out)
    assert [entry["passes"] for entry in report["nodes"]] == [True, True]
    assert report["nodes"][0]["driver"] == "550.54.15"


def test_one_good_node_is_enough_and_policy_reasons_are_shown(
    run: Run, tmp_path: Path, default_policy_file: Path
) -> None:
    good = write(tmp_path / "good.yaml", node("gpu-good", MODERN, ATTESTED))
    code, out, _ = run(
        "gpu", "check", "--require", "cuda>=12.8", "--policy", default_policy_file,
        "--node", H100_JSON, "--node", good,
    )  # fmt: skip
    assert code == common.EXIT_OK, out
    assert "gpu-good: PASS" in out
    assert f"{H100_JSON.name}: FAIL" in out
    assert "R550, which is end of life" in out
    assert "1 of 2 nodes" in out


def test_default_policy_denies_vulnerable_toolkits_with_their_cves(
    run: Run, tmp_path: Path, default_policy_file: Path
) -> None:
    old = write(
        tmp_path / "old.yaml", node("gpu-old", MODERN, {**ATTESTED, "toolkitVersion": "1.16.1"})
    )
    code, out, _ = run(
        "gpu", "check", "--require", "cuda>=12.8", "--policy", default_policy_file,
        "--node", old, "--format", "json",
    )  # fmt: skip
    assert code == common.EXIT_FAIL
    reasons = json.loads(out)["nodes"][0]["policy"]["reasons"]
    assert {reason["code"] for reason in reasons} == {"ToolkitVulnerable", "ToolkitTooOld"}
    sources = " ".join(reason["source"] or "" for reason in reasons)
    assert "CVE-2025-23266" in sources and "CVE-2024-0132" in sources


def test_labels_without_an_attestation_leave_the_stack_unknown(
    run: Run, tmp_path: Path, default_policy_file: Path
) -> None:
    plain = write(tmp_path / "labels.yaml", MODERN)  # a plain label map
    code, out, _ = run(
        "gpu", "check", "--require", "cuda>=12.8", "--policy", default_policy_file, "--node", plain
    )
    assert code == common.EXIT_FAIL
    assert "labels.yaml: FAIL" in out and "GPU stack unknown" in out
    assert "container toolkit version unknown" in out


def test_forged_labels_are_caught_by_the_attestation(
    run: Run, tmp_path: Path, default_policy_file: Path
) -> None:
    forged = write(
        tmp_path / "forged.yaml",
        node("gpu-forged", MODERN, {**ATTESTED, "driverVersion": "580.95.05"}),
    )
    code, out, _ = run(
        "gpu", "check", "--require", "cuda>=12.8", "--policy", default_policy_file, "--node", forged
    )
    assert code == common.EXIT_FAIL
    assert "labels claim driver 580.159.03 but the node agent measured 580.95.05" in out


def test_warn_mode_reports_but_passes(run: Run, tmp_path: Path) -> None:
    policy = write(
        tmp_path / "warn.yaml",
        {"endOfLifeBranches": [{"branch": 550, "source": "lifecycle"}], "mode": "warn"},
    )
    code, out, _ = run(
        "gpu", "check", "--require", "cuda>=12.4", "--policy", policy, "--node", H100_JSON
    )
    assert code == common.EXIT_OK
    assert "warn mode" in out and "end of life" in out


def test_policy_allowed_cuda_versions_apply_to_the_workload(run: Run, tmp_path: Path) -> None:
    policy = write(
        tmp_path / "cuda.yaml", {"allowedCudaVersions": [{"min": "12.0", "max": "12.4"}]}
    )
    code, out, _ = run(
        "gpu", "check", "--require", "cuda>=12.4", "--policy", policy, "--node", H100_JSON
    )
    assert code == common.EXIT_FAIL
    assert "workload: denied: CUDA 12.4 is not allowed" in out


def test_node_lists_and_every_label_set(run: Run, tmp_path: Path) -> None:
    sets = [entry for entry in label_sets() if "nvidia.com/cuda.driver.major" in entry["labels"]]
    items = [node(f"n{index}", entry["labels"]) for index, entry in enumerate(sets)]
    listing = write(tmp_path / "nodes.yaml", {"apiVersion": "v1", "kind": "List", "items": items})
    code, out, _ = run(
        "gpu", "check", "--require", "cuda>=11.4", "--node", listing, "--format", "json"
    )
    assert code == common.EXIT_OK
    verdicts = {entry["node"]: entry["passes"] for entry in json.loads(out)["nodes"]}
    expected = {
        f"n{index}": float(entry["labels"]["nvidia.com/cuda.runtime.minor"]) >= 4
        for index, entry in enumerate(sets)
    }
    assert verdicts == expected
    assert set(verdicts.values()) == {True, False}


def test_yaml_numbers_in_label_maps(run: Run, tmp_path: Path) -> None:
    typed = tmp_path / "typed.yaml"
    typed.write_text(
        "nvidia.com/cuda.driver.major: 510\nnvidia.com/cuda.driver.minor: 73\n"
        "nvidia.com/cuda.driver.rev: 08\nnvidia.com/cuda.runtime.major: 11\n"
        "nvidia.com/cuda.runtime.minor: 7\nnvidia.com/gpu.present: true\n",
        encoding="utf-8",
    )
    code, out, _ = run("gpu", "check", "--require", "cuda>=11.7,driver>=510.73.8", "--node", typed)
    assert code == common.EXIT_OK, out


def _bad_inputs(tmp_path: Path) -> list[tuple[list[str], str]]:
    label_file = str(H100_JSON)
    float_labels = tmp_path / "float.yaml"
    float_labels.write_text("nvidia.com/cuda.runtime-version.full: 12.10\n", encoding="utf-8")
    broken = tmp_path / "broken.yaml"
    broken.write_text("metadata: [\n", encoding="utf-8")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n", encoding="utf-8")
    unknown_field = write(tmp_path / "p1.yaml", {"allowedDriver": {}})
    wrong_kind = write(tmp_path / "p2.yaml", {"kind": "ImagePolicy", "spec": {}})
    bad_annotation = write(tmp_path / "n.yaml", node("x", MODERN))
    doc = yaml.safe_load(bad_annotation.read_text(encoding="utf-8"))
    doc["metadata"]["annotations"] = {gpustack.ATTESTATION_ANNOTATION: "{not json"}
    write(bad_annotation, doc)
    on_h100 = ["--require", "cuda>=12", "--node", label_file]
    return [
        (["--require", "cuda>=12 foo>=1", "--node", label_file], "'foo>=1'"),
        (["--require", "cuda==12", "--node", label_file], "'cuda==12'"),
        (["--require", "cuda>=12.x", "--node", label_file], "'cuda>=12.x'"),
        (["--require", "cuda>=12", "--node", str(tmp_path / "missing.yaml")], "cannot read"),
        (["--require", "cuda>=12", "--node", str(float_labels)], "quote it"),
        (["--require", "cuda>=12", "--node", str(broken)], "broken.yaml"),
        (["--require", "cuda>=12", "--node", str(scalar)], "expected a Node"),
        ([*on_h100, "--policy", str(unknown_field)], "allowedDriver"),
        ([*on_h100, "--policy", str(wrong_kind)], "ImagePolicy"),
        (["--require", "cuda>=12", "--node", str(bad_annotation)], gpustack.ATTESTATION_ANNOTATION),
    ]  # fmt: skip


@pytest.mark.parametrize("index", range(10))
def test_bad_input_exits_2_with_one_line(run: Run, tmp_path: Path, index: int) -> None:
    argv, needle = _bad_inputs(tmp_path)[index]
    code, out, err = run("gpu", "check", *argv)
    assert code == common.EXIT_ERROR
    assert out == ""
    assert err.startswith("muster: error: ") and err.count("\n") == 1, err
    assert needle in err
    assert "Traceback" not in err


def test_bad_input_in_json_format(run: Run) -> None:
    code, out, _ = run(
        "gpu", "check", "--require", "gpu>=1", "--node", H100_JSON, "--format", "json"
    )
    assert code == common.EXIT_ERROR
    assert "gpu>=1" in json.loads(out)["error"]


def test_usage_errors() -> None:
    code, _, err = muster("gpu", "check", "--node", "x.yaml")  # no --require
    assert code == 2 and "--require" in err
    code, out, _ = muster("gpu")  # no subcommand: its help, and an error
    assert code == common.EXIT_ERROR and "usage: muster gpu" in out


def test_registered_into_the_real_command_line() -> None:
    path = str(H100_JSON)
    assert muster("gpu", "check", "--require", "cuda>=12.4", "--node", path)[0] == 0
    assert muster("gpu", "check", "--require", "cuda>=13.0", "--node", path)[0] == 1
    assert muster("gpu", "check", "--require", "cuda>>13", "--node", path)[0] == 2


def test_fixture_paths_are_real() -> None:
    assert fixture("gpu", "gfd-labels") == H100_JSON.parent
    assert node_labels(H100_JSON)["nvidia.com/cuda.driver-version.full"] == "550.54.15"
