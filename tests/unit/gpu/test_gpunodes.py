"""The node index behind the GPU controller and gate: worst verdict wins, forged claims lose."""

from __future__ import annotations

import json
from typing import Any

import pytest

from muster.gpu import nodes as gpunodes
from muster.gpu.rules import policies as gpupolicies
from muster.gpu.rules import stack as gpustack
from muster.platform import kubeapi
from tests.unit.gpu.conftest import node_label_files, node_labels

pytestmark = pytest.mark.unit


def _index() -> gpunodes.GPUIndex:
    # No request is made: the index is fed Node bodies directly.
    return gpunodes.GPUIndex(
        kubeapi.KubeApi(kubeapi.Credentials(host="https://unused", ca_file=None))
    )


def _node(name: str, labels: dict[str, str], annotations: dict[str, str] | None = None) -> Any:
    return {
        "metadata": {"name": name, "uid": "u", "labels": labels, "annotations": annotations or {}}
    }


H100 = node_labels(next(p for p in node_label_files() if "single" in p.name))


def test_without_policies_nothing_is_judged_until_the_default_policy_is_enabled() -> None:
    index = _index()
    index.update_node(_node("h100", H100))
    assert index.effective_policies() == {}
    assert index.known("h100") is None  # no verdict: Muster's labels come off, nothing steers
    assert index.counts() == {"compliant": 0, "non-compliant": 0, "unknown": 0}
    assert gpunodes.desired_labels(None) == {
        gpustack.STATE_LABEL: None,
        gpustack.CUDA_CAPABILITY_LABEL: None,
    }
    # The chart's default policy, once enabled, is a GPUStackPolicy like any other.
    assert index.update_policy("muster-default", gpupolicies.DEFAULT_POLICY) is None
    known = index.known("h100")
    assert known is not None
    assert known.compliance.state is gpustack.State.NON_COMPLIANT  # R550 is end of life
    assert gpunodes.desired_labels(known.compliance) == {
        gpustack.STATE_LABEL: "non-compliant",
        gpustack.CUDA_CAPABILITY_LABEL: "12040",
    }


def test_the_worst_verdict_of_all_policies_wins() -> None:
    index = _index()
    assert index.update_policy("open", {}) is None
    index.update_node(_node("h100", H100))
    assert index.counts() == {"compliant": 1, "non-compliant": 0, "unknown": 0}
    assert index.update_policy("strict", {"requireAttestation": True}) is None
    known = index.known("h100")
    assert known is not None and known.compliance.state is gpustack.State.UNKNOWN
    assert index.update_policy("seed", gpupolicies.DEFAULT_POLICY) is None
    known = index.known("h100")
    assert known is not None and known.compliance.state is gpustack.State.NON_COMPLIANT
    assert {r.code for r in known.compliance.reasons} >= {"NotAttested", "DriverEndOfLife"}


def test_a_policy_that_does_not_compile_is_not_in_force() -> None:
    index = _index()
    error = index.update_policy("bad", {"allowedCudaVersions": [{"min": "12.8", "max": "12.4"}]})
    assert error is not None and "range is empty" in error
    assert "bad" not in index.policies
    assert index.policy_errors["bad"] == error


def test_a_forged_or_garbled_attestation_makes_the_node_non_compliant() -> None:
    index = _index()
    index.update_policy("open", {})
    index.update_node(
        _node(
            "n", H100, {gpustack.ATTESTATION_ANNOTATION: json.dumps({"driverVersion": "590.48.01"})}
        )
    )
    known = index.known("n")
    assert known is not None and known.compliance.state is gpustack.State.NON_COMPLIANT
    assert [r.code for r in known.compliance.reasons] == ["AttestationMismatch"]
    index.update_node(_node("n", H100, {gpustack.ATTESTATION_ANNOTATION: "{not json"}))
    known = index.known("n")
    assert known is not None and known.compliance.state is gpustack.State.NON_COMPLIANT
    assert known.compliance.reasons[0].code == "AttestationInvalid"


def test_nodes_without_gpus_are_not_judged_and_lose_muster_labels() -> None:
    index = _index()
    index.update_node(
        _node("cpu", {"kubernetes.io/os": "linux", gpustack.STATE_LABEL: "compliant"})
    )
    assert index.known("cpu") is None
    assert index.counts() == {"compliant": 0, "non-compliant": 0, "unknown": 0}
    assert gpunodes.desired_labels(None) == dict.fromkeys(
        (gpustack.STATE_LABEL, gpustack.CUDA_CAPABILITY_LABEL)
    )
