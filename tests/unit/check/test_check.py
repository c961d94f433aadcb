"""``muster check`` offline: the admission pipeline's gates over manifests and policy files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from muster.cli import common
from tests.checkcli import muster_check

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
MODEL_DIGEST = "sha256:" + "cd" * 32


UNPINNED_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: team}
spec:
  containers:
    - {name: app, image: "nginx:1.27"}
"""

PINNED_DEPLOYMENT = f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: api}}
spec:
  template:
    spec:
      containers:
        - {{name: app, image: "nginx@{DIGEST}"}}
"""


# Images the platform lets in unsigned, by name (a static pass); as written in a cluster, with
# Docker Hub's short names. Not pinned by the mutation here: the unit tests never reach a registry.
VENDORS = """\
apiVersion: muster.dev/v1alpha1
kind: ImagePolicy
metadata: {name: vendors}
spec:
  images: [nginx, vllm/vllm-openai, ghcr.io/acme/**]
  pinDigests: false
  authorities: [{static: {action: pass}}]
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def vendors(tmp_path: Path) -> tuple[str, str]:
    return "--policy", write(tmp_path, "vendors.yaml", VENDORS)


def test_unpinned_image_is_denied_with_the_admission_message(tmp_path: Path) -> None:
    manifest = write(tmp_path, "pod.yaml", UNPINNED_POD)
    code, out, _ = muster_check(*vendors(tmp_path), manifest)
    assert code == common.EXIT_FAIL
    assert f"{manifest}:1  Pod team/web: DENIED (enforce)" in out
    assert (
        "muster: container \"app\": image 'nginx:1.27' is not pinned by digest; "
        "refer to it as nginx:1.27@sha256:<digest>"
    ) in out


def test_pinned_workload_is_admitted_when_a_policy_covers_it(tmp_path: Path) -> None:
    code, out, _ = muster_check(*vendors(tmp_path), write(tmp_path, "d.yaml", PINNED_DEPLOYMENT))
    assert code == common.EXIT_OK
    assert "Deployment default/api: admitted (enforce)" in out
    assert "1 judged: 0 denied, 1 admitted (1 with warnings)" in out
    assert (
        f"Warning: muster: container \"app\": image 'nginx@{DIGEST}' is let in without a "
        "signature by ImagePolicy 'vendors' (static pass)"
    ) in out


def test_pinned_workload_no_policy_covers_is_denied_as_admission_would(tmp_path: Path) -> None:
    deployment = write(tmp_path, "d.yaml", PINNED_DEPLOYMENT)
    code, out, _ = muster_check("--format", "json", deployment)
    assert code == common.EXIT_FAIL
    (denial,) = json.loads(out)["results"][0]["denials"]
    assert denial["reason"] == "ImageNotCovered"
    assert f"image 'nginx@{DIGEST}' is not covered by any ImagePolicy" in denial["message"]
    assert "read as docker.io/library/nginx" in denial["message"]
    assert "no ImagePolicy applies to this namespace" in denial["message"]
    other = VENDORS.replace("[nginx, ", "[").replace("vendors}", "others}")
    code, out, _ = muster_check(
        "--format", "json", "--policy", write(tmp_path, "o.yaml", other), deployment
    )
    (denial,) = json.loads(out)["results"][0]["denials"]
    assert "vllm/vllm-openai (others), ghcr.io/acme/** (others)" in denial["message"]
    # Warn and allow, by the flag (as muster run's) or by the namespace's label.
    code, out, _ = muster_check("--uncovered-images", "warn", deployment)
    assert code == common.EXIT_OK
    assert 'Warning: muster: container "app": image' in out and "not covered" in out
    code, out, _ = muster_check("--uncovered-images", "allow", deployment)
    assert (code, "Warning" in out) == (common.EXIT_OK, False)
    namespace = write(
        tmp_path,
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n"
        "  labels: {muster.dev/uncovered-images: allow}\n",
    )
    code, out, _ = muster_check("--policy", namespace, deployment)
    assert code == common.EXIT_OK, out


def test_warn_mode_admits_with_the_warning(tmp_path: Path) -> None:
    code, out, _ = muster_check(
        *vendors(tmp_path), "--mode", "warn", write(tmp_path, "pod.yaml", UNPINNED_POD)
    )
    assert code == common.EXIT_OK
    assert "Warning: muster: container \"app\": image 'nginx:1.27' is not pinned" in out


def test_namespace_label_from_a_policy_file_sets_the_mode(tmp_path: Path) -> None:
    namespace = write(
        tmp_path,
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n"
        "  labels: {muster.dev/enforce: warn}\n",
    )
    code, out, _ = muster_check(
        *vendors(tmp_path), "--policy", namespace, write(tmp_path, "p.yaml", UNPINNED_POD)
    )
    assert code == common.EXIT_OK
    assert "Pod team/web: admitted (warn)" in out


def test_multi_document_stdin_and_json(tmp_path: Path) -> None:
    text = UNPINNED_POD + "---\n" + PINNED_DEPLOYMENT + "---\napiVersion: v1\nkind: Service\n"
    text += "metadata: {name: svc}\n"
    code, out, _ = muster_check(*vendors(tmp_path), "--format", "json", "-", stdin=text)
    assert code == common.EXIT_FAIL
    data = json.loads(out)
    assert data["allowed"] is False
    judged = [r for r in data["results"] if r["judged"]]
    assert [(r["object"], r["allowed"], r["line"], r["document"]) for r in judged] == [
        ("Pod team/web", False, 1, 1),
        ("Deployment default/api", True, 8, 2),
    ]
    assert judged[0]["denials"][0]["reason"] == "ImageNotPinned"
    assert judged[0]["denials"][0]["policy"] is None  # digest pinning is no policy object's
    assert judged[0]["message"].startswith("muster: container")


def test_training_job_templates_are_judged(tmp_path: Path) -> None:
    job = """\
apiVersion: kubeflow.org/v1
kind: PyTorchJob
metadata: {name: train, namespace: ml}
spec:
  pytorchReplicaSpecs:
    Master:
      template:
        spec:
          containers: [{name: pytorch, image: "ghcr.io/acme/train:v1"}]
    Worker:
      template:
        spec:
          containers: [{name: pytorch, image: "ghcr.io/acme/train:v1"}]
"""
    code, out, _ = muster_check(
        *vendors(tmp_path), "--format", "json", write(tmp_path, "job.yaml", job)
    )
    assert code == common.EXIT_FAIL
    denials = json.loads(out)["results"][0]["denials"]
    assert len(denials) == 2
    assert {d["reason"] for d in denials} == {"ImageNotPinned"}


def test_sarif_has_one_result_per_finding_located_in_the_file(tmp_path: Path) -> None:
    manifest = write(tmp_path, "two.yaml", PINNED_DEPLOYMENT + "---\n" + UNPINNED_POD)
    code, out, _ = muster_check("--uncovered-images", "allow", "--format", "sarif", manifest)
    assert code == common.EXIT_FAIL
    sarif = json.loads(out)
    assert sarif["version"] == "2.1.0"
    assert sarif["$schema"].endswith("sarif-2.1.0.json")
    (run,) = sarif["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "muster"
    assert [rule["id"] for rule in driver["rules"]] == ["ImageNotPinned"]
    (result,) = run["results"]
    assert result["ruleId"] == "ImageNotPinned"
    assert result["ruleIndex"] == 0
    assert result["level"] == "error"
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == manifest
    assert location["region"]["startLine"] == 10  # the Pod is the second document
    assert result["properties"]["document"] == 2
    assert "not pinned by digest" in result["message"]["text"]


def test_warnings_are_sarif_warnings(tmp_path: Path) -> None:
    code, out, _ = muster_check(
        "--format",
        "sarif",
        "--mode",
        "warn",
        "--uncovered-images",
        "allow",
        write(tmp_path, "p.yaml", UNPINNED_POD),
    )
    assert code == common.EXIT_OK
    assert [r["level"] for r in json.loads(out)["runs"][0]["results"]] == ["warning"]


def _model_files(tmp_path: Path, *, approved: bool) -> tuple[str, str]:
    policy = """\
apiVersion: muster.dev/v1alpha1
kind: ModelPolicy
metadata: {name: ml}
spec:
  namespaceSelector: {matchLabels: {team: ml}}
  requireSignature: false
---
apiVersion: v1
kind: Namespace
metadata:
  name: ml
  labels: {team: ml, muster.dev/enforce: "true"}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: weights
  namespace: ml
  labels: {muster.dev/model: llama}
spec: {}
"""
    if approved:
        policy += f"""---
apiVersion: muster.dev/v1alpha1
kind: Model
metadata: {{name: llama}}
spec: {{digest: "{MODEL_DIGEST}", format: safetensors}}
"""
    pod = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: serve, namespace: ml}}
spec:
  containers:
    - name: server
      image: "vllm/vllm-openai@{DIGEST}"
      volumeMounts: [{{name: weights, mountPath: /models}}]
  volumes:
    - name: weights
      persistentVolumeClaim: {{claimName: weights}}
"""
    return write(tmp_path, "models.yaml", policy + "---\n" + VENDORS), write(
        tmp_path, "serve.yaml", pod
    )


def test_model_gate_denies_an_unregistered_model_offline(tmp_path: Path) -> None:
    policies, pod = _model_files(tmp_path, approved=False)
    code, out, _ = muster_check("--format", "json", "--policy", policies, pod)
    assert code == common.EXIT_FAIL
    (result,) = json.loads(out)["results"]
    assert result["mode"] == "enforce"  # "true" opts in to enforce
    (denial,) = result["denials"]
    assert denial["reason"] == "ModelNotApproved"
    assert denial["policy"] == {"kind": "ModelPolicy", "name": "ml"}
    assert "llama" in result["message"]
    code, out, _ = muster_check("--format", "sarif", "--policy", policies, pod)
    assert code == common.EXIT_FAIL
    results = json.loads(out)["runs"][0]["results"]
    (found,) = [r for r in results if r["level"] == "error"]
    assert found["properties"]["policy"] == "ModelPolicy ml"
    (passed,) = [r for r in results if r["level"] == "warning"]  # the vendors' static pass
    assert passed["ruleId"] == "ImagePassedUnsigned"


def test_model_gate_admits_a_registered_model_and_injects_the_verifier(tmp_path: Path) -> None:
    policies, pod = _model_files(tmp_path, approved=True)
    verifier = f"ghcr.io/muster-dev/muster@{DIGEST}"
    code, out, _ = muster_check(
        "--format", "json", "--verifier-image", verifier, "--policy", policies, pod
    )
    assert code == common.EXIT_OK, out
    (result,) = json.loads(out)["results"]
    assert result["allowed"] is True
    # The mutation phase's patch was applied before validation, as the apiserver does.
    assert any("initContainers" in op["path"] for op in result["patch"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: Pod\nmetadata: {name: x}\n", "has no apiVersion"),
        ("apiVersion: v1\nkind: Pod\nmetadata: [\n", "is not valid YAML"),
        ("- a\n- b\n", "not a mapping"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n", "no Pod, workload"),
    ],
)
def test_bad_manifests_exit_2(tmp_path: Path, text: str, expected: str) -> None:
    code, _, err = muster_check(write(tmp_path, "bad.yaml", text))
    assert code == common.EXIT_ERROR
    assert expected in err
    assert "Traceback" not in err


def test_invalid_policy_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        "gpu.yaml",
        "apiVersion: muster.dev/v1alpha1\nkind: GPUStackPolicy\nmetadata: {name: g}\n"
        "spec: {mode: maybe}\n",
    )
    code, _, err = muster_check("--policy", bad, write(tmp_path, "p.yaml", UNPINNED_POD))
    assert code == common.EXIT_ERROR
    assert "GPUStackPolicy 'g' is invalid: mode:" in err


def test_missing_file_exits_2(tmp_path: Path) -> None:
    code, _, err = muster_check(str(tmp_path / "nope.yaml"))
    assert code == common.EXIT_ERROR
    assert "cannot read" in err


def test_json_errors_are_json(tmp_path: Path) -> None:
    code, out, _ = muster_check("--format", "json", str(tmp_path / "nope.yaml"))
    assert code == common.EXIT_ERROR
    assert "cannot read" in json.loads(out)["error"]


def test_control_plane_namespaces_are_never_judged(tmp_path: Path) -> None:
    pod = UNPINNED_POD.replace("namespace: team", "namespace: kube-system")
    code, out, _ = muster_check(write(tmp_path, "p.yaml", pod))
    assert code == common.EXIT_OK
    assert "skipped (not judged by Muster)" in out


def test_a_policy_folder_reads_every_yaml_file_in_it(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    policies, pod = _model_files(tmp_path, approved=False)
    (folder / "models.yaml").write_text(Path(policies).read_text())
    (folder / "README.md").write_text("not a policy")
    code, out, _ = muster_check("--format", "json", "--policy", str(folder), pod)
    assert code == common.EXIT_FAIL
    assert json.loads(out)["results"][0]["denials"][0]["reason"] == "ModelNotApproved"
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = muster_check("--policy", str(empty), pod)
    assert code == common.EXIT_ERROR
    assert "holds no .yaml" in err
