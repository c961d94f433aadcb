"""Model provenance offline: ``muster model verify --provenance`` over the digest it measures,
and ``muster check`` verifying the provenance of the Models in its files (never trusting a
status a file claims), with bundles made by the real cosign."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from muster.cli import common
from muster.models import files as modelfiles
from tests import attesting
from tests import modelprovenance as making
from tests.checkcli import muster_check
from tests.commandline import muster

pytestmark = pytest.mark.unit

ORG_CI = "predicate.runDetails.builder.id.startsWith('https://github.com/acme/')"
VERIFIER = "ghcr.io/muster-dev/muster@sha256:" + "4c" * 32
SERVER = "vllm/vllm-openai@sha256:" + "9b" * 32


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("provenance-cli")
    model = folder / "llama"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\x05" * 3000)
    digest = modelfiles.measure(model).digest
    key, public = attesting.generate_key(folder, "ci")
    _, other = attesting.generate_key(folder, "other")
    bundles = {
        "good": making.attest(key, digest, folder),
        "other_subject": making.attest(key, "sha256:" + "0d" * 32, folder),
        "elsewhere": making.attest(key, digest, folder, making.slsa_v1("https://evil.example/b")),
    }
    for name, text in bundles.items():
        (folder / f"{name}.sigstore.json").write_text(text)
    return {"folder": folder, "model": model, "digest": digest, "public": public, "other": other}


def verify(made: dict[str, Any], bundle: str, key: Path, *extra: str) -> tuple[int, str, str]:
    return muster(
        "model", "verify", made["model"], "--digest", made["digest"],
        "--provenance", made["folder"] / f"{bundle}.sigstore.json", "--provenance-key", key,
        *extra,
    )  # fmt: skip


def test_model_verify_checks_provenance_over_the_measured_digest(made: dict[str, Any]) -> None:
    code, out, _ = verify(made, "good", made["public"], "--provenance-condition", ORG_CI)
    assert code == common.EXIT_OK, out
    assert f"provenance: built by {making.BUILDER} from {making.SOURCE}, signed by" in out
    code, out, _ = verify(made, "good", made["public"], "--format", "json")
    recorded = json.loads(out)["provenance"]
    assert (recorded["builder"], recorded["source"]) == (making.BUILDER, making.SOURCE)
    assert recorded["digest"] == made["digest"]


@pytest.mark.parametrize(
    ("bundle", "signer", "condition", "said"),
    [
        ("other_subject", "public", ORG_CI, "statement has no subject with digest"),
        ("good", "other", ORG_CI, "--provenance-key (ECDSA P-256 key sha256:"),
        ("elsewhere", "public", ORG_CI, '= "https://evil.example/b"'),
    ],
)
def test_model_verify_fails_on_provenance_that_does_not_count(
    made: dict[str, Any], bundle: str, signer: str, condition: str, said: str
) -> None:
    code, out, _ = verify(made, bundle, made[signer], "--provenance-condition", condition)
    assert code == common.EXIT_FAIL
    assert out.startswith(f"FAIL {made['model']}:")
    assert said in out


def test_model_verify_provenance_options_need_each_other(made: dict[str, Any]) -> None:
    code, _, err = muster(
        "model", "verify", made["model"], "--digest", made["digest"],
        "--provenance-key", made["public"],
    )  # fmt: skip
    assert code == common.EXIT_ERROR
    assert "need --provenance" in err


def files(
    made: dict[str, Any], tmp_path: Path, provenance: dict[str, Any] | None, **extra: Any
) -> tuple[Path, Path]:
    model: dict[str, Any] = {
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "llama"},
        "spec": {"digest": made["digest"], **({"provenance": provenance} if provenance else {})},
        **extra,
    }
    policy = {
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "ModelPolicy",
        "metadata": {"name": "ml-provenance"},
        "spec": {"namespaceSelector": {"matchLabels": {"team": "ml"}}, "requireProvenance": True},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "ci-key", "namespace": "muster"},
        "data": {"key.pub": base64.b64encode(made["public"].read_bytes()).decode()},
    }
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "ml",
            "labels": {
                "team": "ml",
                "muster.dev/enforce": "true",
                "muster.dev/uncovered-images": "allow",
            },
        },
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "serve",
            "namespace": "ml",
            "annotations": {"muster.dev/model-volumes": json.dumps({"weights": "llama"})},
        },
        "spec": {
            "containers": [
                {
                    "name": "s",
                    "image": SERVER,
                    "volumeMounts": [{"name": "weights", "mountPath": "/m"}],
                }
            ],
            "volumes": [{"name": "weights", "emptyDir": {}}],
        },
    }
    policies = tmp_path / "policies.yaml"
    policies.write_text(yaml.safe_dump_all([policy, model, secret, namespace]))
    workload = tmp_path / "pod.yaml"
    workload.write_text(yaml.safe_dump(pod))
    return policies, workload


def provenance(made: dict[str, Any], bundle: str) -> dict[str, Any]:
    return {
        "bundle": (made["folder"] / f"{bundle}.sigstore.json").read_text(),
        "authorities": [
            {
                "name": "ci",
                "key": {"secretRef": {"namespace": "muster", "name": "ci-key", "key": "key.pub"}},
            }
        ],
        "conditions": [{"expression": ORG_CI}],
    }


def check(policies: Path, workload: Path) -> tuple[int, dict[str, Any]]:
    code, out, _ = muster_check(
        "--format", "json", "--verifier-image", VERIFIER, "--policy", str(policies), str(workload)
    )
    (result,) = json.loads(out)["results"]
    return code, result


def test_muster_check_admits_a_model_whose_provenance_verifies(
    made: dict[str, Any], tmp_path: Path
) -> None:
    code, result = check(*files(made, tmp_path, provenance(made, "good")))
    assert code == common.EXIT_OK, result
    assert result["allowed"] is True


def test_muster_check_denies_a_model_without_verified_provenance_naming_it(
    made: dict[str, Any], tmp_path: Path
) -> None:
    code, result = check(*files(made, tmp_path, None))
    assert code == common.EXIT_FAIL
    (denial,) = result["denials"]
    assert denial["reason"] == "ModelProvenanceNotVerified"
    assert denial["policy"] == {"kind": "ModelPolicy", "name": "ml-provenance"}
    assert "Model 'llama' has no verified provenance" in denial["message"]
    assert "the Model names none" in denial["message"]


def test_muster_check_verifies_rather_than_trusting_a_status_in_a_file(
    made: dict[str, Any], tmp_path: Path
) -> None:
    forged = {
        "status": {
            "observedGeneration": 1,
            "conditions": [
                {"type": "ProvenanceVerified", "status": "True", "observedGeneration": 1}
            ],
            "provenance": {"digest": made["digest"], "predicateType": making.SLSA_V1},
        }
    }
    model_files = files(made, tmp_path, provenance(made, "other_subject"), **forged)
    code, result = check(*model_files)
    assert code == common.EXIT_FAIL
    (denial,) = result["denials"]
    assert denial["reason"] == "ModelProvenanceNotVerified"
    assert "statement has no subject with digest " + made["digest"] in denial["message"]
