"""Attestations made by the real cosign: v2 ``cosign attest`` (a ``.att`` manifest of DSSE
envelopes) and v3 (Sigstore bundles as OCI referrers), over real SLSA provenance and CycloneDX
predicates.

The e2e and integration tests attest images on the test registries with :func:`attest_v2` and
:func:`attest_v3`; ``python -m tests.attesting FOLDER`` makes the committed fixtures of
``tests/fixtures/attestations/`` and rewrites their ``provenance.jsonl`` (new keys every run).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from tests import localsigstore, peers

COSIGN_ENV = {"COSIGN_PASSWORD": ""}
SLSA_V1 = "https://slsa.dev/provenance/v1"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
CYCLONEDX = "https://cyclonedx.org/bom"
BUILDER = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
SOURCE = "git+https://github.com/acme/app@refs/heads/main"


def slsa_v1(builder: str = BUILDER, started: str = "2026-12-01T10:00:00Z") -> dict[str, Any]:
    """SLSA provenance v1 as GitHub's attest-build-provenance writes it (buildType, workflow
    parameters, resolved dependencies, builder id, invocation)."""
    return {
        "buildDefinition": {
            "buildType": "https://actions.github.io/buildtypes/workflow/v1",
            "externalParameters": {
                "workflow": {
                    "ref": "refs/heads/main",
                    "repository": "https://github.com/acme/app",
                    "path": ".github/workflows/release.yml",
                }
            },
            "internalParameters": {
                "github": {
                    "event_name": "push",
                    "repository_id": "812345678",
                    "repository_owner_id": "91234567",
                    "runner_environment": "github-hosted",
                }
            },
            "resolvedDependencies": [
                {
                    "uri": SOURCE,
                    "digest": {"gitCommit": "4f3c8a1e2b7d9c6f0a5e1b3d7c9f2a4e6b8d0c1f"},
                }
            ],
        },
        "runDetails": {
            "builder": {"id": builder},
            "metadata": {
                "invocationId": "https://github.com/acme/app/actions/runs/12345678901/attempts/1",
                "startedOn": started,
            },
        },
    }


def slsa_v02() -> dict[str, Any]:
    """SLSA provenance v0.2 as the slsa-github-generator writes it."""
    return {
        "builder": {
            "id": "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/"
            "generator_container_slsa3.yml@refs/tags/v2.0.0"
        },
        "buildType": "https://github.com/slsa-framework/slsa-github-generator/container@v1",
        "invocation": {
            "configSource": {
                "uri": SOURCE,
                "digest": {"sha1": "4f3c8a1e2b7d9c6f0a5e1b3d7c9f2a4e6b8d0c1f"},
                "entryPoint": ".github/workflows/release.yml",
            }
        },
        "metadata": {
            "buildInvocationID": "12345678901-1",
            "buildStartedOn": "2026-12-01T10:00:00Z",
            "completeness": {"parameters": True, "environment": False, "materials": False},
            "reproducible": False,
        },
        "materials": [
            {"uri": SOURCE, "digest": {"sha1": "4f3c8a1e2b7d9c6f0a5e1b3d7c9f2a4e6b8d0c1f"}}
        ],
    }


def cyclonedx(*packages: tuple[str, str]) -> dict[str, Any]:
    """A CycloneDX 1.6 SBOM of a Python image, as syft or cyclonedx-py write one."""
    listed = packages or (("python", "3.12.7"), ("requests", "2.32.3"), ("urllib3", "2.2.3"))
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
        "version": 1,
        "metadata": {
            "timestamp": "2026-12-01T10:05:00Z",
            "component": {"type": "container", "name": "acme/app", "bom-ref": "acme/app"},
        },
        "components": [
            {
                "type": "library" if name != "python" else "application",
                "bom-ref": f"pkg:pypi/{name}@{version}",
                "name": name,
                "version": version,
                "purl": f"pkg:pypi/{name}@{version}",
            }
            for name, version in listed
        ],
    }


def generate_key(folder: Path, name: str) -> tuple[Path, Path]:
    prefix = folder / name
    peers.run_tool("cosign", "generate-key-pair", f"--output-key-prefix={prefix}", env=COSIGN_ENV)
    return Path(f"{prefix}.key"), Path(f"{prefix}.pub")


def _predicate_file(workdir: Path, predicate: dict[str, Any]) -> Path:
    text = json.dumps(predicate, indent=2)
    path = workdir / f"predicate-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
    path.write_text(text)
    return path


def attest_v2(key: Path, ref: str, kind: str, predicate: dict[str, Any], workdir: Path) -> None:
    """cosign v2: a DSSE layer appended to the image's ``sha256-<hex>.att`` manifest, no tlog."""
    peers.run_tool(
        "cosign2",
        "attest",
        f"--key={key}",
        f"--type={kind}",
        f"--predicate={_predicate_file(workdir, predicate)}",
        "--tlog-upload=false",
        "--allow-http-registry",
        "-y",
        ref,
        env=COSIGN_ENV,
    )


def attest_v3(key: Path, ref: str, kind: str, predicate: dict[str, Any], workdir: Path) -> None:
    """cosign v3: a Sigstore bundle as an OCI referrer (tag fallback without the API), no tlog."""
    peers.run_tool(
        "cosign",
        "attest",
        f"--key={key}",
        f"--type={kind}",
        f"--predicate={_predicate_file(workdir, predicate)}",
        "--tlog-upload=false",
        "--use-signing-config=false",
        "--allow-http-registry",
        "-y",
        ref,
        env=COSIGN_ENV,
    )


def attest_keyless(
    sigstore: localsigstore.LocalSigstore,
    signer: localsigstore.KeylessSigner,
    ref: str,
    kind: str,
    predicate: dict[str, Any],
    workdir: Path,
    *,
    rekor: int = 1,
) -> None:
    """cosign v3 keyless: a bundle with the Fulcio-shaped certificate of ``signer`` from the
    local Sigstore, its DSSE entry logged in the local Rekor (v1, or v2 with a timestamp)."""
    env = dict(COSIGN_ENV)
    imported = signer.key.with_name(f"{signer.key.stem}-cosign")
    if not imported.with_suffix(".key").exists():
        peers.run_tool(
            "cosign", "import-key-pair", f"--key={signer.key}",
            f"--output-key-prefix={imported}", "-y", env=env,
        )  # fmt: skip
    config = workdir / f"attest-signing-config-v{rekor}.json"
    config.write_text(localsigstore.signing_config(sigstore, rekor=rekor))
    root = workdir / "attest-trusted_root.json"
    root.write_text(sigstore.trusted_root_json())
    peers.run_tool(
        "cosign", "attest", f"--key={imported.with_suffix('.key')}",
        f"--certificate={signer.certificate}", f"--signing-config={config}",
        f"--trusted-root={root}", f"--type={kind}",
        f"--predicate={_predicate_file(workdir, predicate)}", "--allow-http-registry", "-y", ref,
        env=env,
    )  # fmt: skip


def attest_v2_logged(
    sigstore: localsigstore.LocalSigstore,
    ref: str,
    kind: str,
    predicate: dict[str, Any],
    workdir: Path,
    *,
    key: Path | None = None,
    signer: localsigstore.KeylessSigner | None = None,
) -> None:
    """cosign v2 with the local Rekor: a ``.att`` layer whose DSSE entry is logged (its SET in
    the layer's bundle annotation), signed by ``key`` or keyless by ``signer``'s certificate."""
    env = {**COSIGN_ENV, "SIGSTORE_REKOR_PUBLIC_KEY": str(_rekor_key(sigstore, workdir))}
    if signer is not None:
        imported = signer.key.with_name(f"{signer.key.stem}-cosign")
        if not imported.with_suffix(".key").exists():
            peers.run_tool(
                "cosign", "import-key-pair", f"--key={signer.key}",
                f"--output-key-prefix={imported}", "-y", env=COSIGN_ENV,
            )  # fmt: skip
        identity = [
            f"--key={imported.with_suffix('.key')}",
            f"--certificate={signer.certificate}",
            f"--certificate-chain={signer.chain}",
        ]
    elif key is not None:
        identity = [f"--key={key}"]
    else:
        raise ValueError("attest with a key or a keyless signer")
    peers.run_tool(
        "cosign2", "attest", *identity, f"--rekor-url={sigstore.service_url}",
        f"--type={kind}", f"--predicate={_predicate_file(workdir, predicate)}",
        "--allow-http-registry", "-y", ref, env=env,
    )  # fmt: skip


def _rekor_key(sigstore: localsigstore.LocalSigstore, workdir: Path) -> Path:
    """cosign v2 checks the SET Rekor answers with this key (instead of Sigstore's TUF)."""
    path = workdir / f"{sigstore.name}-rekor.pub"
    path.write_bytes(
        sigstore.rekor_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback registry
        data: bytes = response.read()
        return data


def make_fixtures(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(temporary)
        alice_key, alice_pub = generate_key(workdir, "alice")
        _, bob_pub = generate_key(workdir, "bob")
        shutil.copy(alice_pub, folder / "alice.pub")
        shutil.copy(bob_pub, folder / "bob.pub")
        with peers.referrers_registry(workdir) as registry:
            digest = peers.push_image(registry, "acme/app", workdir=workdir)
            ref = f"{registry.host}/acme/app@{digest}"
            attest_v2(alice_key, ref, "slsaprovenance1", slsa_v1(), workdir)
            attest_v2(alice_key, ref, "slsaprovenance02", slsa_v02(), workdir)
            attest_v2(alice_key, ref, "cyclonedx", cyclonedx(), workdir)
            attest_v3(alice_key, ref, "slsaprovenance1", slsa_v1(), workdir)
            attest_v3(alice_key, ref, "cyclonedx", cyclonedx(), workdir)
            peers.run_tool(
                "cosign",
                "sign",
                f"--key={alice_key}",
                "--tlog-upload=false",
                "--use-signing-config=false",
                "--allow-http-registry",
                "-y",
                ref,
                env=COSIGN_ENV,
            )
            base = f"http://{registry.host}/v2/acme/app"
            tag = digest.replace(":", "-") + ".att"
            manifest = _get(f"{base}/manifests/{tag}")
            (folder / "v2-att-manifest.json").write_bytes(manifest)
            for index, layer in enumerate(json.loads(manifest)["layers"]):
                blob = _get(f"{base}/blobs/{layer['digest']}")
                (folder / f"v2-att-layer{index + 1}.dsse.json").write_bytes(blob)
            referrers = json.loads(_get(f"{base}/referrers/{digest}"))
            for descriptor in referrers["manifests"]:
                kind = descriptor["annotations"]["dev.sigstore.bundle.predicateType"]
                name = {SLSA_V1: "slsa-v1", CYCLONEDX: "cyclonedx"}.get(kind, "signature")
                bundle_manifest = json.loads(_get(f"{base}/manifests/{descriptor['digest']}"))
                blob = _get(f"{base}/blobs/{bundle_manifest['layers'][0]['digest']}")
                (folder / f"v3-{name}.sigstore.json").write_bytes(blob)
        (folder / "image.json").write_text(json.dumps({"digest": digest}, indent=2) + "\n")
    _provenance(folder)


ORIGIN = (
    "made by sigstore/cosign (v2.6.5 attest for .att, v3.1.3 attest and sign for bundles) with "
    "a throwaway key: python -m tests.attesting tests/fixtures/attestations"
)
WHAT = {
    "image.json": ("The digest of the image every attestation here is about.", "the digest"),
    "alice.pub": ("The cosign public key (ECDSA P-256) that signed everything here.", "verifies"),
    "bob.pub": ("An unrelated cosign public key.", "verifies nothing here"),
    "v2-att-manifest.json": (
        "cosign v2 attest's sha256-<hex>.att manifest: three DSSE layers with predicateType "
        "annotations.",
        "three attestation layers",
    ),
    "v2-att-layer1.dsse.json": ("DSSE envelope, cosign v2 --type slsaprovenance1.", "verifies"),
    "v2-att-layer2.dsse.json": ("DSSE envelope, cosign v2 --type slsaprovenance02.", "verifies"),
    "v2-att-layer3.dsse.json": ("DSSE envelope, cosign v2 --type cyclonedx.", "verifies"),
    "v3-slsa-v1.sigstore.json": ("Bundle v0.3, cosign v3 attest slsaprovenance1.", "verifies"),
    "v3-cyclonedx.sigstore.json": ("Bundle v0.3, cosign v3 attest cyclonedx.", "verifies"),
    "v3-signature.sigstore.json": (
        "Bundle v0.3, cosign v3 sign (the image signature).",
        "verifies",
    ),
}


def _provenance(folder: Path) -> None:
    lines = []
    for name, (what, expected) in WHAT.items():
        data = (folder / name).read_bytes()
        row = {
            "file": f"attestations/{name}",
            "origin": ORIGIN,
            "license": "Apache-2.0",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "what": what,
            "expected": expected,
        }
        lines.append(json.dumps(row) + "\n")
    (folder / "provenance.jsonl").write_text("".join(lines))


if __name__ == "__main__":
    make_fixtures(Path(sys.argv[1]))
