"""The GPU gate's real third-party data: GFD labels, CUDA image env, toolkit and driver outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.paths import fixture


def load_yaml(*parts: str) -> Any:
    return yaml.safe_load(fixture("gpu", *parts).read_text(encoding="utf-8"))


def label_sets() -> list[dict[str, Any]]:
    """Every label set cut from NVIDIA's docs, values as the strings Kubernetes stores."""
    sets: list[dict[str, Any]] = load_yaml("gfd-labels", "label-sets.yaml")["label_sets"]
    for entry in sets:
        entry["labels"] = {key: str(value) for key, value in entry["labels"].items()}
    return sets


def node_label_files() -> list[Path]:
    return sorted(fixture("gpu", "gfd-labels").glob("*-node-labels.json"))


def node_labels(path: Path) -> dict[str, str]:
    labels: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return labels


def image_entries() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = load_yaml("cuda-images", "cuda-image-env.yaml")["entries"]
    return entries


def image_env(entry: dict[str, Any]) -> dict[str, str]:
    """The ENV an image config carries (the upper-case keys of an entry)."""
    return {key: str(value) for key, value in entry.items() if key.isupper()}


def toolkit_outputs() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = load_yaml("container-toolkit", "toolkit-version-outputs.yaml")[
        "entries"
    ]
    return entries


_SMI_DRIVER = re.compile(r"^(?:DRIVER|KMD) version\s*:\s*([0-9.]+)\s*$", re.MULTILINE)
_SMI_CUDA = re.compile(r"^CUDA (?:UMD )?[Vv]ersion\s*:\s*([0-9.]+)\s*$", re.MULTILINE)
_TABLE = re.compile(r"Driver Version: ([0-9.]+)\s+CUDA Version: ([0-9.]+)")
_XML_DRIVER = re.compile(r"<driver_version>([0-9.]+)</driver_version>")
_XML_CUDA = re.compile(r"<cuda_version>([0-9.]+)</cuda_version>")


def smi_driver_cuda_pairs() -> list[tuple[str, str, str]]:
    """(file, driver, highest CUDA the driver reports) from every real nvidia-smi output."""
    pairs: list[tuple[str, str, str]] = []
    root = fixture("gpu", "nvidia-smi")
    for path in sorted(root.glob("extracted/*/nvidia-smi--version.txt")):
        text = path.read_text(encoding="utf-8")
        driver, cuda = _SMI_DRIVER.search(text), _SMI_CUDA.search(text)
        assert driver and cuda, path
        pairs.append((path.parent.name, driver[1], cuda[1]))
    for path in sorted(root.glob("docs/*.txt")):
        for match in _TABLE.finditer(path.read_text(encoding="utf-8")):
            pairs.append((path.name, match[1], match[2]))
    for path in sorted(root.glob("xml/*.xml")):
        text = path.read_text(encoding="utf-8")
        driver, cuda = _XML_DRIVER.search(text), _XML_CUDA.search(text)
        if driver and cuda:  # the oldest -q -x outputs carry neither
            pairs.append((path.name, driver[1], cuda[1]))
    for path in sorted(root.glob("captures/*__*.txt")):
        driver = _SMI_DRIVER.search(path.read_text(encoding="utf-8"))
        cuda = _SMI_CUDA.search(path.read_text(encoding="utf-8"))
        assert driver and cuda, path
        pairs.append((path.name, driver[1], cuda[1]))
    return pairs


@pytest.fixture
def default_policy_file(tmp_path: Path) -> Path:
    from muster.gpu.rules import policies as gpupolicies

    path = tmp_path / "policy.yaml"
    manifest = {
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "GPUStackPolicy",
        "metadata": {"name": "default"},
        "spec": gpupolicies.DEFAULT_POLICY,
    }
    path.write_text(yaml.safe_dump(manifest), encoding="utf-8")
    return path
