"""The image gate with the real apiserver (namespaces, pull secrets) and the real registry."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from muster.adapters import controlplane, kubeapi, registries
from muster.core import findings, gates, imagepolicies, subjects
from muster.handlers import imagegate, operator, webhooks
from tests import kubeclients, peers
from tests.integration.images.conftest import COSIGN_ENV, Signer, policy

pytestmark = pytest.mark.integration


@pytest.fixture
async def area(
    control_plane: controlplane.ControlPlane, registry: peers.Registry
) -> AsyncIterator[imagegate.ImageArea]:
    settings = operator.OperatorSettings(
        webhook=webhooks.WebhookSettings(),
        registry=registries.RegistrySettings(insecure_registries=frozenset({registry.host})),
    )
    services = operator.Services(
        settings=settings,
        kube=kubeapi.KubeApi(kubeapi.Credentials.resolve(str(control_plane.kubeconfig))),
        registries=registries.RegistryClient(settings.registry),
    )
    found = imagegate.area_for(services)
    assert imagegate.area_for(services) is found  # one per process, shared with the controller
    yield found
    await found.verifier.close()
    await services.close()


def use_policies(area: imagegate.ImageArea, *compiled: imagepolicies.CompiledPolicy) -> None:
    """As the controller would have left them (no listing from the API in these tests)."""
    for each in compiled:
        area.store.put(each)
    area.store.listed_at = time.monotonic()
    area.store.refresh = 3600


def subject(namespace: str, obj: dict[str, Any], resource: str = "pods") -> subjects.Subject:
    group = "" if resource == "pods" else "apps"
    paths = subjects.DEFAULT_TEMPLATE_PATHS[(group, resource)]
    return subjects.Subject(
        uid="u",
        api_version="admission.k8s.io/v1",
        operation="CREATE",
        group=group,
        resource=resource,
        subresource="",
        kind=obj["kind"],
        namespace=namespace,
        name=obj["metadata"]["name"],
        object=obj,
        templates=subjects.templates_of(obj, paths),
        user={},
        mode=findings.Mode.ENFORCE,
        dry_run=False,
    )


def pod(image: str, **spec: Any) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "trainer", "image": image}], **spec},
    }


def sign(signer: Signer, ref: str, docker_config: Path | None = None) -> None:
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


async def test_deployment_is_pinned_and_its_pods_hit_the_cache(
    area: imagegate.ImageArea,
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    digest = peers.push_image(registry, "gate/app", "v1", workdir=tmp_path)
    sign(signers["alice"], f"{registry.host}/gate/app@{digest}")
    use_policies(area, policy(registry.host, signers["alice"]))
    namespace = kubeclients.namespace(control_plane, "gate")
    image = registry.ref("gate/app", "v1")
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"template": {"spec": {"containers": [{"name": "trainer", "image": image}]}}},
    }
    mutated = await imagegate.ImageGate(area).judge(
        subject(namespace, deployment, "deployments"), gates.Phase.MUTATE
    )
    assert mutated.patch == (
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/image",
            "value": f"{image}@{digest}",
        },
    )
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = f"{image}@{digest}"
    judged = await imagegate.ImageGate(area).judge(
        subject(namespace, deployment, "deployments"), gates.Phase.VALIDATE
    )
    assert judged.findings == ()
    before = area.verifier.requests
    for _ in range(3):  # the ReplicaSet and its pods: same digest, same policy generation
        child = await imagegate.ImageGate(area).judge(
            subject(namespace, pod(f"{image}@{digest}")), gates.Phase.VALIDATE
        )
        assert child.findings == ()
    assert area.verifier.requests == before


async def test_denial_names_container_image_policy_and_reason(
    area: imagegate.ImageArea,
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    digest = peers.push_image(registry, "gate/unsigned", "v1", workdir=tmp_path)
    use_policies(
        area,
        policy(registry.host, signers["alice"], name="team"),
        policy(registry.host, signers["bob"], name="audit", mode="warn"),
    )
    namespace = kubeclients.namespace(control_plane, "gate")
    image = f"{registry.host}/gate/unsigned@{digest}"
    result = await imagegate.ImageGate(area).judge(
        subject(namespace, pod(image, initContainers=[{"name": "setup", "image": image}])),
        gates.Phase.VALIDATE,
    )
    lines = sorted((f.mode.value, str(f)) for f in result.findings)
    assert lines == [
        (
            "enforce",
            f"container \"trainer\": image '{image}' is rejected by ImagePolicy 'team': "
            f"no signature found for {digest}",
        ),
        (
            "enforce",
            f"init container \"setup\": image '{image}' is rejected by ImagePolicy 'team': "
            f"no signature found for {digest}",
        ),
        (
            "warn",
            f"container \"trainer\": image '{image}' is rejected by ImagePolicy 'audit': "
            f"no signature found for {digest}",
        ),
        (
            "warn",
            f"init container \"setup\": image '{image}' is rejected by ImagePolicy 'audit': "
            f"no signature found for {digest}",
        ),
    ]
    assert {f.reason for f in result.findings} == {"ImageNotSigned"}


async def test_namespace_selector_and_broken_policies(
    area: imagegate.ImageArea,
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    digest = peers.push_image(registry, "gate/selected", "v1", workdir=tmp_path)
    image = f"{registry.host}/gate/selected@{digest}"
    selected = imagepolicies.compile_policy(
        "ml-only",
        1,
        imagepolicies.parse_spec(
            {
                "images": [f"{registry.host}/**"],
                "namespaceSelector": {"matchLabels": {"team": "ml"}},
                "authorities": [{"key": {"data": signers["alice"].pem}}],
            }
        ),
        {},
    )
    use_policies(area, selected)
    gate = imagegate.ImageGate(area)
    other = kubeclients.namespace(control_plane, "gate", {"team": "web"})
    ml = kubeclients.namespace(control_plane, "gate", {"team": "ml"})
    assert (await gate.judge(subject(other, pod(image)), gates.Phase.VALIDATE)).findings == ()
    denied = await gate.judge(subject(ml, pod(image)), gates.Phase.VALIDATE)
    assert [f.reason for f in denied.findings] == ["ImageNotSigned"]
    # A policy that does not compile fails closed for what it covers, and says why.
    area.store.fail(
        "broken",
        4,
        "ConfigMap s/r key 'trusted_root.json' was not found",
        {"images": [f"{registry.host}/gate/**"], "authorities": [{"key": {"data": "x"}}]},
    )
    broken = await gate.judge(subject(other, pod(image)), gates.Phase.VALIDATE)
    assert [f.reason for f in broken.findings] == ["ImagePolicyInvalid"]
    assert "ImagePolicy 'broken' does not compile (ConfigMap s/r" in str(broken.findings[0])


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.Registry]:
    with peers.registry(
        tmp_path_factory.mktemp("private-images"), users={"ci": "s3cret"}
    ) as running:
        yield running


async def test_pull_secrets_of_the_service_account_are_used(
    control_plane: controlplane.ControlPlane,
    private_registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    host = private_registry.host
    digest = peers.push_image(
        private_registry, "private/app", workdir=tmp_path, credentials=("ci", "s3cret")
    )
    auth = base64.b64encode(b"ci:s3cret").decode()
    config_dir = tmp_path / "cosign-docker-config"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    sign(signers["alice"], f"{host}/private/app@{digest}", docker_config=config_dir)
    namespace = kubeclients.namespace(control_plane, "gate")
    secret_data = json.dumps({"auths": {f"http://{host}": {"auth": auth}}}).encode()
    with kubeclients.admin(control_plane) as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "pull"},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": base64.b64encode(secret_data).decode()},
            },
        )
        core.create_namespaced_service_account(
            namespace, {"metadata": {"name": "trainer"}, "imagePullSecrets": [{"name": "pull"}]}
        )
    settings = operator.OperatorSettings(
        webhook=webhooks.WebhookSettings(),
        registry=registries.RegistrySettings(insecure_registries=frozenset({host})),
    )
    services = operator.Services(
        settings=settings,
        kube=kubeapi.KubeApi(kubeapi.Credentials.resolve(str(control_plane.kubeconfig))),
        registries=registries.RegistryClient(settings.registry),
    )
    area = imagegate.area_for(services)
    try:
        use_policies(area, policy(host, signers["alice"]))
        gate = imagegate.ImageGate(area)
        image = f"{host}/private/app@{digest}"
        anonymous = await gate.judge(subject(namespace, pod(image)), gates.Phase.VALIDATE)
        assert [f.reason for f in anonymous.findings] == ["SignatureLookupFailed"]
        assert "requires credentials" in anonymous.findings[0].message
        assert "s3cret" not in anonymous.findings[0].message
        area.verifier.forget()
        with_account = await gate.judge(
            subject(namespace, pod(image, serviceAccountName="trainer")), gates.Phase.VALIDATE
        )
        assert with_account.findings == ()
        area.verifier.forget()
        with_pod_secret = await gate.judge(
            subject(namespace, pod(image, imagePullSecrets=[{"name": "pull"}])),
            gates.Phase.VALIDATE,
        )
        assert with_pod_secret.findings == ()
    finally:
        await area.verifier.close()
        await services.close()
