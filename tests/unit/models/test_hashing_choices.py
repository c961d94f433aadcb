# mypy: disable-error-code="no-untyped-call"
# model_signing's public constructors are untyped.
"""Every hashing choice model_signing 1.1 offers (sha256, blake2, blake3; files or shards),
signed by the real model_signing and verified by Muster bit for bit: intact models pass,
one flipped byte is refused naming the file, in ``muster model digest|verify|register`` and
in the init container the mutating gate injects."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import model_signing
import pytest
import yaml

from muster import cli
from muster.models import files as modelfiles
from muster.models.rules import approval as modelgate
from muster.models.rules import registry as modelregistry
from muster.signatures import oms as modelsigs
from muster.signatures.rules import oms

pytestmark = pytest.mark.unit

KeyWriter = Callable[..., tuple[Path, Path]]
Algorithm = Literal["sha256", "blake2", "blake3"]
SHARD = 4096  # small enough that the test files span several shards
# (hashing_algorithm, shard size or None for files) -> the hash_type and resource algorithm
# model_signing records: blake2 is named blake2b, and blake3 is never sharded.
CHOICES: dict[tuple[Algorithm, int | None], tuple[str, str, str]] = {
    ("sha256", None): ("files", "sha256", "sha256"),
    ("sha256", SHARD): ("shards", "sha256", f"sha256-sharded-{SHARD}"),
    ("blake2", None): ("files", "blake2b", "blake2b"),
    ("blake2", SHARD): ("shards", "blake2b", f"blake2b-sharded-{SHARD}"),
    ("blake3", None): ("files", "blake3", "blake3"),
    ("blake3", SHARD): ("files", "blake3", "blake3"),
}
IDS = [f"{algorithm}-{'shards' if shard else 'files'}" for algorithm, shard in CHOICES]


def hashing_config(algorithm: Algorithm, shard: int | None) -> model_signing.hashing.Config:
    config = model_signing.hashing.Config()
    if shard is None:
        return config.use_file_serialization(hashing_algorithm=algorithm)
    return config.use_shard_serialization(hashing_algorithm=algorithm, shard_size=shard)


def sign(
    model: Path, signature: Path, private: Path, algorithm: Algorithm, shard: int | None
) -> Any:
    """Sign with the real model_signing; the in-toto statement it signed."""
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).set_hashing_config(
        hashing_config(algorithm, shard)
    ).sign(model, signature)
    bundle = json.loads(signature.read_text())
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    def invoke(*argv: str | Path) -> tuple[int, str, str]:
        code = cli.main(["model", *map(str, argv)])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.mark.parametrize(("algorithm", "shard"), list(CHOICES), ids=IDS)
def test_each_choice_verifies_bit_for_bit_and_a_flipped_byte_is_refused(
    model_dir: Path,
    tmp_path: Path,
    write_key: KeyWriter,
    run: Callable[..., tuple[int, str, str]],
    algorithm: Algorithm,
    shard: int | None,
) -> None:
    private, public = write_key()
    signature = tmp_path / "model.sig"
    statement = sign(model_dir, signature, private, algorithm, shard)
    method, hash_type, resource_algorithm = CHOICES[(algorithm, shard)]
    recorded = statement["predicate"]["serialization"]
    assert (recorded["method"], recorded["hash_type"]) == (method, hash_type)
    assert {r["algorithm"] for r in statement["predicate"]["resources"]} == {resource_algorithm}
    signed_digest = "sha256:" + statement["subject"][0]["digest"]["sha256"]

    # Muster's own measurement is model_signing's statement, byte for byte.
    serialization = oms.serialization_for(
        algorithm, shard, ignore_paths=recorded.get("ignore_paths", ())
    )
    assert oms.build_statement(modelfiles.measure(model_dir, serialization)) == statement
    code, out, err = run(
        "digest",
        model_dir,
        "--hashing-algorithm",
        algorithm,
        *(["--shard-size", shard] * bool(shard)),
    )
    assert (code, out.strip()) == (0, signed_digest), err

    code, out, err = run("verify", model_dir, "--signature", signature, "--key", public)
    assert code == 0, out + err
    assert out.startswith(f"OK {model_dir} {signed_digest} signed by")

    target = model_dir / "weights" / "shard-2.bin"  # 5000 bytes: shards 0:4096 and 4096:5000
    flip(target, 4321)
    changed = "weights/shard-2.bin:4096:5000" if method == "shards" else "weights/shard-2.bin"
    pem = public.read_bytes()
    outcome = modelfiles.verify_signature(
        model_dir, signature, lambda bundle: modelsigs.verify_with_key(bundle, pem)
    )
    assert [(d.kind, d.name) for d in outcome.differences] == [("changed", changed)]
    code, out, _ = run("verify", model_dir, "--signature", signature, "--key", public)
    assert code == 1
    assert f"  {changed}: content changed (expected {resource_algorithm}:" in out
    # model_signing agrees, both ways (told the hashing: its own guess cannot read "blake2b").
    verifier = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public)
    verifier.set_hashing_config(hashing_config(algorithm, shard))
    with pytest.raises(ValueError, match="Signature mismatch"):
        verifier.verify(model_dir, signature)
    flip(target, 4321)
    verifier.verify(model_dir, signature)


@pytest.mark.parametrize(("algorithm", "shard"), list(CHOICES), ids=IDS)
def test_the_init_container_hashes_as_the_models_signature_did(
    model_dir: Path,
    tmp_path: Path,
    write_key: KeyWriter,
    run: Callable[..., tuple[int, str, str]],
    algorithm: Algorithm,
    shard: int | None,
) -> None:
    private, public = write_key()
    statement = sign(model_dir, model_dir.parent / "model.sig", private, algorithm, shard)
    code, out, err = run("register", model_dir, "--name", "tiny", "--key", public)
    assert code == 0, err
    spec = modelregistry.ModelSpec.model_validate(yaml.safe_load(out)["spec"])
    assert spec.digest == "sha256:" + statement["subject"][0]["digest"]["sha256"]
    method, hash_type, _ = CHOICES[(algorithm, shard)]
    assert (spec.hashing.method, spec.hashing.hash_type) == (method, hash_type)

    container = modelgate.verifier_container("weights", spec.digest, "unused", spec.hashing)
    extra = container["args"][5:]
    assert extra == modelgate.hashing_args(spec.hashing)
    assert ("--hashing-algorithm" in extra) == (algorithm != "sha256")
    assert ("--shard-size" in extra) == (method == "shards")
    # The container mounts the volume at args[2]; the model directory plays the volume.
    argv = [sys.executable, "-m", "muster", *container["args"]]
    argv[5] = str(model_dir)
    passed = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.startswith(f"OK {model_dir} {spec.digest}")
    flip(model_dir / "config.json", 3)
    failed = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert failed.returncode == 1
    assert f"expected {spec.digest}" in failed.stdout


def test_a_default_model_keeps_the_verifier_it_always_had(model_dir: Path) -> None:
    digest = modelfiles.measure(model_dir).digest
    spec = modelregistry.ModelSpec(digest=digest)
    assert spec.hashing == oms.Serialization()
    container = modelgate.verifier_container("w", digest, "unused", spec.hashing)
    assert container["args"] == ["model", "verify", "/models/w", "--digest", digest]


def test_the_same_bytes_have_a_different_digest_per_choice(model_dir: Path) -> None:
    digests = {
        choice: modelfiles.measure(model_dir, oms.serialization_for(*choice)).digest
        for choice in CHOICES
    }
    # blake3 by shards is blake3 by files, as in model_signing; every other choice differs.
    assert digests[("blake3", SHARD)] == digests[("blake3", None)]
    assert len(set(digests.values())) == len(CHOICES) - 1


def _statement(serialization: dict[str, Any]) -> dict[str, Any]:
    resources = [{"name": "a", "algorithm": "sha512", "digest": "00" * 64}]
    return {
        "_type": oms.STATEMENT_TYPE,
        "subject": [
            {"name": "m", "digest": {"sha256": oms.root_digest([oms.Resource("a", "", "00" * 64)])}}
        ],
        "predicateType": oms.PREDICATE_TYPE,
        "predicate": {"serialization": serialization, "resources": resources},
    }


@pytest.mark.parametrize("hash_type", ["sha512", "md5", "blake2s", "BLAKE3"])
def test_an_unknown_algorithm_is_an_error_naming_it(hash_type: str) -> None:
    statement = _statement({"method": "files", "hash_type": hash_type, "allow_symlinks": False})
    with pytest.raises(oms.OmsError, match=f"hash type '{hash_type}' is not supported"):
        oms.manifest_from_statement(statement)
    with pytest.raises(oms.OmsError, match=f"hashing algorithm '{hash_type}' is not supported"):
        oms.serialization_for(hash_type)


def test_a_sharded_blake3_statement_is_refused_as_model_signing_refuses_it() -> None:
    statement = _statement(
        {"method": "shards", "hash_type": "blake3", "shard_size": SHARD, "allow_symlinks": False}
    )
    with pytest.raises(oms.OmsError, match="blake3 is never sharded"):
        oms.manifest_from_statement(statement)


def test_an_unknown_algorithm_on_the_command_line_is_refused(
    model_dir: Path, run: Callable[..., tuple[int, str, str]]
) -> None:
    code, _, err = run("digest", model_dir, "--hashing-algorithm", "md5")
    assert code == 2
    assert "invalid choice: 'md5'" in err
    code, _, err = run("verify", model_dir, "--signature", "x.sig", "--hashing-algorithm", "blake3")
    assert code == 2
    assert "--hashing-algorithm and --shard-size go with --digest" in err


def test_a_blake3_signed_model_can_be_checked_by_digest(
    model_dir: Path, tmp_path: Path, write_key: KeyWriter, run: Callable[..., tuple[int, str, str]]
) -> None:
    private, _ = write_key()
    statement = sign(model_dir, tmp_path / "model.sig", private, "blake3", None)
    digest = "sha256:" + statement["subject"][0]["digest"]["sha256"]
    code, out, _ = run("verify", model_dir, "--digest", digest, "--hashing-algorithm", "blake3")
    assert code == 0, out
    # The same digest, hashed the default way, is another number: refused, never guessed.
    code, out, _ = run("verify", model_dir, "--digest", digest)
    assert code == 1
    assert f"expected {digest}" in out


def test_a_model_whose_bundle_cannot_be_read_is_re_measured_the_default_way(
    model_dir: Path, tmp_path: Path, write_key: KeyWriter
) -> None:
    private, public = write_key()
    sign(model_dir, tmp_path / "model.sig", private, "blake3", None)
    bundle = json.loads((tmp_path / "model.sig").read_text())
    signature = {"bundle": json.dumps(bundle), "publicKey": public.read_text()}
    spec = modelregistry.ModelSpec(digest="sha256:" + "0" * 64, signature=signature)
    assert (spec.hashing.method, spec.hashing.hash_type) == ("files", "blake3")
    # Unreadable: the digest still decides, hashed the default way (it will not match).
    bundle["dsseEnvelope"]["payload"] = "not base64!"
    unreadable = {**signature, "bundle": json.dumps(bundle)}
    assert modelregistry.ModelSpec(digest=spec.digest, signature=unreadable).hashing == (
        oms.Serialization()
    )
    with pytest.raises(oms.OmsError, match="DSSE payload is not base64"):
        oms.serialization_of_bundle(bundle)
    with pytest.raises(oms.OmsError, match="no DSSE envelope payload"):
        oms.serialization_of_bundle({"dsseEnvelope": {}})
