"""GPU pods at admission: detection, needs from real CUDA image env, placement and affinity."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from muster.gpu.rules import pods as gpupods
from muster.gpu.rules import policies as gpupolicies
from muster.gpu.rules import stack as gpustack
from muster.kernel import findings, subjects
from tests.unit.gpu.conftest import image_entries, node_label_files, node_labels

pytestmark = pytest.mark.unit

MIG = "nvidia.com/mig-1g.10gb"
PRESENT = "nvidia.com/gpu.present"
DEFAULT = {"default": gpupolicies.default_policy()}
PERMISSIVE = {"open": gpupolicies.parse_spec({})}


def _env(tag: str) -> dict[str, str]:
    entry = next(e for e in image_entries() if e["tag"] == tag and e["docker_arch"] == "amd64")
    keys = ("CUDA_VERSION", "NVIDIA_REQUIRE_CUDA", "NVARCH")
    return {key: str(entry[key]) for key in keys if key in entry}


def _gpu_spec(**extra: Any) -> dict[str, Any]:
    return {
        "containers": [
            {"name": "side", "image": "side:1"},
            {"name": "trainer", "image": "t:1", "resources": {"limits": {"nvidia.com/gpu": 1}}},
        ],
        **extra,
    }


def _node(name: str, labels: dict[str, str], policies: dict[str, Any]) -> gpupods.KnownNode:
    facts = gpustack.node_facts(labels, name=name)
    (spec,) = policies.values()
    return gpupods.KnownNode(name, facts, None, gpustack.assess(facts, spec))


def _h100() -> dict[str, str]:
    return node_labels(next(p for p in node_label_files() if "single" in p.name))


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        (_gpu_spec(), 'container "trainer" requests nvidia.com/gpu'),
        (
            {"containers": [{"name": "c", "resources": {"requests": {MIG: "1"}}}]},
            'container "c" requests nvidia.com/mig-1g.10gb',
        ),
        ({"containers": [{"name": "c"}], "resourceClaims": [{"name": "gpu"}]}, "resourceClaims"),
        ({"containers": [{"name": "c"}], "nodeSelector": {PRESENT: "true"}}, "nodeSelector"),
        (
            {
                "containers": [{"name": "c"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "nvidia.com/gpu.product", "operator": "Exists"}]}]}}},
            },
            "node affinity",
        ),
    ],
)  # fmt: skip
def test_gpu_pods_are_recognised(spec: dict[str, Any], why: str) -> None:
    assert any(why in reason for reason in gpupods.gpu_request(spec))


def test_other_pods_are_not_gpu_pods() -> None:
    spec = {"containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "1"}}}]}
    assert gpupods.gpu_request(spec) == ()
    assert gpupods.gpu_request({"containers": "odd", "nodeSelector": "odd"}) == ()


def test_only_the_containers_asking_for_a_gpu_are_read() -> None:
    assert gpupods.gpu_containers(_gpu_spec()) == [('container "trainer"', "t:1")]


def test_need_from_a_real_cuda_image() -> None:
    need = gpupods.need_from_envs(
        [('container "t"', "cuda:12.4", _env("12.4.1-base-ubuntu22.04"))], annotation=None
    )
    assert need.problems == ()
    assert need.capability == 12040
    assert need.requirements[0].startswith("cuda>=12.4 brand=tesla,driver>=470,driver<471")


def test_cuda_version_alone_is_the_fallback() -> None:
    need = gpupods.need_from_envs([("c", "i", {"CUDA_VERSION": "11.8.0"})], annotation=None)
    assert need.requirements == ("cuda>=11.8",)
    assert need.capability == 11080


def test_annotation_overrides_and_bad_annotation_is_a_finding() -> None:
    env = _env("12.8.1-base-ubuntu24.04")
    need = gpupods.need_from_envs([("c", "i", env)], annotation="cuda>=12.2")
    assert need.requirements == ("cuda>=12.2",)
    bad = gpupods.need_from_envs([("c", "i", env)], annotation="cuda>>12")
    assert [f.reason for f in bad.problems] == ["CudaRequirementInvalid"]


def test_nvidiascape_env_is_flagged_and_disable_require_does_not_switch_admission_off() -> None:
    env = {**_env("12.4.1-base-ubuntu22.04"), "LD_PRELOAD": "/x.so", "NVIDIA_DISABLE_REQUIRE": "1"}
    need = gpupods.need_from_envs([("c", "i", env)], annotation=None)
    assert {f.reason for f in need.problems} == {"LdPreloadInGPUImage", "RequirementCheckDisabled"}
    assert need.capability == 12040


def test_placement_on_real_node_labels() -> None:
    h100 = _node("h100", _h100(), PERMISSIVE)
    need124 = gpupods.need_from_envs([("c", "i", _env("12.4.1-base-ubuntu22.04"))], annotation=None)
    found, candidates = gpupods.placement_findings(need124, PERMISSIVE, [h100])
    assert (found, candidates) == ([], ["h100"])
    need128 = gpupods.need_from_envs([("c", "i", _env("12.8.1-base-ubuntu24.04"))], annotation=None)
    found, candidates = gpupods.placement_findings(need128, PERMISSIVE, [h100])
    assert candidates == []
    assert found[0].reason == "NoCompliantNode"
    assert "h100: its driver supports CUDA 12.4, needed 12.8" in found[0].message
    # A node an autoscaler adds may run it: a warning, and the binding decides.
    assert found[0].mode is findings.Mode.WARN
    assert "stays Pending until a node that can run it joins" in found[0].message


def test_no_compliant_node_names_the_states() -> None:
    h100 = _node("h100", _h100(), DEFAULT)  # R550 is end of life in the seed policy
    need = gpupods.need_from_envs([("c", "i", {"CUDA_VERSION": "12.0"})], annotation=None)
    found, _ = gpupods.placement_findings(need, DEFAULT, [h100])
    assert "no GPU node is compliant" in found[0].message
    assert "h100 non-compliant" in found[0].message
    assert found[0].mode is findings.Mode.WARN


def test_no_gpu_node_at_all_is_a_warning_for_scale_from_zero() -> None:
    need = gpupods.need_from_envs([("c", "i", {"CUDA_VERSION": "12.0"})], annotation=None)
    found, candidates = gpupods.placement_findings(need, DEFAULT, [])
    assert candidates == []
    assert [(f.reason, f.mode) for f in found] == [("NoCompliantNode", findings.Mode.WARN)]
    assert "there is no GPU node yet" in found[0].message


def test_warn_policies_only_warn() -> None:
    warn = {"w": gpupolicies.parse_spec({"mode": "warn"})}
    need = gpupods.need_from_envs([("c", "i", {"CUDA_VERSION": "12.0"})], annotation=None)
    found, _ = gpupods.placement_findings(need, warn, [])
    assert found[0].mode is findings.Mode.WARN


def test_findings_name_the_gpu_stack_policy_that_decided_them() -> None:
    warn = gpupolicies.parse_spec({"mode": "warn"})
    both = {"z-strict": gpupolicies.default_policy(), "a-lenient": warn}
    assert gpupods.deciding_policy(both) == findings.PolicyRef("GPUStackPolicy", "z-strict")
    assert gpupods.deciding_policy({"b": warn, "a": warn}) == gpupods.policy_ref("a")
    assert gpupods.deciding_policy({}) is None
    need = gpupods.need_from_envs(
        [("c", "i", {"CUDA_VERSION": "12.0", "LD_PRELOAD": "/x.so"})], annotation=None
    )
    found, _ = gpupods.placement_findings(need, both, [])
    assert {(f.reason, f.policy) for f in found} == {
        ("LdPreloadInGPUImage", gpupods.policy_ref("z-strict")),
        ("NoCompliantNode", gpupods.policy_ref("z-strict")),
    }
    (unknown,) = gpupods.node_findings(need, both, None, "x", subject="b")
    assert unknown.policy == gpupods.policy_ref("z-strict")


def test_binding_to_unknown_non_compliant_or_insufficient_nodes() -> None:
    need = gpupods.need_from_envs([("c", "i", {"CUDA_VERSION": "12.6"})], annotation=None)
    h100_open = _node("h100", _h100(), PERMISSIVE)
    h100_eol = _node("h100", _h100(), DEFAULT)
    assert gpupods.node_findings(need, DEFAULT, None, "x", subject="b")[0].reason == "NodeUnknown"
    eol = gpupods.node_findings(need, DEFAULT, h100_eol, "h100", subject="b")
    assert eol[0].reason == "NodeNotCompliant" and "end of life" in eol[0].message
    old = gpupods.node_findings(need, PERMISSIVE, h100_open, "h100", subject="b")
    assert old[0].reason == "NodeInsufficient"
    fine = gpupods.need_from_envs([("c", "i", {"CUDA_VERSION": "12.4"})], annotation=None)
    assert gpupods.node_findings(fine, PERMISSIVE, h100_open, "h100", subject="b") == []


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("deny", [("NodeUnknown", findings.Mode.ENFORCE)]),
        ("warn", [("NodeUnknown", findings.Mode.WARN)]),
        ("allow", []),
    ],
)
def test_unknown_nodes_get_what_the_policy_says(
    rule: str, expected: list[tuple[str, findings.Mode]]
) -> None:
    attested = {"a": gpupolicies.parse_spec({"requireAttestation": True, "unknownNodes": rule})}
    need = gpupods.need_from_envs([("c", "i", {"CUDA_VERSION": "12.4"})], annotation=None)
    unattested = _node("h100", _h100(), attested)  # real labels, no node agent: unknown
    assert unattested.compliance.state is gpustack.State.UNKNOWN
    for node in (unattested, None):  # judged unknown, or no GPU stack to judge at all
        found = gpupods.node_findings(need, attested, node, "h100", subject="b")
        assert [(f.reason, f.mode) for f in found] == expected
    # An allowed unknown node still has to run what the pod needs when its driver is known.
    newer = gpupods.need_from_envs([("c", "i", {"CUDA_VERSION": "12.8"})], annotation=None)
    found = gpupods.node_findings(newer, attested, unattested, "h100", subject="b")
    assert [f.reason for f in found] == (
        ["NodeUnknown"] if rule != "allow" else ["NodeInsufficient"]
    )


def test_the_strictest_unknown_nodes_rule_governs_and_deny_is_the_default() -> None:
    assert gpupolicies.parse_spec({}).unknown_nodes == "deny"
    allow = gpupolicies.parse_spec({"unknownNodes": "allow"})
    warn = gpupolicies.parse_spec({"unknownNodes": "warn"})
    assert gpupods.unknown_nodes_rule({"a": allow, "w": warn}) == "warn"
    assert gpupods.unknown_nodes_rule({"a": allow}) == "allow"
    assert gpupods.avoided_states({"a": allow}) == ["non-compliant"]
    assert gpupods.avoided_states({"a": allow, "d": gpupolicies.parse_spec({})}) == [
        "non-compliant",
        "unknown",
    ]


def test_warn_mode_never_steers() -> None:
    warn = gpupolicies.parse_spec({"mode": "warn"})
    assert not gpupods.steers({"w": warn})
    assert not gpupods.steers({})
    assert gpupods.steers({"w": warn, "e": gpupolicies.parse_spec({})})


def _patch(document: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 ``add`` and ``replace`` (the operations the gate emits), on a copy."""
    result = copy.deepcopy(document)
    for op in ops:
        assert op["op"] in ("add", "replace")
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"][1:].split("/")
        ]
        node: Any = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "replace":
            assert last in node, f"replace of a missing {op['path']}"
            node[last] = copy.deepcopy(op["value"])
        elif isinstance(node, list):
            node.append(op["value"]) if last == "-" else node.insert(int(last), op["value"])
        else:
            assert last not in node, f"add would replace {op['path']}"
            node[last] = copy.deepcopy(op["value"])
    return result


AVOID = ["non-compliant", "unknown"]


def _apply(spec: dict[str, Any], capability: int | None) -> dict[str, Any]:
    pod = {"spec": spec}
    template = subjects.templates_of(pod, ("",))[0]
    ops = gpupods.affinity_patch(template, capability, AVOID)
    patched = _patch(pod, ops)
    again = subjects.templates_of(patched, ("",))[0]
    assert gpupods.affinity_patch(again, capability, AVOID) == []  # reinvocation adds nothing
    return patched["spec"]


STATE = {"key": "muster.dev/gpu-stack", "operator": "NotIn", "values": AVOID}
ENOUGH = {"key": "muster.dev/cuda-capability", "operator": "Gt", "values": ["12039"]}
UNLABELLED = {"key": "muster.dev/cuda-capability", "operator": "DoesNotExist"}


def _terms(spec: dict[str, Any]) -> list[dict[str, Any]]:
    required = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    terms: list[dict[str, Any]] = required["nodeSelectorTerms"]
    return terms


def _satisfied(terms: list[dict[str, Any]], labels: dict[str, str]) -> bool:
    """The scheduler's reading of node selector terms (ORed; expressions ANDed)."""

    def holds(expression: dict[str, Any]) -> bool:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In":
            return labels.get(key) in values
        if operator == "NotIn":
            return labels.get(key) not in values
        if operator == "DoesNotExist":
            return key not in labels
        if operator == "Gt":
            return key in labels and int(labels[key]) > int(values[0])
        raise AssertionError(operator)

    return any(all(holds(e) for e in term.get("matchExpressions", [])) for term in terms)


def test_affinity_is_added_where_there_is_none() -> None:
    terms = _terms(_apply(_gpu_spec(), 12040))
    assert terms == [
        {"matchExpressions": [STATE, ENOUGH]},
        {"matchExpressions": [STATE, UNLABELLED]},
    ]


@pytest.mark.parametrize(
    ("labels", "allowed"),
    [
        ({}, True),  # a node template scaled from zero, a node not judged yet
        ({"muster.dev/gpu-stack": "compliant", "muster.dev/cuda-capability": "12040"}, True),
        ({"muster.dev/gpu-stack": "compliant", "muster.dev/cuda-capability": "12080"}, True),
        ({"muster.dev/gpu-stack": "compliant", "muster.dev/cuda-capability": "12020"}, False),
        ({"muster.dev/gpu-stack": "non-compliant", "muster.dev/cuda-capability": "12080"}, False),
        ({"muster.dev/gpu-stack": "unknown"}, False),
        ({"nvidia.com/gpu.present": "true"}, True),
    ],
)
def test_affinity_steers_away_from_bad_nodes_and_admits_unlabelled_ones(
    labels: dict[str, str], allowed: bool
) -> None:
    assert _satisfied(_terms(_apply(_gpu_spec(), 12040)), labels) is allowed


def test_affinity_joins_every_existing_term() -> None:
    user = [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]},
    ]
    spec = _gpu_spec(
        affinity={
            "podAffinity": {},
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": copy.deepcopy(user)
                }
            },
        }
    )
    terms = _terms(_apply(spec, 12040))
    zone = user[0]["matchExpressions"]
    assert [t["matchExpressions"] for t in terms] == [
        [*zone, STATE, ENOUGH],
        [*zone, STATE, UNLABELLED],
        [STATE, ENOUGH],
        [STATE, UNLABELLED],
    ]
    assert [t.get("matchFields") for t in terms[2:]] == [user[1]["matchFields"]] * 2
    assert "matchFields" not in terms[0]
    # The user's own term still restricts (the matchFields terms are left out: by node name).
    assert _satisfied(terms[:2], {"zone": "a"}) and not _satisfied(terms[:2], {"zone": "b"})


def test_affinity_without_a_cuda_need_keeps_only_the_state() -> None:
    spec = _apply(_gpu_spec(affinity={"nodeAffinity": {}}), None)
    assert _terms(spec) == [{"matchExpressions": [STATE]}]
