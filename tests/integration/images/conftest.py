"""Real signatures for the image tests: keys and signing by the real cosign v2 and v3 binaries."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from muster.images.rules import policies as imagepolicies
from muster.platform import registries
from tests import peers

COSIGN_ENV = {"COSIGN_PASSWORD": ""}


@dataclasses.dataclass(frozen=True)
class Signer:
    name: str
    private: Path
    public: Path

    @property
    def pem(self) -> str:
        return self.public.read_text()


def _signer(workdir: Path, name: str) -> Signer:
    prefix = workdir / name
    peers.run_tool("cosign", "generate-key-pair", f"--output-key-prefix={prefix}", env=COSIGN_ENV)
    return Signer(name=name, private=Path(f"{prefix}.key"), public=Path(f"{prefix}.pub"))


@pytest.fixture(scope="session")
def signers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Signer]:
    workdir = tmp_path_factory.mktemp("signers")
    return {name: _signer(workdir, name) for name in ("alice", "bob", "carol")}


def sign_v3(signer: Signer, ref: str) -> None:
    """cosign v3: a Sigstore bundle as an OCI referrer (tag fallback without the API), no tlog."""
    peers.run_tool(
        "cosign",
        "sign",
        f"--key={signer.private}",
        "--tlog-upload=false",
        "--use-signing-config=false",
        "--allow-http-registry",
        "-y",
        ref,
        env=COSIGN_ENV,
    )


def sign_v2(signer: Signer, ref: str, docker_config: Path | None = None) -> None:
    """cosign v2: a legacy ``sha256-<hex>.sig`` simple-signing manifest, no tlog; with
    ``docker_config``, cosign reads the registry's credentials from that folder."""
    env = dict(COSIGN_ENV)
    if docker_config is not None:
        env["DOCKER_CONFIG"] = str(docker_config)
    peers.run_tool(
        "cosign2",
        "sign",
        f"--key={signer.private}",
        "--tlog-upload=false",
        "--allow-http-registry",
        "-y",
        ref,
        env=env,
    )


def policy(
    host: str,
    *signers_: Signer,
    name: str = "p",
    threshold: int | None = None,
    mode: str = "enforce",
    images: str = "**",
) -> imagepolicies.CompiledPolicy:
    spec: dict[str, object] = {
        "images": [f"{host}/{images}"],
        "mode": mode,
        "authorities": [{"name": s.name, "key": {"data": s.pem}} for s in signers_],
    }
    if threshold is not None:
        spec["threshold"] = threshold
    return imagepolicies.compile_policy(name, 1, imagepolicies.parse_spec(spec), {})


def client_for(*hosts: str) -> registries.RegistryClient:
    return registries.RegistryClient(
        registries.RegistrySettings(insecure_registries=frozenset(hosts))
    )
