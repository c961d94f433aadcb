"""``muster check`` offline with Datasets and DatasetPolicies in the policy files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from muster.cli import common
from tests.checkcli import muster_check

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
DATA = "sha256:" + "ef" * 32
VERIFIER = f"ghcr.io/muster-dev/muster@{DIGEST}"

POLICIES = f"""\
apiVersion: muster.dev/v1alpha1
kind: DatasetPolicy
metadata: {{name: data}}
spec:
  namespaceSelector: {{matchLabels: {{team: ml}}}}
  licenses: {{deny: ["CC-BY-NC-*"]}}
---
apiVersion: v1
kind: Namespace
metadata:
  name: ml
  labels: {{team: ml, muster.dev/enforce: "true"}}
---
apiVersion: muster.dev/v1alpha1
kind: Dataset
metadata: {{name: wiki}}
spec: {{digest: "{DATA}", license: "MIT OR CC-BY-NC-4.0"}}
---
apiVersion: muster.dev/v1alpha1
kind: Dataset
metadata: {{name: crawl}}
spec: {{digest: "{DATA}", license: "Apache-2.0 AND CC-BY-NC-4.0"}}
"""


def pod(dataset: str) -> str:
    return f"""\
apiVersion: v1
kind: Pod
metadata:
  name: train
  namespace: ml
  annotations: {{muster.dev/dataset-volumes: '{{"data": "{dataset}"}}'}}
spec:
  containers:
    - {{name: main, image: "registry.example/trainer@{DIGEST}"}}
  volumes:
    - {{name: data, nfs: {{server: nfs.example, path: /data}}}}
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def check(tmp_path: Path, dataset: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = muster_check(
        "--format",
        "json",
        "--uncovered-images",
        "allow",
        "--verifier-image",
        VERIFIER,
        "--policy",
        write(tmp_path, "datasets.yaml", POLICIES),
        write(tmp_path, "pod.yaml", pod(dataset)),
    )
    (result,) = json.loads(out)["results"]
    return code, result


def test_a_licence_the_policy_refuses_is_denied_offline(tmp_path: Path) -> None:
    code, result = check(tmp_path, "crawl")
    assert code == common.EXIT_FAIL
    (denial,) = result["denials"]
    assert denial["reason"] == "DatasetLicenseNotAllowed"
    assert denial["policy"] == {"kind": "DatasetPolicy", "name": "data"}
    assert "CC-BY-NC-4.0 is not allowed (deny CC-BY-NC-*)" in result["message"]


def test_an_allowed_dataset_is_admitted_with_its_verifier(tmp_path: Path) -> None:
    code, result = check(tmp_path, "wiki")
    assert code == common.EXIT_OK, result
    assert result["allowed"] is True
    # The mutation phase's patch was applied before validation, as the apiserver does.
    assert any("initContainers" in op["path"] for op in result["patch"])


def test_an_invalid_dataset_policy_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        "bad.yaml",
        "apiVersion: muster.dev/v1alpha1\nkind: DatasetPolicy\nmetadata: {name: d}\n"
        "spec: {licenses: {deny: ['NOT A LICENCE (']}}\n",
    )
    code, _, err = muster_check("--policy", bad, write(tmp_path, "p.yaml", pod("wiki")))
    assert code == common.EXIT_ERROR
    assert "DatasetPolicy 'd' is invalid: licenses.deny" in err
    broken = write(
        tmp_path,
        "dataset.yaml",
        "apiVersion: muster.dev/v1alpha1\nkind: Dataset\nmetadata: {name: x}\n"
        "spec: {digest: nope}\n",
    )
    code, _, err = muster_check("--policy", broken, write(tmp_path, "p.yaml", pod("wiki")))
    assert code == common.EXIT_ERROR
    assert "Dataset 'x' is invalid: digest" in err
