# mypy: disable-error-code="no-untyped-call"
# model_signing's public constructors are untyped.
"""A dataset volume is re-measured by the same init container as a model volume: the real
``muster model verify`` command, with the arguments the dataset gate gives it, against a
dataset directory signed with the real model_signing library. A tampered, an extra or a missing
file fails it; the untouched directory passes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import model_signing
import pytest

from muster.datasets.rules import registry
from muster.signatures.rules import verifiers
from tests import datasetfiles

pytestmark = pytest.mark.unit

MUSTER = Path(sys.executable).parent / "muster"


def _run_verifier(container: dict[str, Any], mounted: Path) -> subprocess.CompletedProcess[str]:
    """The init container's command and arguments, with its mount path where the data is."""
    mount = container["volumeMounts"][0]["mountPath"]
    command = [str(MUSTER) if c == "muster" else c for c in container["command"]]
    args = [str(mounted) if a == mount else a for a in container["args"]]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _tamper(root: Path) -> None:
    (root / "data" / "train" / "part-0000.jsonl").write_text('{"id": 0, "text": "poisoned"}\n')


def _add(root: Path) -> None:
    (root / "data" / "train" / "part-0002.jsonl").write_text('{"id": 999, "text": "slipped in"}\n')


def _remove(root: Path) -> None:
    (root / "data" / "test" / "part-0000.jsonl").unlink()


@pytest.mark.parametrize("hashing", ["files", "shards"])
@pytest.mark.parametrize("change", [_tamper, _add, _remove], ids=["tampered", "extra", "missing"])
def test_a_changed_dataset_fails_the_verifier_the_signed_one_passes(
    tmp_path: Path, hashing: str, change: Callable[[Path], None]
) -> None:
    dataset = datasetfiles.make_dataset(tmp_path / "corpus")
    private, public = datasetfiles.key_pair(tmp_path, "data-team")
    config = (
        model_signing.hashing.Config().use_shard_serialization(shard_size=4096)
        if hashing == "shards"
        else None
    )
    digest = datasetfiles.sign(dataset, tmp_path / "model.sig", private, config)
    spec = registry.DatasetSpec.model_validate(
        {
            "digest": digest,
            "signature": {
                "bundle": (tmp_path / "model.sig").read_text(),
                "publicKey": public.read_text(),
            },
        }
    )
    # The hashing choice is read from the Dataset's signature, as the gate does.
    assert spec.hashing.method == hashing
    container = verifiers.verifier_container("corpus", spec.digest, "muster:test", spec.hashing)

    untouched = _run_verifier(container, dataset)
    assert untouched.returncode == 0, untouched.stdout + untouched.stderr

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    change(copy)
    failed = _run_verifier(container, copy)
    # The pod does not start: the init container exits 1 saying what it measured instead.
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"expected {digest}" in failed.stdout
    assert failed.stdout.startswith(f"FAIL {copy}")
    assert "Traceback" not in failed.stderr


def test_the_signed_digest_is_musters_own_measure(tmp_path: Path) -> None:
    dataset = datasetfiles.make_dataset(tmp_path / "corpus")
    private, _ = datasetfiles.key_pair(tmp_path, "data-team")
    digest = datasetfiles.sign(dataset, tmp_path / "model.sig", private)
    measured = subprocess.run(
        [str(MUSTER), "model", "digest", str(dataset), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(measured.stdout)["digest"] == digest
