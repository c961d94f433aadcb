"""``muster check`` with a real registry and real cosign signatures, and real GPU node labels.

The same gates as admission: an unsigned image is denied with the image gate's message, a
signed one admitted and pinned; a CUDA pod is steered to compliant GPU nodes (nodes from a
file with real GPU Feature Discovery labels) and denied on a node with an end-of-life driver.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from muster.cli import common
from tests import peers
from tests.checkcli import muster_check

pytestmark = pytest.mark.integration

COSIGN_ENV = {"COSIGN_PASSWORD": ""}


@pytest.fixture(scope="module")
def images(registry: peers.Registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    workdir = tmp_path_factory.mktemp("check-images")
    prefix = workdir / "signer"
    peers.run_tool("cosign", "generate-key-pair", f"--output-key-prefix={prefix}", env=COSIGN_ENV)
    signed = peers.push_image(registry, "check/signed", "v1", workdir=workdir)
    peers.push_image(registry, "check/unsigned", "v1", workdir=workdir)
    cuda = yaml.safe_load(resources.files("muster").joinpath("demo", "cuda-image.yaml").read_text())
    cuda_digest = peers.push_image(registry, "check/cuda", "12.4", env=cuda["env"], workdir=workdir)
    for ref in (
        f"{registry.host}/check/signed@{signed}",
        f"{registry.host}/check/cuda@{cuda_digest}",
    ):
        peers.run_tool(
            "cosign", "sign", f"--key={prefix}.key", "--tlog-upload=false",
            "--use-signing-config=false", "--allow-http-registry", "-y", ref, env=COSIGN_ENV,
        )  # fmt: skip
    policy: dict[str, Any] = {
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "ImagePolicy",
        "metadata": {"name": "ci"},
        "spec": {
            "images": [f"{registry.host}/check/**"],
            "authorities": [{"name": "ci-key", "key": {"data": Path(f"{prefix}.pub").read_text()}}],
        },
    }
    policy_file = workdir / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    return {
        "host": registry.host,
        "policy": str(policy_file),
        "signed": f"{registry.host}/check/signed:v1",
        "signed_digest": signed,
        "unsigned": f"{registry.host}/check/unsigned:v1",
        "cuda": f"{registry.host}/check/cuda:12.4",
    }


def _pod(name: str, image: str, **spec: Any) -> str:
    container: dict[str, Any] = {"name": "main", "image": image, **spec.pop("container", {})}
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "ml"},
            "spec": {"containers": [container], **spec},
        }
    )


def test_unsigned_denied_signed_admitted_and_pinned(images: dict[str, str], tmp_path: Path) -> None:
    manifest = tmp_path / "pods.yaml"
    manifest.write_text(
        _pod("unsigned", images["unsigned"]) + "---\n" + _pod("signed", images["signed"])
    )
    code, out, err = muster_check(
        "--format", "json", "--insecure-registry", images["host"],
        "--policy", images["policy"], str(manifest),
    )  # fmt: skip
    assert code == common.EXIT_FAIL, err
    unsigned, signed = json.loads(out)["results"]
    assert unsigned["allowed"] is False
    (denial,) = unsigned["denials"]
    assert denial["check"] == "image-signature"
    assert denial["subject"] == 'container "main"'
    assert denial["policy"] == {"kind": "ImagePolicy", "name": "ci"}
    assert "is rejected by ImagePolicy 'ci': no signature found for sha256:" in denial["message"]
    assert signed["allowed"] is True
    assert signed["patch"] == [
        {
            "op": "replace",
            "path": "/spec/containers/0/image",
            "value": f"{images['signed']}@{images['signed_digest']}",
        }
    ]


def test_signed_alone_passes_from_stdin(images: dict[str, str]) -> None:
    code, out, _ = muster_check(
        "--insecure-registry", images["host"], "--policy", images["policy"], "-",
        stdin=_pod("signed", images["signed"]),
    )  # fmt: skip
    assert code == common.EXIT_OK
    assert "Pod ml/signed: admitted (enforce)" in out


GPU_POLICY = """\
apiVersion: muster.dev/v1alpha1
kind: GPUStackPolicy
metadata: {name: fleet}
spec:
  endOfLifeBranches:
    - {branch: 450, source: "R450 reached end of life"}
"""


def test_cuda_pod_is_steered_and_denied_on_an_end_of_life_node(
    images: dict[str, str], tmp_path: Path
) -> None:
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(resources.files("muster").joinpath("demo", "gpu-nodes.yaml").read_text())
    gpu_policy = tmp_path / "gpu.yaml"
    gpu_policy.write_text(GPU_POLICY)
    gpu = {"resources": {"limits": {"nvidia.com/gpu": 1}}}
    manifest = tmp_path / "gpu-pods.yaml"
    manifest.write_text(
        _pod("steered", images["cuda"], container=gpu)
        + "---\n"
        + _pod("on-a100", images["cuda"], container=gpu, nodeName="gpu-a100")
    )
    code, out, err = muster_check(
        "--format", "json", "--insecure-registry", images["host"],
        "--policy", images["policy"], "--policy", str(gpu_policy), "--policy", str(nodes),
        str(manifest),
    )  # fmt: skip
    assert code == common.EXIT_FAIL, err
    steered, on_a100 = json.loads(out)["results"]
    assert steered["allowed"] is True, steered
    affinity = [op for op in steered["patch"] if "affinity" in op["path"]]
    assert affinity, steered["patch"]
    assert "muster.dev/gpu-stack" in json.dumps(affinity)
    assert on_a100["allowed"] is False
    assert "node gpu-a100 is non-compliant" in on_a100["message"]
    assert "R450" in on_a100["message"]
