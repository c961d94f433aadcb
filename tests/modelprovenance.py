"""Model provenance made by the real cosign: ``cosign attest-blob --hash <OMS digest>`` writes a
Sigstore bundle whose DSSE envelope holds an in-toto statement about the model's OMS root digest,
as a CI job attesting the model it trained would (no transparency log, key-based)."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests import attesting, localsigstore, peers

SLSA_V1 = attesting.SLSA_V1
BUILDER = "https://github.com/acme/models/.github/workflows/train.yml@refs/heads/main"
SOURCE = "git+https://github.com/acme/models@refs/heads/main"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


def slsa_v1(builder: str = BUILDER) -> dict[str, Any]:
    """SLSA provenance v1 as GitHub's attest-build-provenance writes it, for a training job."""
    predicate = attesting.slsa_v1(builder=builder)
    predicate["buildDefinition"]["externalParameters"]["workflow"]["repository"] = (
        "https://github.com/acme/models"
    )
    predicate["buildDefinition"]["resolvedDependencies"] = [
        {"uri": SOURCE, "digest": {"gitCommit": "0c1f4f3c8a1e2b7d9c6f0a5e1b3d7c9f2a4e6b8d"}},
        {
            "uri": "hf://datasets/acme/corpus@v3",
            "digest": {"sha256": "ab" * 32},
        },
    ]
    return predicate


def attest(
    key: Path,
    digest: str,
    workdir: Path,
    predicate: dict[str, Any] | None = None,
    *,
    kind: str = "slsaprovenance1",
    name: str = "model",
) -> str:
    """The bundle (JSON text) ``cosign attest-blob`` writes over the OMS ``digest``."""
    algorithm, _, hexdigest = digest.partition(":")
    assert algorithm == "sha256", digest
    text = json.dumps(predicate if predicate is not None else slsa_v1())
    tag = hashlib.sha256(f"{text}{key}{digest}{kind}{name}".encode()).hexdigest()[:12]
    predicate_file = workdir / f"predicate-{tag}.json"
    predicate_file.write_text(text)
    bundle = workdir / f"provenance-{tag}.sigstore.json"
    peers.run_tool(
        "cosign",
        "attest-blob",
        f"--key={key}",
        f"--type={kind}",
        f"--predicate={predicate_file}",
        f"--hash={hexdigest}",
        f"--bundle={bundle}",
        "--new-bundle-format",
        "--tlog-upload=false",
        "--use-signing-config=false",
        "-y",
        name,
        env=attesting.COSIGN_ENV,
    )
    return bundle.read_text()


def _put(url: str, body: bytes, content_type: str, method: str = "PUT") -> str:
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback test registry
        return str(response.headers.get("Location") or "")


def _push_blob(registry: peers.Registry, repository: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    base = f"http://{registry.host}"
    location = _put(f"{base}/v2/{repository}/blobs/uploads/", b"", "application/json", "POST")
    if location.startswith("/"):
        location = base + location
    separator = "&" if "?" in location else "?"
    _put(f"{location}{separator}digest={digest}", data, "application/octet-stream")
    return digest


def attach(
    registry: peers.Registry,
    repository: str,
    subject: str,
    bundle: str,
    predicate_type: str = SLSA_V1,
) -> str:
    """Attach ``bundle`` to the artifact ``subject`` as an OCI 1.1 referrer, the manifest
    cosign v3 writes for an attestation bundle (``oras attach`` writes the same); on a registry
    without the referrers API, also the ``sha256-<hex>`` tag index clients fall back to."""
    base = f"http://{registry.host}"
    with urllib.request.urlopen(f"{base}/v2/{repository}/manifests/{subject}", timeout=10) as got:
        subject_type = got.headers.get("Content-Type")
        subject_size = len(got.read())
    empty = _push_blob(registry, repository, b"{}")
    layer = bundle.encode()
    layer_digest = _push_blob(registry, repository, layer)
    annotations = {"dev.sigstore.bundle.predicateType": predicate_type}
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE_TYPE,
            "config": {"mediaType": EMPTY, "digest": empty, "size": 2},
            "layers": [{"mediaType": BUNDLE_TYPE, "digest": layer_digest, "size": len(layer)}],
            "subject": {"mediaType": subject_type, "digest": subject, "size": subject_size},
            "annotations": annotations,
        }
    ).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    _put(f"{base}/v2/{repository}/manifests/{digest}", manifest, OCI_MANIFEST)
    if not registry.referrers_api:
        tag = subject.replace(":", "-")
        request = urllib.request.Request(f"{base}/v2/{repository}/manifests/{tag}")
        request.add_header("Accept", OCI_INDEX)
        try:
            with urllib.request.urlopen(request, timeout=10) as got:
                listed = json.loads(got.read())["manifests"]
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
            listed = []
        entry = {
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": len(manifest),
            "artifactType": BUNDLE_TYPE,
            "annotations": annotations,
        }
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*listed, entry]}
        _put(f"{base}/v2/{repository}/manifests/{tag}", json.dumps(index).encode(), OCI_INDEX)
    return digest


def attest_keyless(
    sigstore: localsigstore.LocalSigstore,
    signer: localsigstore.KeylessSigner,
    digest: str,
    workdir: Path,
    predicate: dict[str, Any] | None = None,
    *,
    rekor: int = 1,
) -> str:
    """``cosign attest-blob`` keyless over the OMS ``digest``: the Fulcio-shaped certificate of
    ``signer`` from the local Sigstore, the DSSE entry logged in its Rekor (v1, or v2 with a
    timestamp)."""
    imported = signer.key.with_name(f"{signer.key.stem}-cosign")
    if not imported.with_suffix(".key").exists():
        peers.run_tool(
            "cosign", "import-key-pair", f"--key={signer.key}",
            f"--output-key-prefix={imported}", "-y", env=attesting.COSIGN_ENV,
        )  # fmt: skip
    config = workdir / f"model-signing-config-v{rekor}.json"
    config.write_text(localsigstore.signing_config(sigstore, rekor=rekor))
    root = workdir / "model-trusted_root.json"
    root.write_text(sigstore.trusted_root_json())
    text = json.dumps(predicate if predicate is not None else slsa_v1())
    tag = hashlib.sha256(f"{text}{signer.subject}{digest}{rekor}".encode()).hexdigest()[:12]
    predicate_file = workdir / f"predicate-{tag}.json"
    predicate_file.write_text(text)
    bundle = workdir / f"keyless-provenance-{tag}.sigstore.json"
    peers.run_tool(
        "cosign", "attest-blob", f"--key={imported.with_suffix('.key')}",
        f"--certificate={signer.certificate}", f"--signing-config={config}",
        f"--trusted-root={root}", "--type=slsaprovenance1", f"--predicate={predicate_file}",
        f"--hash={digest.removeprefix('sha256:')}", f"--bundle={bundle}", "-y", "model",
        env=attesting.COSIGN_ENV,
    )  # fmt: skip
    return bundle.read_text()
