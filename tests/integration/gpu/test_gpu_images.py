"""CUDA requirements read from image configs in a real registry (real NVIDIA env strings)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from muster import cli
from muster.gpu import imageenv as gpuimages
from muster.platform import registries
from tests import paths, peers

pytestmark = pytest.mark.integration

GPU = paths.FIXTURES / "gpu"


def _env(tag: str, arch: str = "amd64") -> dict[str, str]:
    entries = yaml.safe_load((GPU / "cuda-images" / "cuda-image-env.yaml").read_text())["entries"]
    entry = next(e for e in entries if e["tag"] == tag and e["docker_arch"] == arch)
    keys = ("NVARCH", "CUDA_VERSION", "NV_CUDA_CUDART_VERSION", "NVIDIA_REQUIRE_CUDA")
    return {key: str(entry[key]) for key in keys if key in entry}


def _h100_node(tmp_path: Path) -> Path:
    node = tmp_path / "h100.json"
    node.write_bytes(
        (GPU / "gfd-labels" / "gpu-operator-H100-mig-single-node-labels.json").read_bytes()
    )
    return node


def _a100_node(tmp_path: Path) -> Path:
    """GFD labels of an A100 on driver 450.80.02 (CUDA 11.0), from NVIDIA's docs."""
    sets = yaml.safe_load((GPU / "gfd-labels" / "label-sets.yaml").read_text())["label_sets"]
    node = tmp_path / "a100.json"
    labels = next(s for s in sets if s["id"].endswith("#L199-L212"))["labels"]
    node.write_text(json.dumps(labels))
    return node


def _read(registry: peers.Registry, ref: str) -> dict[str, str]:
    async def read() -> dict[str, str]:
        settings = registries.RegistrySettings(insecure_registries=frozenset({registry.host}))
        async with registries.RegistryClient(settings) as client:
            return await gpuimages.ImageEnvReader(client).env(ref)

    return asyncio.run(read())


def test_a_multi_arch_index_is_read_for_linux_amd64(
    registry: peers.Registry, workdir: Path
) -> None:
    amd64 = _env("12.8.1-base-ubuntu24.04")
    arm64 = {**_env("12.8.1-base-ubuntu24.04", "arm64"), "CUDA_VERSION": "12.8.1"}
    peers.push_image(registry, "cuda-multi/amd64", env=amd64, workdir=workdir)
    peers.push_image(registry, "cuda-multi/arm64", env=arm64, workdir=workdir)
    # crane builds configs without a platform: set each one, as a multi-arch build would.
    refs = {}
    for arch in ("arm64", "amd64"):
        ref = refs[arch] = registry.ref(f"cuda-multi/{arch}")
        peers.run_tool(
            "crane", "mutate", "--insecure", f"--set-platform=linux/{arch}", f"--tag={ref}", ref
        )  # fmt: skip
    index = registry.ref("cuda-multi/index")
    peers.run_tool(
        "crane", "index", "append", "--insecure",
        f"--manifest={refs['arm64']}", f"--manifest={refs['amd64']}", f"--tag={index}",
    )  # fmt: skip
    env = _read(registry, index)
    assert env["NVIDIA_REQUIRE_CUDA"] == amd64["NVIDIA_REQUIRE_CUDA"]
    assert env["NVARCH"] == "x86_64"


def test_an_unreadable_image_is_an_error_naming_it(registry: peers.Registry) -> None:
    with pytest.raises(gpuimages.ImageEnvError, match=r"cannot read image .*nothing/here"):
        _read(registry, registry.ref("nothing/here"))


def _check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = cli.main(["gpu", "check", "--format=json", *argv])
    return code, json.loads(capsys.readouterr().out)


def test_gpu_check_image_reads_the_requirement_through_the_registry(
    registry: peers.Registry, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = _h100_node(workdir)
    peers.push_image(
        registry, "cuda/base", "12.4.1", env=_env("12.4.1-base-ubuntu22.04"), workdir=workdir
    )
    peers.push_image(
        registry, "cuda/base", "12.8.1", env=_env("12.8.1-base-ubuntu24.04"), workdir=workdir
    )
    insecure = f"--insecure-registry={registry.host}"
    code, report = _check(
        capsys, f"--image={registry.ref('cuda/base', '12.4.1')}", insecure, f"--node={node}"
    )
    assert code == 0, report
    assert report["requirements"][0].startswith("cuda>=12.4 brand=tesla")
    code, report = _check(
        capsys, f"--image={registry.ref('cuda/base', '12.8.1')}", insecure,
        f"--node={_a100_node(workdir)}",
    )  # fmt: skip
    assert code == 1
    assert report["nodes"][0]["requirement"]["satisfied"] is False


def test_gpu_check_image_flags_ld_preload(
    registry: peers.Registry, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**_env("12.4.1-base-ubuntu22.04"), "LD_PRELOAD": "/usr/lib/libevil.so"}
    peers.push_image(registry, "cuda/preload", env=env, workdir=workdir)
    code, report = _check(
        capsys, f"--image={registry.ref('cuda/preload')}", f"--insecure-registry={registry.host}",
        f"--node={_h100_node(workdir)}",
    )  # fmt: skip
    assert code == 1
    assert [flag["reason"] for flag in report["imageFlags"]] == ["LdPreloadInGPUImage"]


def test_gpu_check_image_errors_exit_2(
    registry: peers.Registry, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = _h100_node(workdir)
    code, report = _check(
        capsys,
        f"--image={registry.ref('absent/image')}",
        f"--insecure-registry={registry.host}",
        f"--node={node}",
    )
    assert code == 2
    assert "absent/image" in report["error"]
    peers.push_image(registry, "plain/image", env={"PATH": "/usr/bin"}, workdir=workdir)
    code, report = _check(
        capsys,
        f"--image={registry.ref('plain/image')}",
        f"--insecure-registry={registry.host}",
        f"--node={node}",
    )
    assert code == 2
    assert "declares no CUDA requirement" in report["error"]
