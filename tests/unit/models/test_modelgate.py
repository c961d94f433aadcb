"""Which models a pod uses, whether each is approved, and where the verifier goes."""

from __future__ import annotations

import copy
import json
from typing import Any

import pydantic
import pytest

from muster.gpu.rules import access as gpuaccess
from muster.kernel import findings, selectors, subjects
from muster.models.rules import approval as modelgate
from muster.models.rules import registry as modelregistry

pytestmark = pytest.mark.unit

OMS = "sha256:" + "11" * 32
OCI = "sha256:" + "22" * 32
OTHER = "sha256:" + "33" * 32
IMAGE = "registry.example/muster@sha256:" + "44" * 32


def template(
    spec: dict[str, Any], annotations: dict[str, str] | None = None
) -> subjects.PodTemplate:
    metadata: dict[str, Any] = {"name": "p"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return subjects.PodTemplate(pointer="/spec", spec=spec, metadata=metadata)


def entry(name: str, **spec: Any) -> modelregistry.ModelEntry:
    fields: dict[str, Any] = {"digest": OMS, **spec}
    return modelregistry.ModelEntry(name, modelregistry.ModelSpec.model_validate(fields))


def index(*entries: modelregistry.ModelEntry) -> modelregistry.Index:
    found = modelregistry.Index()
    for item in entries:
        found.put_model(item)
    return found


POLICY = modelregistry.ModelPolicySpec()


def test_all_four_kinds_of_model_use_are_found() -> None:
    spec = {
        "containers": [
            {
                "name": "kserve-container",
                "image": "x",
                "env": [
                    {"name": "STORAGE_URI", "value": f"oci://registry.example/llm@{OCI}"},
                    {"name": "OTHER", "value": "oci://not-a-model"},
                ],
            }
        ],
        "volumes": [
            {"name": "weights", "image": {"reference": f"registry.example/llama@{OCI}"}},
            {"name": "ckpt", "persistentVolumeClaim": {"claimName": "ckpt-pvc"}},
            {"name": "scratch", "persistentVolumeClaim": {"claimName": "scratch-pvc"}},
            {"name": "declared", "emptyDir": {}},
        ],
    }
    uses, problems = modelgate.model_uses(
        template(spec, {modelregistry.MODEL_VOLUMES_ANNOTATION: '{"declared": "bert"}'}),
        {"ckpt-pvc": "llama-ckpt"},
    )
    assert problems == []
    assert [(u.kind, u.where, u.reference, u.claim) for u in uses] == [
        ("imageVolume", "weights", f"registry.example/llama@{OCI}", None),
        ("storageUri", "kserve-container", f"registry.example/llm@{OCI}", None),
        ("declaredVolume", "declared", "bert", None),
        ("pvc", "ckpt", "llama-ckpt", "ckpt-pvc"),
    ]
    assert [u.needs_verifier for u in uses] == [False, False, True, True]
    assert uses[3].label == 'volume "ckpt" (PVC "ckpt-pvc")'


def test_a_kserve_storage_uri_annotation_is_a_model_use() -> None:
    uses, _ = modelgate.model_uses(
        template({"containers": []}, {"serving.kserve.io/storage-uri": f"oci://r.example/m@{OCI}"}),
        {},
    )
    assert [(u.kind, u.reference) for u in uses] == [("storageUri", f"r.example/m@{OCI}")]


@pytest.mark.parametrize(
    ("annotation", "reason"),
    [
        ("not json", "ModelVolumesInvalid"),
        ('["weights"]', "ModelVolumesInvalid"),
        ('{"weights": ""}', "ModelVolumesInvalid"),
        ('{"missing": "bert"}', "ModelVolumeUnknown"),
    ],
)
def test_bad_declarations_are_findings_not_crashes(annotation: str, reason: str) -> None:
    spec = {"containers": [], "volumes": [{"name": "weights", "emptyDir": {}}]}
    uses, problems = modelgate.model_uses(
        template(spec, {modelregistry.MODEL_VOLUMES_ANNOTATION: annotation}), {}
    )
    assert uses == []
    assert [p.reason for p in problems] == [reason]


def oci_use(reference: str) -> modelgate.ModelUse:
    return modelgate.ModelUse("imageVolume", "weights", reference)


def test_an_image_volume_matching_an_approved_oci_digest_passes() -> None:
    approved = entry("llama", ociReference=f"registry.example/llama:v1@{OCI}")
    match = modelgate.judge_use(oci_use(f"other.example/copy@{OCI}"), index(approved), POLICY)
    assert match.finding is None
    assert match.model == approved


def test_an_unknown_digest_is_denied_naming_volume_and_reference() -> None:
    approved = entry("llama", ociReference=f"registry.example/llama@{OCI}")
    match = modelgate.judge_use(oci_use(f"registry.example/llama@{OTHER}"), index(approved), POLICY)
    assert match.finding is not None
    assert match.finding.reason == "ModelNotApproved"
    assert match.finding.subject == 'image volume "weights"'
    assert OTHER in match.finding.message


def test_a_tag_is_judged_by_the_digest_it_resolved_to_or_refused() -> None:
    approved = entry("llama", ociReference=f"registry.example/llama@{OCI}")
    resolved = modelgate.judge_use(
        oci_use("registry.example/llama:v1"), index(approved), POLICY, oci_digest=OCI
    )
    assert resolved.finding is None
    unresolved = modelgate.judge_use(
        oci_use("registry.example/llama:v1"), index(approved), POLICY, resolve_error="HTTP 404"
    )
    assert unresolved.finding is not None
    assert unresolved.finding.reason == "ModelReferenceUnresolved"
    assert "HTTP 404" in unresolved.finding.message


def test_revoked_models_are_denied_with_the_reason() -> None:
    revoked = entry("bert", revoked=True, revocationReason="CVE-2026-0001 backdoor")
    use = modelgate.ModelUse("declaredVolume", "w", "bert")
    match = modelgate.judge_use(use, index(revoked), POLICY)
    assert match.finding is not None
    assert match.finding.reason == "ModelRevoked"
    assert "CVE-2026-0001 backdoor" in match.finding.message


def test_an_invalid_model_is_named_as_invalid_with_why_not_as_unregistered() -> None:
    found = index()
    found.invalid["Model/llama"] = "license: 'llama3' is not a valid SPDX licence expression"
    use = modelgate.ModelUse("declaredVolume", "w", "llama")
    invalid = modelgate.judge_use(use, found, POLICY).finding
    assert invalid is not None and invalid.reason == "ModelNotApproved"
    assert invalid.message.startswith("Model 'llama' is invalid and approves nothing (license: ")
    assert "kubectl describe model llama" in invalid.message
    missing = modelgate.judge_use(modelgate.ModelUse("declaredVolume", "w", "x"), found, POLICY)
    assert missing.finding is not None and "'x' is not registered" in missing.finding.message


def test_policy_requires_a_verified_signature_and_refuses_pickles() -> None:
    use = modelgate.ModelUse("declaredVolume", "w", "bert")
    strict = modelregistry.ModelPolicySpec(requireSignature=True)
    unsigned = modelgate.judge_use(use, index(entry("bert")), strict)
    assert unsigned.finding is not None
    assert unsigned.finding.reason == "ModelSignatureNotVerified"
    pickled = entry("bert", unsafeSerialization=True)
    refused = modelgate.judge_use(use, index(pickled), POLICY)
    assert refused.finding is not None
    assert refused.finding.reason == "ModelUnsafeSerialization"
    allowing = modelregistry.ModelPolicySpec.model_validate(
        {"unsafeSerialization": {"action": "allow", "allow": ["bert"]}}
    )
    assert modelgate.judge_use(use, index(pickled), allowing).finding is None


def test_policies_combine_to_the_strictest() -> None:
    warn = modelregistry.ModelPolicySpec.model_validate(
        {"mode": "warn", "unsafeSerialization": {"action": "allow", "allow": ["a", "b"]}}
    )
    other = modelregistry.ModelPolicySpec.model_validate(
        {
            "mode": "warn",
            "requireSignature": True,
            "unsafeSerialization": {"action": "allow", "allow": ["b"]},
        }
    )
    combined = modelgate.effective_policy([warn, other])
    assert combined is not None
    assert combined.mode is findings.Mode.WARN
    assert combined.require_signature
    assert combined.unsafe_serialization.allow == ("b",)
    assert modelgate.effective_policy([]) is None
    assert modelgate.effective_policy([warn, POLICY]).mode is findings.Mode.ENFORCE  # type: ignore[union-attr]


def test_findings_are_attributed_to_the_strictest_model_policy() -> None:
    warn = modelregistry.ModelPolicySpec.model_validate({"mode": "warn"})
    ref = findings.PolicyRef("ModelPolicy", "z-enforce")
    assert modelgate.deciding_policy({"a-warn": warn, "z-enforce": POLICY}) == ref
    assert modelgate.deciding_policy({"b": warn, "a": warn}) == findings.PolicyRef(
        "ModelPolicy", "a"
    )
    assert modelgate.deciding_policy({}) is None


def test_selectors_follow_kubernetes_semantics() -> None:
    selector = selectors.LabelSelector.model_validate(
        {
            "matchLabels": {"team": "ml"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["prod", "staging"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selectors.matches(selector, {"team": "ml", "tier": "prod"})
    assert not selectors.matches(selector, {"team": "ml", "tier": "dev"})
    assert not selectors.matches(selector, {"team": "ml", "tier": "prod", "legacy": "1"})
    assert selectors.matches(selectors.LabelSelector(), {})


@pytest.mark.parametrize(
    "spec",
    [
        {"digest": "sha256:abc"},
        {"digest": OMS, "ociReference": "registry.example/llama:v1"},
        {"digest": OMS, "source": "ftp://x"},
        {"digest": OMS, "signature": {"bundle": "{}"}},
        {
            "digest": OMS,
            "signature": {"publicKey": "PEM", "keyless": {"identity": "a", "issuer": "b"}},
        },
        {"digest": OMS, "surprise": True},
    ],
)
def test_bad_model_specs_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        modelregistry.ModelSpec.model_validate(spec)


# -- the verifying init container --------------------------------------------------------


def matched(
    volume: str, model: modelregistry.ModelEntry, kind: str = "declaredVolume"
) -> modelgate.Match:
    return modelgate.Match(modelgate.ModelUse(kind, volume, model.name), model, None)  # type: ignore[arg-type]


def apply(
    spec: dict[str, Any], metadata: dict[str, Any], ops: list[dict[str, Any]]
) -> dict[str, Any]:
    """RFC 6902 ``add`` and ``replace`` (the only ops the gate emits), applied in order."""
    document: dict[str, Any] = copy.deepcopy({"metadata": metadata, "spec": spec})
    for op in ops:
        assert op["op"] in ("add", "replace")
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
        ]
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list) and op["op"] == "replace":
            node[int(last)] = op["value"]
        elif isinstance(node, list):
            node.insert(int(last), op["value"])
        else:
            node[last] = op["value"]
    return document


def test_verifier_goes_first_and_runs_muster_model_verify_read_only() -> None:
    spec = {
        "initContainers": [{"name": "setup", "image": "x"}],
        "containers": [{"name": "main", "image": "x"}],
        "volumes": [{"name": "weights", "persistentVolumeClaim": {"claimName": "w"}}],
    }
    bert = entry("bert")
    ops = modelgate.verifier_patch(template(spec), [matched("weights", bert, "pvc")], IMAGE)
    pod = apply(spec, {"name": "p"}, ops)
    init = pod["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["muster-verify-weights", "setup"]
    verifier = init[0]
    assert verifier["image"] == IMAGE
    assert verifier["command"] == ["muster"]
    assert verifier["args"] == ["model", "verify", "/models/weights", "--digest", OMS]
    assert verifier["volumeMounts"] == [
        {"name": "weights", "mountPath": "/models/weights", "readOnly": True}
    ]
    context = verifier["securityContext"]
    assert context["runAsNonRoot"] and context["readOnlyRootFilesystem"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert json.loads(pod["metadata"]["annotations"][modelregistry.MODELS_ANNOTATION]) == [
        {"name": "bert", "digest": OMS}
    ]
    assert pod["metadata"]["labels"] == {modelregistry.USES_MODELS_LABEL: "true"}


def test_verifier_goes_right_after_kserve_storage_initializer() -> None:
    spec = {
        "initContainers": [
            {"name": "setup", "image": "x"},
            {"name": "storage-initializer", "image": "kserve"},
            {"name": "later", "image": "x"},
        ],
        "containers": [{"name": "main", "image": "x"}],
        "volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}],
    }
    ops = modelgate.verifier_patch(
        template(spec, {"keep": "me"}),
        [matched("a", entry("m1")), matched("b", entry("m2"))],
        IMAGE,
    )
    pod = apply(spec, {"name": "p", "annotations": {"keep": "me"}}, ops)
    assert [c["name"] for c in pod["spec"]["initContainers"]] == [
        "setup",
        "storage-initializer",
        "muster-verify-a",
        "muster-verify-b",
        "later",
    ]
    assert pod["metadata"]["annotations"]["keep"] == "me"


def test_pods_without_init_containers_get_a_list_and_oci_models_no_verifier() -> None:
    spec = {
        "containers": [{"name": "main", "image": "x"}],
        "volumes": [{"name": "w", "emptyDir": {}}, {"name": "img", "image": {"reference": "r"}}],
    }
    llama = entry("llama", ociReference=f"r.example/l@{OCI}")
    ops = modelgate.verifier_patch(
        template(spec), [matched("w", entry("bert")), matched("img", llama, "imageVolume")], IMAGE
    )
    pod = apply(spec, {"name": "p"}, ops)
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["muster-verify-w"]
    names = [
        m["name"]
        for m in json.loads(pod["metadata"]["annotations"][modelregistry.MODELS_ANNOTATION])
    ]
    assert names == ["bert", "llama"]


def test_an_existing_verifier_is_not_added_twice_and_denied_uses_get_none() -> None:
    bert = entry("bert")
    first = modelgate.verifier_container("w", OMS, IMAGE)
    spec = {"initContainers": [first], "containers": [], "volumes": [{"name": "w", "emptyDir": {}}]}
    ops = modelgate.verifier_patch(template(spec), [matched("w", bert)], IMAGE)
    assert all("initContainers" not in op["path"] for op in ops)
    refused = modelgate.Match(
        modelgate.ModelUse("declaredVolume", "x", "bert"),
        bert,
        findings.Finding("models", "ModelRevoked", "x", "revoked"),
    )
    ops = modelgate.verifier_patch(template({"containers": []}), [refused], IMAGE)
    assert all("initContainers" not in op["path"] for op in ops)


def test_workload_templates_are_patched_at_their_own_pointer() -> None:
    deployment_template = subjects.PodTemplate(
        pointer="/spec/template/spec", spec={"containers": []}, metadata={}
    )
    ops = modelgate.verifier_patch(deployment_template, [matched("w", entry("bert"))], IMAGE)
    assert ops[0]["path"] == "/spec/template/spec/initContainers"
    assert ops[1] == {
        "op": "add",
        "path": "/spec/template/metadata",
        "value": {
            "annotations": {
                modelregistry.MODELS_ANNOTATION: ops[1]["value"]["annotations"][
                    modelregistry.MODELS_ANNOTATION
                ]
            }
        },
    }
    assert ops[2]["path"] == "/spec/template/metadata/labels"


def test_long_volume_names_still_give_valid_container_names() -> None:
    name = modelgate.verifier_name("v" * 63)
    assert len(name) <= 63
    assert name.startswith(modelgate.VERIFIER_PREFIX)


def test_a_stale_verifier_is_replaced_in_place() -> None:
    old = modelgate.verifier_container("w", OTHER, "registry.example/muster:old")
    spec = {
        "initContainers": [{"name": "setup", "image": "x"}, old],
        "containers": [],
        "volumes": [{"name": "w", "emptyDir": {}}],
    }
    ops = modelgate.verifier_patch(template(spec), [matched("w", entry("bert"))], IMAGE)
    pod = apply(spec, {"name": "p"}, ops)
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["setup", "muster-verify-w"]
    assert pod["spec"]["initContainers"][1] == modelgate.verifier_container("w", OMS, IMAGE)


def test_replacing_and_adding_verifiers_in_one_patch_keeps_the_order() -> None:
    stale = modelgate.verifier_container("a", OTHER, IMAGE)
    spec = {
        "initContainers": [{"name": "storage-initializer", "image": "k"}, stale],
        "containers": [],
        "volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}],
    }
    ops = modelgate.verifier_patch(
        template(spec), [matched("a", entry("m1")), matched("b", entry("m2"))], IMAGE
    )
    init = apply(spec, {"name": "p"}, ops)["spec"]["initContainers"]
    assert [c["name"] for c in init] == [
        "storage-initializer",
        "muster-verify-b",
        "muster-verify-a",
    ]
    assert init[2]["args"][-1] == OMS


def test_the_verifier_asks_for_no_gpu_so_the_gpu_gate_needs_no_image_config() -> None:
    container = modelgate.verifier_container("w", OMS, IMAGE)
    assert not gpuaccess.needs_image_env(container)
    candidate = gpuaccess.Candidate(label="init container 'v'", container=container, image=IMAGE)
    assert gpuaccess.exposure(candidate, None) is None
