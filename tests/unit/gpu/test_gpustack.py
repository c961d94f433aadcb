"""GPU node facts, the node agent's raw inputs, compliance and workload fit, on real captures."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muster.gpu.rules import cuda
from muster.gpu.rules import policies as gpupolicies
from muster.gpu.rules import stack as gpustack
from tests.paths import fixture
from tests.unit.gpu.conftest import (
    label_sets,
    node_label_files,
    node_labels,
    smi_driver_cuda_pairs,
    toolkit_outputs,
)

pytestmark = pytest.mark.unit

FEW = settings(max_examples=50, deadline=None)
V = cuda.parse_version
GOOD = "sha256:" + "a" * 64
BAD = "sha256:" + "b" * 64

# --- the two complete real node label maps --------------------------------------------------


@pytest.mark.parametrize("path", node_label_files(), ids=lambda p: p.name)
def test_real_h100_node_labels(path: Path) -> None:
    facts = gpustack.node_facts(node_labels(path), name="h100")
    assert facts.gpu
    assert str(facts.driver) == "550.54.15"
    assert facts.driver_label == "nvidia.com/cuda.driver-version.full"
    assert facts.cuda_version == V("12.4")
    assert gpustack.capability(facts.cuda_version) == 12040
    assert facts.product == "NVIDIA-H100-80GB-HBM3"
    assert facts.compute == "9.0"
    assert facts.count == 1
    assert facts.memory_mib == 81559
    assert facts.family == "hopper"
    assert facts.mig_capable is True
    assert facts.problems == ()
    if "mixed" in path.name:
        assert facts.mig_strategy == "mixed"
        assert facts.mig_profiles == ("1g.10gb", "2g.20gb", "3g.40gb")
        assert facts.replicas == 0
    else:
        assert facts.mig_strategy == "single"
        assert facts.mig_profiles == ()


@pytest.mark.parametrize("path", node_label_files(), ids=lambda p: p.name)
def test_real_h100_product_matches_nvidia_smi_list(path: Path) -> None:
    # GFD spells nvidia-smi -L's product name with dashes.
    kind = "mixed" if "mixed" in path.name else "single"
    listing = fixture("gpu", "nvidia-smi", "docs", f"gpu-operator-mig-{kind}-H100-L.txt")
    name = re.search(r"GPU 0: (.+?) \(UUID", listing.read_text(encoding="utf-8"))
    assert name is not None
    assert gpustack.node_facts(node_labels(path)).product == name[1].replace(" ", "-")


def test_real_h100_node_fits_and_fails_the_way_the_runtime_would() -> None:
    labels = node_labels(node_label_files()[0])
    facts = gpustack.node_facts(labels, name="h100")
    assert gpustack.fit(["cuda>=12.4"], facts).satisfied is True
    refused = gpustack.fit(["cuda>=12.8"], facts)
    assert refused.satisfied is False
    assert "unsatisfied condition: cuda>=12.8" in refused.reasons[0]
    compat = gpustack.fit(["cuda>=12.8 brand=tesla,driver>=550,driver<551"], facts)
    assert compat.satisfied is True
    assert any("assumed brand=tesla" in reason for reason in compat.reasons)
    # The agent knows the brand: a GeForce with this driver would not take that path.
    geforce = gpustack.Attestation(driver=V("550.54.15"), brand="GeForce")
    assert (
        gpustack.fit(["cuda>=12.8 brand=tesla,driver>=550,driver<551"], facts, geforce).satisfied
        is False
    )
    # arch comes from the compute capability labels
    assert gpustack.fit(["arch>=9.0"], facts).satisfied is True
    assert gpustack.fit(["arch<8.0"], facts).satisfied is False


# --- every label set from NVIDIA's docs ---------------------------------------------------

SETS = label_sets()


@pytest.mark.parametrize("entry", SETS, ids=[entry["id"].split(":", 1)[1] for entry in SETS])
def test_real_label_sets(entry: dict[str, Any]) -> None:
    labels: dict[str, str] = entry["labels"]
    facts = gpustack.node_facts(labels)
    assert facts.gpu
    assert facts.problems == ()
    driver_in_note = re.search(r"driver ([0-9]+\.[0-9]+(?:\.[0-9]+)?)", entry["note"])
    if "nvidia.com/cuda.driver.major" in labels:
        parts = [labels[f"nvidia.com/cuda.driver.{p}"] for p in ("major", "minor", "rev")]
        assert str(facts.driver) == ".".join(part for part in parts if part)
        if driver_in_note is not None:
            assert str(facts.driver) == driver_in_note[1]
        assert facts.driver_label == "nvidia.com/cuda.driver.*"
        major = labels["nvidia.com/cuda.runtime.major"]
        minor = labels["nvidia.com/cuda.runtime.minor"]
        assert facts.cuda_version == V(f"{major}.{minor}")
        # The driver supports at least what our toolkit table derives from it.
        derived = cuda.highest_cuda_for_driver(facts.driver)
        assert derived is None or derived <= facts.cuda_version
        assert gpustack.fit([f"cuda>={major}.{minor}"], facts).satisfied is True
    else:
        # Partial (grep-filtered) sets: no driver facts, so nothing can be decided.
        assert facts.driver is None
        assert gpustack.fit(["cuda>=11.0"], facts).satisfied is None
        verdict = gpustack.assess(facts, gpupolicies.GPUStackPolicySpec())
        assert verdict.state is gpustack.State.UNKNOWN
        assert [reason.code for reason in verdict.reasons] == ["DriverUnknown"]
    if "MIG-" in labels.get("nvidia.com/gpu.product", ""):
        assert facts.mig_strategy == "single"


def test_label_set_edge_cases() -> None:
    by_note = {entry["id"]: gpustack.node_facts(entry["labels"]) for entry in SETS}
    readme = next(facts for key, facts in by_note.items() if "README" in key)
    assert str(readme.driver) == "455.06"  # cuda.driver.rev is ""
    assert readme.driver == V("455.6")
    openshift = next(facts for key, facts in by_note.items() if "time-slicing" in key)
    assert openshift.memory_mib == 15360  # reported in bytes there
    assert openshift.product == "Tesla-T4-SHARED"
    assert openshift.replicas == 8
    assert str(openshift.driver) == "510.73.08"  # revision keeps its leading zero
    mixed = next(facts for key, facts in by_note.items() if key.endswith("L603-L647"))
    assert mixed.mig_profiles == ("1g.5gb", "2g.10gb", "3g.21gb")


E2E = fixture("gpu", "gfd-labels", "gfd-e2e-regex")


def test_the_labels_read_are_in_gfds_label_schema() -> None:
    schema = [
        line.split("=", 1)[0].replace("\\", "")
        for path in E2E.glob("*.txt")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    for key in (
        *gpustack.DRIVER_PARTS,
        *gpustack.DRIVER_PARTS_OLD,
        gpustack.DRIVER_FULL,
        gpustack.CUDA_FULL,
        *gpustack.CUDA_PARTS,
        *gpustack.CUDA_PARTS_OLD,
        "nvidia.com/gpu.product",
        "nvidia.com/gpu.count",
        "nvidia.com/gpu.memory",
        "nvidia.com/gpu.compute.major",
        "nvidia.com/mig.strategy",
    ):
        assert key in schema, key
    # and the real label maps only use keys the schema knows
    patterns = [
        re.compile(line.split("=", 1)[0])
        for path in E2E.glob("*.txt")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    for path in node_label_files():
        for key in node_labels(path):
            if key.startswith("nvidia.com/cuda") or key.startswith("nvidia.com/gpu.product"):
                assert any(pattern.fullmatch(key) for pattern in patterns), key


def _schema_value(key: str) -> str:
    line = next(
        line
        for line in (E2E / "expected-output.txt").read_text(encoding="utf-8").splitlines()
        if line.startswith(key.replace(".", "\\.").replace("/", "\\/") + "=")
    )
    return line.split("=", 1)[1]


@FEW
@given(st.data())
def test_any_value_gfds_schema_allows_is_judged_never_crashes(data: st.DataObject) -> None:
    labels = {
        key: data.draw(st.from_regex(_schema_value(key), fullmatch=True), label=key)
        for key in (
            gpustack.DRIVER_FULL,
            *gpustack.DRIVER_PARTS,
            gpustack.CUDA_FULL,
            "nvidia.com/gpu.count",
        )
    }
    facts = gpustack.node_facts(labels)
    if facts.driver is None:
        assert facts.problems
    verdict = gpustack.assess(facts, gpupolicies.default_policy())
    assert verdict.state in set(gpustack.State)
    if facts.problems:
        assert verdict.state is gpustack.State.NON_COMPLIANT


def test_contradicting_labels_are_a_violation() -> None:
    labels = dict(node_labels(node_label_files()[0]))
    labels["nvidia.com/cuda.driver-version.full"] = "580.159.03"  # forged, parts say 550
    facts = gpustack.node_facts(labels)
    assert facts.driver == V("580.159.03")
    assert facts.problems
    verdict = gpustack.assess(facts, gpupolicies.GPUStackPolicySpec())
    assert verdict.state is gpustack.State.NON_COMPLIANT
    assert {reason.code for reason in verdict.reasons} == {"LabelsInconsistent"}


def test_malformed_label_values_are_problems_not_crashes() -> None:
    facts = gpustack.node_facts(
        {"nvidia.com/cuda.driver-version.full": "latest", "nvidia.com/gpu.count": "eight"}
    )
    assert facts.driver is None
    assert len(facts.problems) == 2
    assert gpustack.node_facts({"nvidia.com/gpu.present": "false"}).gpu is False
    assert gpustack.node_facts({"kubernetes.io/os": "linux"}).gpu is False


def test_node_manifest_with_attestation_annotation() -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "gpu-1",
            "labels": node_labels(node_label_files()[0]),
            "annotations": {
                gpustack.ATTESTATION_ANNOTATION: '{"driverVersion": "550.54.15", '
                '"cudaDriverVersion": 12040, "toolkitVersion": "1.17.8"}'
            },
        },
    }
    facts, attestation = gpustack.node_from_manifest(manifest)
    assert facts.name == "gpu-1"
    assert attestation is not None
    assert attestation.cuda_version == V("12.4")
    assert attestation.toolkit is not None and str(attestation.toolkit) == "1.17.8"
    with pytest.raises(ValueError, match="metadata"):
        gpustack.node_from_manifest({"kind": "Node"})


# --- capability integers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "value"), [("12.4", 12040), ("13.0", 13000), ("11.8", 11080), ("12", 12000)]
)
def test_capability(version: str, value: int) -> None:
    assert gpustack.capability(V(version)) == value
    assert gpustack.from_capability(value) == V(version)


@FEW
@given(st.integers(1, 99), st.integers(0, 99))
def test_capability_roundtrips_and_keeps_order(major: int, minor: int) -> None:
    version = V(f"{major}.{minor}")
    assert gpustack.from_capability(gpustack.capability(version)) == version
    bigger = V(f"{major}.{minor + 1}") if minor < 99 else V(f"{major + 1}.0")
    assert gpustack.capability(bigger) > gpustack.capability(version)


def test_capability_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(cuda.VersionError):
        gpustack.capability(V("12.100"))
    with pytest.raises(cuda.VersionError):
        gpustack.from_capability(999)


# --- real nvidia-smi outputs against the compatibility table --------------------------------

PAIRS = smi_driver_cuda_pairs()


def test_every_nvidia_smi_output_was_read() -> None:
    assert len(PAIRS) >= 40


@pytest.mark.parametrize(("name", "driver", "reported"), PAIRS, ids=[p[0] for p in PAIRS])
def test_compatibility_table_agrees_with_real_drivers(
    name: str, driver: str, reported: str
) -> None:
    driver_version, cuda_version = V(driver), V(reported)
    derived = cuda.highest_cuda_for_driver(driver_version)
    assert derived is None or derived <= cuda_version
    if reported in cuda.TOOLKIT_MINIMUM_DRIVERS:
        assert derived == cuda_version
        assert cuda.minimum_driver(cuda_version) is not None
        assert cuda.compatibility(cuda_version, driver_version) is cuda.Compatibility.NATIVE
    if cuda_version.major in cuda.MINOR_VERSION_MINIMUM_DRIVERS and cuda_version.minor:
        # Anything of the same major runs there, at least through minor-version compatibility.
        assert cuda.compatibility(cuda_version.major_minor, driver_version) in (
            cuda.Compatibility.NATIVE,
            cuda.Compatibility.MINOR_VERSION,
        )
    # A newer major than the driver reports never works.
    newer = V(f"{cuda_version.major + 1}.0")
    if newer.major in cuda.MINOR_VERSION_MINIMUM_DRIVERS:
        assert cuda.compatibility(newer, driver_version) is cuda.Compatibility.INCOMPATIBLE


def test_compatibility_examples() -> None:
    assert cuda.compatibility(V("12.8"), V("550.54.15")) is cuda.Compatibility.MINOR_VERSION
    assert cuda.compatibility(V("12.8"), V("570.26")) is cuda.Compatibility.NATIVE
    assert cuda.compatibility(V("13.0"), V("575.51.03")) is cuda.Compatibility.INCOMPATIBLE
    assert cuda.compatibility(V("11.8"), V("450.80.02")) is cuda.Compatibility.MINOR_VERSION
    assert cuda.compatibility(V("11.8"), V("450.51.06")) is cuda.Compatibility.INCOMPATIBLE
    assert cuda.compatibility(V("10.2"), V("440.33")) is cuda.Compatibility.UNKNOWN
    assert cuda.minimum_driver(V("12.1")) == V("535.54.03")  # next listed toolkit stands in
    assert cuda.minimum_driver(V("14.0")) is None


# --- the node agent's raw inputs ------------------------------------------------------------


def test_proc_driver_version_open_module() -> None:
    # The example line quoted in the project brief (open kernel modules, 580.95.05).
    module = gpustack.parse_proc_driver_version(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  "
        "(dvs-builder@U16-I3-B03-4-3)  Thu Sep 25 23:31:10 UTC 2025\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
    )
    assert module == gpustack.KernelModule(V("580.95.05"), open=True, arch="x86_64")
    assert str(module.version) == "580.95.05"


def test_proc_driver_version_proprietary_module() -> None:
    module = gpustack.parse_proc_driver_version(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.144.03  Mon Dec 30 17:44:08 UTC 2024\n"
    )
    assert str(module.version) == "550.144.03"
    assert module.open is False and module.arch == "x86_64"


@pytest.mark.parametrize("bad", ["", "GCC version: 12", "NVRM version: something else 1.2"])
def test_proc_driver_version_rejects_other_text(bad: str) -> None:
    with pytest.raises(gpustack.AgentOutputError):
        gpustack.parse_proc_driver_version(bad)


@pytest.mark.parametrize(("name", "driver", "reported"), PAIRS[:10], ids=[p[0] for p in PAIRS[:10]])
def test_sys_module_version(name: str, driver: str, reported: str) -> None:
    assert gpustack.parse_module_version(f"{driver}\n") == V(driver)
    with pytest.raises(gpustack.AgentOutputError):
        gpustack.parse_module_version(f"{driver} (beta)\n")


OUTPUTS = toolkit_outputs()


@pytest.mark.parametrize("entry", OUTPUTS, ids=[entry["environment"] for entry in OUTPUTS])
def test_real_toolkit_version_outputs(entry: dict[str, Any]) -> None:
    toolkit = gpustack.parse_toolkit_version(entry["output"])
    release = re.match(r"v([0-9.]+)(?:-(rc\.[0-9]+))?", entry["environment"])
    assert release is not None
    assert toolkit.version == V(release[1])
    assert toolkit.prerelease == (release[2] or "")
    assert toolkit.component == "NVIDIA Container Runtime Hook"
    assert toolkit.commit is not None and toolkit.commit in entry["output"]
    assert toolkit.before(V("1.17.8")) is (str(toolkit) != "1.17.8")


def test_release_candidates_come_before_their_release() -> None:
    rc = gpustack.parse_toolkit_version("NVIDIA Container Runtime Hook version 1.17.0-rc.2\n")
    assert str(rc) == "1.17.0-rc.2"
    assert rc.before(V("1.17.0")) and not rc.before(V("1.16.2"))


def test_other_toolkit_binaries() -> None:
    ctk = gpustack.parse_toolkit_version(
        "NVIDIA Container Toolkit CLI version 1.17.8\n"
        "commit: f202b80a9b9d0db00d9b1d73c0128c8962c55f4d\n"
    )
    assert ctk.component == "NVIDIA Container Toolkit CLI" and ctk.version == V("1.17.8")
    cli = gpustack.parse_toolkit_version(
        "cli-version: 1.16.1\nlib-version: 1.16.1\nbuild date: 2024-07-23T14:57+00:00\n"
        "build revision: a470818ba7d9166be282cd0039dd2fc9b0a34d73\n"
    )
    assert cli.component == "nvidia-container-cli" and cli.version == V("1.16.1")
    assert cli.commit == "a470818ba7d9166be282cd0039dd2fc9b0a34d73"
    with pytest.raises(gpustack.AgentOutputError):
        gpustack.parse_toolkit_version("crun version 1.22\n")


# --- compliance under the default policy ------------------------------------------------------

POLICY = gpupolicies.default_policy()
H100 = gpustack.node_facts(node_labels(node_label_files()[0]), name="h100")


def attested(
    driver: str, toolkit: str = "1.17.8", **more: Any
) -> tuple[gpustack.NodeFacts, gpustack.Attestation]:
    facts = dataclasses.replace(H100, driver=V(driver), cuda_version=None)
    return facts, gpustack.parse_attestation(
        {"driverVersion": driver, "toolkitVersion": toolkit, **more}
    )


def judge(
    driver: str, policy: gpupolicies.GPUStackPolicySpec = POLICY, **more: Any
) -> gpustack.Compliance:
    facts, attestation = attested(driver, **more)
    return gpustack.assess(facts, policy, attestation)


@pytest.mark.parametrize(
    ("driver", "codes"),
    [
        ("535.309.01", set()),
        ("535.288.01", {"DriverDenied"}),
        ("580.159.03", set()),
        ("580.95.05", {"DriverDenied"}),
        ("595.71.05", set()),
        ("595.45.04", {"DriverDenied"}),
        ("590.48.01", set()),
        ("550.54.15", {"DriverEndOfLife"}),
        ("570.124.04", {"DriverEndOfLife"}),
        ("575.51.03", {"DriverEndOfLife"}),
        ("560.28.03", {"DriverEndOfLife"}),
        ("565.57.01", {"DriverEndOfLife"}),
    ],
)
def test_default_policy_drivers(driver: str, codes: set[str]) -> None:
    verdict = judge(driver)
    assert {reason.code for reason in verdict.reasons} == codes
    assert verdict.state is (gpustack.State.NON_COMPLIANT if codes else gpustack.State.COMPLIANT)
    for reason in verdict.reasons:
        assert reason.source  # every default entry cites where it comes from


@pytest.mark.parametrize("entry", OUTPUTS, ids=[entry["environment"] for entry in OUTPUTS])
def test_default_policy_toolkits(entry: dict[str, Any]) -> None:
    toolkit = gpustack.parse_toolkit_version(entry["output"])
    facts, attestation = attested("580.159.03")
    attestation = dataclasses.replace(attestation, toolkit=toolkit)
    verdict = gpustack.assess(facts, POLICY, attestation)
    sources = " ".join(reason.source or "" for reason in verdict.reasons)
    if str(toolkit) == "1.17.8":
        assert verdict.compliant
        return
    assert verdict.state is gpustack.State.NON_COMPLIANT
    assert "CVE-2025-23266" in sources
    assert ("CVE-2024-0132" in sources) is toolkit.before(V("1.16.2"))


def test_labels_alone_leave_the_toolkit_unknown() -> None:
    facts = dataclasses.replace(H100, driver=V("580.159.03"))
    verdict = gpustack.assess(facts, POLICY)
    assert verdict.state is gpustack.State.UNKNOWN
    assert [reason.code for reason in verdict.reasons] == ["ToolkitUnknown"]
    assert gpustack.assess(facts, gpupolicies.GPUStackPolicySpec()).compliant


def test_attestation_disagreeing_with_labels_is_a_violation() -> None:
    attestation = gpustack.parse_attestation(
        {"driverVersion": "580.95.05", "cudaDriverVersion": "13.0", "toolkitVersion": "1.17.8"}
    )
    forged = dataclasses.replace(H100, driver=V("580.159.03"), cuda_version=V("13.0"))
    verdict = gpustack.assess(forged, POLICY, attestation)
    assert verdict.state is gpustack.State.NON_COMPLIANT
    codes = [reason.code for reason in verdict.reasons]
    assert "AttestationMismatch" in codes
    assert "DriverDenied" in codes  # judged on the measured driver, not the claim
    assert verdict.driver == V("580.95.05")


def test_module_digests() -> None:
    policy = POLICY.model_copy(update={"known_good_module_digests": (GOOD,)})
    assert judge("580.159.03", policy, moduleDigests={"nvidia.ko": GOOD}).compliant
    verdict = judge("580.159.03", policy, moduleDigests={"nvidia.ko": GOOD, "nvidia-uvm.ko": BAD})
    assert verdict.state is gpustack.State.NON_COMPLIANT
    assert [reason.code for reason in verdict.reasons] == ["ModuleDigestUnknown"]
    assert "nvidia-uvm.ko" in verdict.reasons[0].message
    missing = judge("580.159.03", policy)
    assert missing.state is gpustack.State.UNKNOWN


def test_attestation_required() -> None:
    policy = gpupolicies.GPUStackPolicySpec(require_attestation=True)
    verdict = gpustack.assess(dataclasses.replace(H100, driver=V("590.48.01")), policy)
    assert verdict.state is gpustack.State.UNKNOWN
    assert [reason.code for reason in verdict.reasons] == ["NotAttested"]
    assert judge("590.48.01", policy).compliant


def test_allowed_driver_ranges_and_exact_versions() -> None:
    policy = gpupolicies.parse_spec(
        {
            "allowedDrivers": {
                "ranges": [{"branch": 580, "min": "580.159.03"}],
                "versions": ["590.48.01"],
            },
            "deniedDrivers": {"versions": ["580.160.1"]},
        }
    )
    judge = {
        driver: gpustack.assess(dataclasses.replace(H100, driver=V(driver)), policy)
        for driver in ("580.159.03", "580.200", "590.48.01", "590.48.2", "595.71.05", "580.160.01")
    }
    assert judge["580.159.03"].compliant and judge["580.200"].compliant
    assert judge["590.48.01"].compliant
    assert [r.code for r in judge["590.48.2"].reasons] == ["DriverNotAllowed"]
    assert [r.code for r in judge["595.71.05"].reasons] == ["DriverNotAllowed"]
    assert [r.code for r in judge["580.160.01"].reasons] == ["DriverDenied"]


def test_not_a_gpu_node() -> None:
    verdict = gpustack.assess(gpustack.node_facts({}, name="cpu"), POLICY)
    assert verdict.state is gpustack.State.UNKNOWN
    assert verdict.reasons[0].code == "NotAGPUNode"


@pytest.mark.parametrize(
    "bad",
    [
        {"driverVersion": 550},
        {"driverVersion": "550.x"},
        {"cudaDriverVersion": True},
        {"moduleDigests": {"nvidia.ko": "md5:00"}},
        {"moduleDigests": ["nvidia.ko"]},
        {"surprise": 1},
        "not json",
        "[1, 2]",
    ],
)
def test_bad_attestations_are_value_errors(bad: object) -> None:
    with pytest.raises(ValueError):
        gpustack.parse_attestation(bad)


# --- workloads --------------------------------------------------------------------------------


def test_fit_derives_cuda_from_the_driver_when_no_label_says() -> None:
    facts = gpustack.node_facts({"nvidia.com/cuda.driver-version.full": "570.124.04"})
    verdict = gpustack.fit(["cuda>=12.8"], facts)
    assert verdict.satisfied is True
    assert any("derived" in reason for reason in verdict.reasons)
    assert gpustack.fit(["cuda>=12.9"], facts).satisfied is False
    old = gpustack.node_facts({"nvidia.com/cuda.driver-version.full": "418.43"})
    assert gpustack.fit(["cuda>=10.0"], old).satisfied is None


def test_fit_prefers_the_agents_measurement() -> None:
    attestation = gpustack.Attestation(driver=V("580.95.05"), cuda_version=V("13.0"))
    assert gpustack.fit(["cuda>=13.0"], H100, attestation).satisfied is True
    assert gpustack.fit(["cuda>=13.0"], H100).satisfied is False


def test_fit_raises_on_malformed_requirements() -> None:
    with pytest.raises(cuda.RequirementError):
        gpustack.fit(["gpu>=1"], H100)


def test_workload_cuda_allowed() -> None:
    policy = gpupolicies.parse_spec({"allowedCudaVersions": [{"min": "12.4", "max": "13.0"}]})
    assert gpustack.workload_cuda_allowed(["cuda>=12.8"], policy) == []
    assert [r.code for r in gpustack.workload_cuda_allowed(["cuda>=13.0"], policy)] == [
        "CudaNotAllowed"
    ]
    assert [r.code for r in gpustack.workload_cuda_allowed(["driver>=535"], policy)] == [
        "CudaVersionUnknown"
    ]
    assert gpustack.workload_cuda_allowed(["cuda>=9.0"], POLICY) == []  # no CUDA list


@pytest.mark.parametrize(
    ("env", "reasons"),
    [
        ({"LD_PRELOAD": "/proc/self/cwd/poc.so"}, ["LdPreloadInGPUImage"]),
        ({"LD_PRELOAD": " "}, []),
        ({"NVIDIA_DISABLE_REQUIRE": "true"}, ["RequirementCheckDisabled"]),
        (
            {"NVIDIA_DISABLE_REQUIRE": "1", "LD_PRELOAD": "x.so"},
            ["LdPreloadInGPUImage", "RequirementCheckDisabled"],
        ),
        ({"NVIDIA_DISABLE_REQUIRE": "no"}, []),
        ({"CUDA_VERSION": "12.8.1"}, []),
    ],
)
def test_env_flags(env: dict[str, str], reasons: list[str]) -> None:
    assert [flag.reason for flag in gpustack.env_flags(env)] == reasons


def test_published_labels() -> None:
    verdict = gpustack.assess(H100, POLICY)
    assert gpustack.published_labels(verdict) == {
        gpustack.STATE_LABEL: "non-compliant",
        gpustack.CUDA_CAPABILITY_LABEL: "12040",
    }
    facts, attestation = attested("580.159.03", cudaDriverVersion=13000)
    assert gpustack.published_labels(gpustack.assess(facts, POLICY, attestation)) == {
        gpustack.STATE_LABEL: "compliant",
        gpustack.CUDA_CAPABILITY_LABEL: "13000",
    }
    unknown = gpustack.assess(gpustack.node_facts({"nvidia.com/gpu.present": "true"}), POLICY)
    assert gpustack.published_labels(unknown) == {gpustack.STATE_LABEL: "unknown"}
