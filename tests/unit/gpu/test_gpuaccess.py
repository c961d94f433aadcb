"""GPUs reached without a request: NVIDIA_VISIBLE_DEVICES from the pod and from real CUDA images."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muster.gpu.rules import access as gpuaccess
from muster.gpu.rules import pods as gpupods
from muster.gpu.rules import policies as gpupolicies
from muster.kernel import findings
from tests import cudaimages
from tests.unit.gpu.conftest import image_entries, image_env

pytestmark = pytest.mark.unit

IMAGE = "registry.example/team/app@sha256:" + "a" * 64
ENFORCE = {"gpu": gpupolicies.parse_spec({})}
WARN = {"gpu": gpupolicies.parse_spec({"mode": "warn"})}


def _container(**fields: Any) -> dict[str, Any]:
    return {"name": "app", "image": IMAGE, **fields}


def _env(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in pairs]


def _judge(container: dict[str, Any], image_env: dict[str, str] | None = None) -> Any:
    (candidate,) = gpuaccess.candidates({"containers": [container]})
    needed = gpuaccess.needs_image_env(candidate.container)
    return gpuaccess.exposure(candidate, (image_env or {}) if needed else None)


# --- who asked for a GPU -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "asks"),
    [
        ({"limits": {"nvidia.com/gpu": 1}}, True),
        ({"limits": {"nvidia.com/gpu": "2"}}, True),
        ({"requests": {"nvidia.com/mig-1g.10gb": "1"}}, True),
        ({"limits": {"nvidia.com/gpu.shared": "1"}}, True),
        ({"claims": [{"name": "gpu"}]}, True),
        # NVIDIA's own docs: a request of 0 GPUs gets no device from the plugin, and the
        # toolkit then honours the image's NVIDIA_VISIBLE_DEVICES=all.
        ({"limits": {"nvidia.com/gpu": 0}}, False),
        ({"limits": {"nvidia.com/gpu": "0"}}, False),
        ({"limits": {"cpu": "1", "memory": "1Gi"}}, False),
        ({"limits": {"amd.com/gpu": "1"}}, False),
        ({}, False),
    ],
)
def test_a_request_is_a_positive_nvidia_resource_or_a_claim(
    resources: dict[str, Any], asks: bool
) -> None:
    assert gpuaccess.requests_devices({"resources": resources}) is asks


def test_candidates_are_every_container_kind_that_requests_no_gpu() -> None:
    spec = {
        "initContainers": [_container(name="setup")],
        "containers": [
            _container(name="trainer", resources={"limits": {"nvidia.com/gpu": 1}}),
            _container(name="sidecar"),
        ],
        "ephemeralContainers": [_container(name="debugger")],
        "volumes": [{"name": "weights", "image": {"reference": IMAGE}}],
    }
    labels = [c.label for c in gpuaccess.candidates(spec)]
    assert labels == [
        'init container "setup"',
        'container "sidecar"',
        'ephemeral container "debugger"',
    ]


# --- the variable from the pod spec ------------------------------------------------------


@pytest.mark.parametrize("value", ["all", "0", "0,1", "GPU-4b8b7c4e", "ALL", " void", "void,0"])
def test_any_value_but_void_none_or_empty_in_env_reaches_gpus(value: str) -> None:
    found = _judge(_container(env=_env(("NVIDIA_VISIBLE_DEVICES", value))))
    assert found is not None
    assert found.setting == gpuaccess.Setting(value, "the pod's env")
    assert f"NVIDIA_VISIBLE_DEVICES={value} from the pod's env" in found.message()


@pytest.mark.parametrize("value", ["void", "none", ""])
def test_void_none_and_empty_reach_no_gpu(value: str) -> None:
    container = _container(env=_env(("NVIDIA_VISIBLE_DEVICES", value)))
    assert not gpuaccess.needs_image_env(container)
    assert _judge(container) is None


def test_void_in_env_wins_over_a_cuda_image() -> None:
    container = _container(env=_env(("NVIDIA_VISIBLE_DEVICES", "void")))
    (candidate,) = gpuaccess.candidates({"containers": [container]})
    assert gpuaccess.exposure(candidate, cudaimages.dockerfile_env()) is None


def test_the_last_entry_of_a_name_wins() -> None:
    safe = _env(("NVIDIA_VISIBLE_DEVICES", "all"), ("NVIDIA_VISIBLE_DEVICES", "void"))
    unsafe = _env(("NVIDIA_VISIBLE_DEVICES", "void"), ("NVIDIA_VISIBLE_DEVICES", "all"))
    assert _judge(_container(env=safe)) is None
    assert _judge(_container(env=unsafe)) is not None


def test_a_value_referring_to_other_variables_counts_as_set() -> None:
    env = [{"name": "D", "value": "void"}, {"name": "NVIDIA_VISIBLE_DEVICES", "value": "$(D)"}]
    found = _judge(_container(env=env))
    assert found is not None and found.setting.value is None
    assert "refers to other variables" in found.message()


@pytest.mark.parametrize(
    ("value_from", "shown"),
    [
        ({"configMapKeyRef": {"name": "gpu", "key": "devices"}}, "ConfigMap gpu key devices"),
        ({"secretKeyRef": {"name": "s", "key": "k"}}, "Secret s key k"),
        ({"fieldRef": {"fieldPath": "metadata.annotations['d']"}}, "field metadata.annotations"),
    ],
)
def test_value_from_cannot_be_read_at_admission_and_counts_as_set(
    value_from: dict[str, Any], shown: str
) -> None:
    container = _container(env=[{"name": "NVIDIA_VISIBLE_DEVICES", "valueFrom": value_from}])
    found = _judge(container)
    assert found is not None and found.setting.value is None
    assert shown in found.message() and "unreadable at admission" in found.message()


@pytest.mark.parametrize("prefix", [None, "", "NVIDIA_", "NVIDIA_VISIBLE_"])
def test_env_from_that_could_set_it_counts_as_set(prefix: str | None) -> None:
    source: dict[str, Any] = {"configMapRef": {"name": "settings"}}
    if prefix is not None:
        source["prefix"] = prefix
    found = _judge(_container(envFrom=[source]))
    assert found is not None
    assert "envFrom ConfigMap settings" in found.message()


def test_env_from_with_another_prefix_leaves_it_to_the_image() -> None:
    container = _container(envFrom=[{"prefix": "APP_", "secretRef": {"name": "app"}}])
    assert gpuaccess.needs_image_env(container)
    assert _judge(container, {}) is None


def test_env_wins_over_env_from() -> None:
    container = _container(
        envFrom=[{"configMapRef": {"name": "settings"}}],
        env=_env(("NVIDIA_VISIBLE_DEVICES", "void")),
    )
    assert _judge(container) is None


# --- the variable from the image config --------------------------------------------------


def test_a_real_cuda_base_image_reaches_every_gpu() -> None:
    env = cudaimages.dockerfile_env()
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    found = _judge(_container(), env)
    assert found is not None
    message = found.message()
    assert f"NVIDIA_VISIBLE_DEVICES=all from the image config of {IMAGE}" in message
    assert "request nvidia.com/gpu, or set NVIDIA_VISIBLE_DEVICES=void" in message


def test_every_real_cuda_recipe_without_the_variable_is_legacy_exactly_as_the_toolkit_says() -> (
    None
):
    """With NVIDIA_VISIBLE_DEVICES unset, the toolkit gives all GPUs to a legacy image:
    CUDA_VERSION set and NVIDIA_REQUIRE_CUDA unset (the extract leaves the variable out)."""
    legacy = 0
    for entry in image_entries():
        env = image_env(entry)
        assert "NVIDIA_VISIBLE_DEVICES" not in env
        expected = bool(env.get("CUDA_VERSION")) and not env.get("NVIDIA_REQUIRE_CUDA")
        found = _judge(_container(), env)
        assert (found is not None) is expected, entry["origin"]
        if found is not None:
            legacy += 1
            assert found.legacy and "legacy CUDA image" in found.message()
    assert legacy > 0  # the data has such recipes (11.x arm64 and ppc64le stages)


def test_a_pod_can_make_a_plain_image_legacy_or_not() -> None:
    legacy = _judge(_container(env=_env(("CUDA_VERSION", "12.4.1"))), {})
    assert legacy is not None and legacy.legacy
    assert legacy.setting.source == "the pod's env"
    declared = _env(("CUDA_VERSION", "12.4.1"), ("NVIDIA_REQUIRE_CUDA", "cuda>=12.4"))
    assert _judge(_container(env=declared), {}) is None
    assert _judge(_container(), {"PATH": "/usr/bin"}) is None


def test_an_image_env_is_needed_only_when_the_pod_leaves_it_open() -> None:
    (candidate,) = gpuaccess.candidates({"containers": [_container()]})
    with pytest.raises(ValueError, match="image's environment is needed"):
        gpuaccess.exposure(candidate, None)


# --- findings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policies", "mode"), [(ENFORCE, findings.Mode.ENFORCE), (WARN, findings.Mode.WARN)]
)
def test_findings_follow_the_policy_mode_and_name_it(
    policies: dict[str, gpupolicies.GPUStackPolicySpec], mode: findings.Mode
) -> None:
    found = _judge(_container(env=_env(("NVIDIA_VISIBLE_DEVICES", "all"))))
    (finding,) = gpuaccess.findings_for([found], policies)
    assert finding.reason == "GPUAccessNotRequested"
    assert finding.check == gpupods.CHECK
    assert finding.subject == 'container "app"'
    assert finding.mode is mode
    assert finding.policy == gpupods.policy_ref("gpu")


def test_an_unreadable_image_fails_closed_and_says_how_to_avoid_the_read() -> None:
    (candidate,) = gpuaccess.candidates({"containers": [_container()]})
    finding = gpuaccess.unreadable_finding(candidate, f"cannot read image {IMAGE}: 404", ENFORCE)
    assert finding.reason == "ImageConfigUnreadable"
    assert finding.mode is findings.Mode.ENFORCE
    assert "set NVIDIA_VISIBLE_DEVICES=void in the container's env" in finding.message


# --- properties ----------------------------------------------------------------------------

_NAMES = st.sampled_from(["NVIDIA_VISIBLE_DEVICES", "CUDA_VERSION", "NVIDIA_REQUIRE_CUDA", "A"])
_VALUES = st.one_of(
    st.sampled_from(["", "void", "none", "all", "0", "12.4.1", "cuda>=12.4", "$(A)"]),
    st.text(max_size=12),
)
_ENTRY = st.one_of(
    st.builds(lambda n, v: {"name": n, "value": v}, _NAMES, _VALUES),
    st.builds(
        lambda n: {"name": n, "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}, _NAMES
    ),
)
_ENV_FROM = st.builds(
    lambda prefix: {"configMapRef": {"name": "c"}, **({"prefix": prefix} if prefix else {})},
    st.sampled_from(["", "NVIDIA_", "CUDA_", "APP_"]),
)
_IMAGE_ENV = st.dictionaries(_NAMES, _VALUES, max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20))
def test_a_literal_value_reaches_gpus_unless_void_none_or_empty(value: str) -> None:
    found = _judge(_container(env=_env(("NVIDIA_VISIBLE_DEVICES", value))), {})
    assert (found is None) is (value in {"", "void", "none"})


@settings(max_examples=300, deadline=None)
@given(st.lists(_ENTRY, max_size=5), st.lists(_ENV_FROM, max_size=2), _IMAGE_ENV)
def test_the_documented_fix_always_works(
    env: list[dict[str, Any]], env_from: list[dict[str, Any]], image: dict[str, str]
) -> None:
    """Whatever else the pod and image set, NVIDIA_VISIBLE_DEVICES=void last in env is safe."""
    container = _container(
        env=[*env, {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}], envFrom=env_from
    )
    assert _judge(container, image) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(_ENTRY, max_size=5), st.lists(_ENV_FROM, max_size=2), _IMAGE_ENV)
def test_what_cannot_be_read_never_makes_a_container_safer(
    env: list[dict[str, Any]], env_from: list[dict[str, Any]], image: dict[str, str]
) -> None:
    before = _judge(_container(env=env), image)
    after = _judge(_container(env=env, envFrom=env_from), image)
    if before is not None:
        assert after is not None


@settings(max_examples=300, deadline=None)
@given(st.lists(_ENTRY, max_size=5), _IMAGE_ENV, st.integers(min_value=1, max_value=8))
def test_a_container_requesting_a_gpu_is_never_judged_here(
    env: list[dict[str, Any]], image: dict[str, str], count: int
) -> None:
    container = _container(env=env, resources={"limits": {"nvidia.com/gpu": count}})
    assert gpuaccess.candidates({"containers": [container]}) == []


@settings(max_examples=300, deadline=None)
@given(st.lists(_ENTRY, max_size=5), _IMAGE_ENV)
def test_the_verdict_matches_the_toolkit_on_what_kubelet_builds(
    env: list[dict[str, Any]], image: dict[str, str]
) -> None:
    """A model of kubelet (image env, then env entries, last wins) and of the toolkit's rule
    agrees with the decision whenever every value is knowable."""
    if any("valueFrom" in e or "$(" in e.get("value", "") for e in env):
        return
    final = dict(image)
    for entry in env:
        final[entry["name"]] = entry["value"]
    devices = final.get("NVIDIA_VISIBLE_DEVICES")
    if devices is None:
        legacy = bool(final.get("CUDA_VERSION")) and not final.get("NVIDIA_REQUIRE_CUDA")
        reaches = legacy
    else:
        reaches = devices not in {"", "void", "none"}
    assert (_judge(_container(env=env), image) is not None) is reaches
