"""Registry access the image gate needs in real clusters: a private CA, operator-level credentials.

The TLS registry is Debian's docker-registry serving a certificate issued by a CA made here; the
private registry demands basic auth. Both are real peers; nothing is mocked.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from prometheus_client import parser as prometheus_parser

from muster.admission import server as webhooks
from muster.app import runtime
from muster.images import gate as imagegate
from muster.images import verifier as imageverifier
from muster.kernel import gates, pki, references
from muster.platform import controlplane, kubeapi, localregistry, registries
from tests import kubeclients, peers
from tests.imagegates import pod, subject, use_policies
from tests.integration.images.conftest import COSIGN_ENV, Signer, policy
from tests.integration.images.test_cli import run_cli, write_policy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[peers.Registry, Path]]:
    """docker-registry over TLS with a certificate from a private CA; yields it and the CA file."""
    workdir = tmp_path_factory.mktemp("tls-registry")
    ca = pki.new_ca("muster test registry CA")
    serving = pki.issue(ca, "127.0.0.1", hosts=["127.0.0.1"], server=True)
    ca_file, cert, key = workdir / "ca.crt", workdir / "tls.crt", workdir / "tls.key"
    ca_file.write_bytes(ca.cert_pem)
    cert.write_bytes(serving.cert_pem)
    key.write_bytes(serving.key_pem)
    running = localregistry.start(workdir, tls=(cert, key, ca_file))
    try:
        yield peers.Registry(host=running.host, referrers_api=False), ca_file
    finally:
        running.stop()


async def test_tls_registry_verifies_with_its_ca_and_fails_without(
    tls_registry: tuple[peers.Registry, Path], signers: dict[str, Signer], tmp_path: Path
) -> None:
    registry, ca_file = tls_registry
    # crane and cosign skip TLS verification with these flags; Muster must not need to.
    digest = peers.push_image(registry, "tls/app", "v1", workdir=tmp_path)
    peers.run_tool(
        "cosign2",
        "sign",
        f"--key={signers['alice'].private}",
        "--tlog-upload=false",
        "--allow-insecure-registry",
        "-y",
        f"{registry.host}/tls/app@{digest}",
        env=COSIGN_ENV,
    )
    image = references.parse(registry.ref("tls/app", "v1"))
    compiled = policy(registry.host, signers["alice"])

    async def verify(ca: Path | None) -> imageverifier.ImageResult:
        # The registry is on loopback: named on the allow list, as an operator would.
        settings = registries.RegistrySettings(ca_file=ca, allow_hosts=(registry.host,))
        async with registries.RegistryClient(settings) as client:
            verifier = imageverifier.Verifier(client)
            try:
                return await verifier.verify(image, [compiled])
            finally:
                await verifier.close()

    trusted = await verify(ca_file)
    assert trusted.passed, trusted.decisions
    assert trusted.digest == digest
    untrusted = await verify(None)
    assert not untrusted.passed
    [(_, decision)] = untrusted.decisions
    assert decision.reason == "ImageNotResolved"
    assert "certificate verify failed" in decision.message
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    spec = {
        "images": [f"{registry.host}/**"],
        "authorities": [{"name": "alice", "key": {"data": signers["alice"].pem}}],
    }
    policy_file = write_policy(tmp_path / "p.yaml", "tls", spec)
    code, _, err = run_cli(
        "image", "verify", str(image), f"--policy={policy_file}", f"--registry-ca-file={garbage}"
    )
    assert code == 2
    assert f"--registry-ca-file {garbage}: not a readable PEM CA bundle" in err


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.Registry]:
    with peers.registry(tmp_path_factory.mktemp("private"), users={"ci": "s3cret"}) as running:
        yield running


def _docker_config(host: str, username: str, password: str) -> bytes:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {f"http://{host}": {"auth": auth}}}).encode()


def _cache_counts(services: runtime.Services) -> dict[str, float]:
    text = services.metrics.exposition().decode()
    return {
        sample.labels["result"]: sample.value
        for family in prometheus_parser.text_string_to_metric_families(text)
        if family.name == "muster_verification_cache_requests"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["cache"] == "signatures"
    }


async def test_operator_credentials_back_pods_without_their_own(
    control_plane: controlplane.ControlPlane,
    private_registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    host = private_registry.host
    digest = peers.push_image(
        private_registry, "operator-creds/app", workdir=tmp_path, credentials=("ci", "s3cret")
    )
    cosign_config = tmp_path / "cosign-docker-config"
    cosign_config.mkdir()
    (cosign_config / "config.json").write_bytes(_docker_config(host, "ci", "s3cret"))
    peers.run_tool(
        "cosign2",
        "sign",
        f"--key={signers['alice'].private}",
        "--tlog-upload=false",
        "--allow-http-registry",
        "-y",
        f"{host}/operator-creds/app@{digest}",
        env={**COSIGN_ENV, "DOCKER_CONFIG": str(cosign_config)},
    )
    # As the chart mounts it: the operator's own dockerconfigjson Secret, as a file.
    operator_file = tmp_path / "operator-credentials.json"
    operator_file.write_bytes(_docker_config(host, "ci", "s3cret"))
    namespace = kubeclients.namespace(control_plane, "opcreds")
    wrong = _docker_config(host, "ci", "not-the-password")
    with kubeclients.admin(control_plane) as api:
        client.CoreV1Api(api).create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "wrong"},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": base64.b64encode(wrong).decode()},
            },
        )
    settings = runtime.OperatorSettings(
        webhook=webhooks.WebhookSettings(),
        registry=registries.RegistrySettings(
            insecure_registries=frozenset({host}), credentials_file=operator_file
        ),
    )
    services = runtime.Services(
        settings=settings,
        kube=kubeapi.KubeApi(kubeapi.Credentials.resolve(str(control_plane.kubeconfig))),
        registries=registries.RegistryClient(settings.registry),
    )
    area = imagegate.area_for(services)
    try:
        use_policies(area, policy(host, signers["alice"]))
        gate = imagegate.ImageGate(area)
        image = f"{host}/operator-creds/app@{digest}"
        plain = await gate.judge(subject(namespace, pod(image)), gates.Phase.VALIDATE)
        assert plain.findings == ()
        assert _cache_counts(services) == {"hit": 0.0, "miss": 1.0}
        again = await gate.judge(subject(namespace, pod(image)), gates.Phase.VALIDATE)
        assert again.findings == ()
        assert _cache_counts(services) == {"hit": 1.0, "miss": 1.0}
        # A pod's own pull secret for the registry wins over the operator's, even when wrong.
        area.verifier.forget()
        own = await gate.judge(
            subject(namespace, pod(image, imagePullSecrets=[{"name": "wrong"}])),
            gates.Phase.VALIDATE,
        )
        assert [f.reason for f in own.findings] == ["SignatureLookupFailed"]
        assert "refused access" in own.findings[0].message
        assert "not-the-password" not in own.findings[0].message
    finally:
        await area.verifier.close()
        await services.close()
