# mypy: disable-error-code="no-untyped-call"
# model_signing's public constructors are untyped.
"""`muster model register` manifests; the injected init container's command line, run for real."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import model_signing
import pytest
import yaml

from muster import cli
from muster.models import files as modelfiles
from muster.models.rules import approval as modelgate
from muster.models.rules import registry as modelregistry
from muster.signatures import oms as modelsigs

pytestmark = pytest.mark.unit

Run = Callable[..., tuple[int, str, str]]
KeyWriter = Callable[..., tuple[Path, Path]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def invoke(*argv: str | Path) -> tuple[int, str, str]:
        code = cli.main(["model", *map(str, argv)])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_register_prints_a_valid_model_with_the_signature_beside_it(
    run: Run, model_dir: Path, write_key: KeyWriter
) -> None:
    private, public = write_key()
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).sign(
        model_dir, model_dir.parent / "model.sig"
    )
    code, out, err = run(
        "register",
        model_dir,
        "--name",
        "tiny",
        "--key",
        public,
        "--source",
        "hf://acme/tiny@0123abc",
        "--oci-reference",
        "registry.example/models/tiny@sha256:" + "ab" * 32,
    )
    assert code == 0, err
    manifest = yaml.safe_load(out)
    assert manifest["kind"] == "Model"
    assert manifest["metadata"] == {"name": "tiny"}
    spec = modelregistry.ModelSpec.model_validate(manifest["spec"])
    assert spec.digest == modelfiles.measure(model_dir).digest
    assert spec.format == "pytorch"  # .bin shards
    assert spec.unsafe_serialization  # .bin is pickle-based
    assert spec.signature is not None and spec.signature.bundle is not None
    assert spec.signature.public_key == public.read_text()
    signed = modelsigs.verify_with_key(json.loads(spec.signature.bundle), public.read_bytes())
    assert signed.manifest.digest == spec.digest


def test_register_refuses_a_signature_for_other_bytes(
    run: Run, model_dir: Path, write_key: KeyWriter
) -> None:
    private, public = write_key()
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).sign(
        model_dir, model_dir.parent / "model.sig"
    )
    (model_dir / "config.json").write_text('{"layers": 3}\n')
    code, _, err = run("register", model_dir, "--name", "tiny", "--key", public)
    assert code == 2
    assert "signs sha256:" in err
    assert " measures sha256:" in err


def test_register_without_signature_and_a_signature_without_a_verifier(
    run: Run, model_dir: Path, write_key: KeyWriter
) -> None:
    code, out, _ = run("register", model_dir, "--name", "plain")
    assert code == 0
    assert "signature" not in yaml.safe_load(out)["spec"]
    private, _ = write_key()
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).sign(
        model_dir, model_dir.parent / "model.sig"
    )
    code, _, err = run("register", model_dir, "--name", "plain")
    assert code == 2
    assert "needs --key" in err


def test_verify_model_needs_a_reachable_cluster(run: Run, model_dir: Path, tmp_path: Path) -> None:
    code, _, err = run("verify", model_dir, "--model", "x", "--kubeconfig", tmp_path / "missing")
    assert code == 2
    assert "kubeconfig" in err


def test_the_injected_init_container_command_verifies_and_catches_a_flipped_byte(
    model_dir: Path, tmp_path: Path
) -> None:
    digest = modelfiles.measure(model_dir).digest
    container = modelgate.verifier_container("weights", digest, "unused")
    # The container mounts the volume at args[2]; here the model directory plays the volume.
    mounted = tmp_path / "models" / "weights"
    mounted.parent.mkdir()
    model_dir.rename(mounted)
    assert container["args"][2] == "/models/weights"
    argv = [*container["command"], *container["args"]]
    argv[3] = str(mounted)
    command = [sys.executable, "-m", "muster", *argv[1:]]
    passed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout.startswith(f"OK {mounted} {digest}")
    shard = mounted / "weights" / "shard-1.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x01
    shard.write_bytes(bytes(data))
    failed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert failed.returncode == 1
    assert f"expected {digest}" in failed.stdout
