"""Every real peer the gates are tested against starts, answers and stops cleanly.

Later issues build on these fixtures; each test here proves one peer really does its job
(an image really lands in the registry, cosign really signs in both formats, Prometheus
really scrapes), so a broken install shows up here first and with a clear name.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from pathlib import Path

import pytest

from muster.platform import processes
from tests import peers

pytestmark = pytest.mark.integration


def _get(url: str, accept: str = "application/json") -> tuple[bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=5) as response:  # loopback peer
        return response.read(), dict(response.headers)


OCI_ACCEPT = (
    "application/vnd.oci.image.manifest.v1+json,"
    "application/vnd.docker.distribution.manifest.v2+json,"
    "application/vnd.oci.image.index.v1+json"
)


@pytest.mark.parametrize("which", ["registry", "referrers_registry"])
def test_pushed_image_is_served_by_its_digest(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    registry: peers.Registry = request.getfixturevalue(which)
    digest = peers.push_image(
        registry, "peers/app", "v1", workdir=tmp_path, env={"CUDA_VERSION": "12.8.1"}
    )
    body, _ = _get(f"http://{registry.host}/v2/peers/app/manifests/{digest}", OCI_ACCEPT)
    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
    config_digest = json.loads(body)["config"]["digest"]
    config, _ = _get(f"http://{registry.host}/v2/peers/app/blobs/{config_digest}")
    assert "CUDA_VERSION=12.8.1" in json.loads(config)["config"]["Env"]


def _keypair(tmp_path: Path) -> tuple[Path, Path]:
    peers.run_tool(
        "cosign",
        "generate-key-pair",
        f"--output-key-prefix={tmp_path / 'signer'}",
        env={"COSIGN_PASSWORD": ""},
    )
    return tmp_path / "signer.key", tmp_path / "signer.pub"


COSIGN_OFFLINE = ["--tlog-upload=false", "--allow-http-registry", "-y"]


def test_cosign_v3_bundle_uses_the_tag_fallback_without_referrers_api(
    registry: peers.Registry, tmp_path: Path
) -> None:
    digest = peers.push_image(registry, "peers/v3-fallback", workdir=tmp_path)
    key, pub = _keypair(tmp_path)
    image = f"{registry.host}/peers/v3-fallback@{digest}"
    peers.run_tool(
        "cosign",
        "sign",
        f"--key={key}",
        "--use-signing-config=false",
        *COSIGN_OFFLINE,
        image,
        env={"COSIGN_PASSWORD": ""},
    )
    tags = peers.run_tool("crane", "ls", "--insecure", f"{registry.host}/peers/v3-fallback")
    assert f"sha256-{digest.removeprefix('sha256:')}" in tags.stdout.split()
    index, _ = _get(
        f"http://{registry.host}/v2/peers/v3-fallback/manifests/"
        f"sha256-{digest.removeprefix('sha256:')}",
        OCI_ACCEPT,
    )
    artifact_types = {m.get("artifactType") for m in json.loads(index)["manifests"]}
    assert "application/vnd.dev.sigstore.bundle.v0.3+json" in artifact_types
    verified = peers.run_tool(
        "cosign",
        "verify",
        f"--key={pub}",
        "--insecure-ignore-tlog=true",
        "--allow-http-registry",
        image,
    )
    assert digest in verified.stdout


def test_cosign_v3_bundle_is_a_referrer_where_the_api_exists(
    referrers_registry: peers.Registry, tmp_path: Path
) -> None:
    digest = peers.push_image(referrers_registry, "peers/v3-referrers", workdir=tmp_path)
    key, _ = _keypair(tmp_path)
    peers.run_tool(
        "cosign",
        "sign",
        f"--key={key}",
        "--use-signing-config=false",
        *COSIGN_OFFLINE,
        f"{referrers_registry.host}/peers/v3-referrers@{digest}",
        env={"COSIGN_PASSWORD": ""},
    )
    body, _ = _get(f"http://{referrers_registry.host}/v2/peers/v3-referrers/referrers/{digest}")
    referrers = json.loads(body)["manifests"]
    assert len(referrers) == 1
    # This registry reports the config media type as the descriptor's artifactType (the
    # spec's fallback when a manifest has none); clients must read the manifest to be sure.
    manifest, _ = _get(
        f"http://{referrers_registry.host}/v2/peers/v3-referrers/manifests/"
        f"{referrers[0]['digest']}",
        OCI_ACCEPT,
    )
    parsed = json.loads(manifest)
    assert parsed["artifactType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert parsed["subject"]["digest"] == digest


def test_cosign_v2_writes_a_legacy_simple_signing_signature(
    registry: peers.Registry, tmp_path: Path
) -> None:
    digest = peers.push_image(registry, "peers/legacy", workdir=tmp_path)
    key, pub = _keypair(tmp_path)
    image = f"{registry.host}/peers/legacy@{digest}"
    peers.run_tool(
        "cosign2", "sign", f"--key={key}", *COSIGN_OFFLINE, image, env={"COSIGN_PASSWORD": ""}
    )
    sig_tag = f"sha256-{digest.removeprefix('sha256:')}.sig"
    manifest, _ = _get(f"http://{registry.host}/v2/peers/legacy/manifests/{sig_tag}", OCI_ACCEPT)
    layer = json.loads(manifest)["layers"][0]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert "dev.cosignproject.cosign/signature" in layer["annotations"]
    payload, _ = _get(f"http://{registry.host}/v2/peers/legacy/blobs/{layer['digest']}")
    assert json.loads(payload)["critical"]["image"]["docker-manifest-digest"] == digest
    verified = peers.run_tool(
        "cosign2",
        "verify",
        f"--key={pub}",
        "--insecure-ignore-tlog=true",
        "--allow-http-registry",
        image,
    )
    assert digest in verified.stdout


def test_helm_renders_and_lints_a_chart(tmp_path: Path) -> None:
    peers.run_tool("helm", "create", str(tmp_path / "probe"))
    peers.run_tool("helm", "lint", str(tmp_path / "probe"))
    rendered = peers.run_tool("helm", "template", "probe", str(tmp_path / "probe"))
    assert "kind: Deployment" in rendered.stdout


def test_trivy_is_the_real_binary() -> None:
    version = peers.run_tool("trivy", "--version")
    assert version.stdout.startswith("Version: 0.")


def test_prometheus_scrapes_and_answers_queries(tmp_path: Path) -> None:
    # Prometheus scrapes its own /metrics: the same path Muster's metrics take later.
    port = processes.free_port()
    target = f"127.0.0.1:{port}"
    with peers.prometheus(tmp_path, scrape_targets=[]) as running:
        own = running.url.removeprefix("http://")
        config = json.loads(running.config.read_text())
        config["scrape_configs"][0]["static_configs"] = [{"targets": [own, target]}]
        running.config.write_text(json.dumps(config))
        peers.run_tool("promtool", "check", "config", str(running.config))
        urllib.request.urlopen(
            urllib.request.Request(f"{running.url}/-/reload", method="POST"), timeout=5
        )
        deadline = time.monotonic() + 30
        values: dict[str, str] = {}
        while time.monotonic() < deadline and len(values) < 2:
            body, _ = _get(f"{running.url}/api/v1/query?query=up")
            values = {
                r["metric"]["instance"]: r["value"][1] for r in json.loads(body)["data"]["result"]
            }
            time.sleep(0.5)
        assert values == {own: "1", target: "0"}  # itself up, nothing listening on the other
