"""The chart's gate values, rendered and then proven against the real apiserver.

- the default GPUStackPolicy is generated from the code (never a hand-kept copy) and accepted
  by the real CRD;
- operator-level registry credentials are mounted from an existing Secret;
- eviction of pods using a revoked Model is opt-in, and with it the chart's ServiceAccount can
  really evict (the Eviction API works without a kubelet);
- a Model's publicKeySecretRef is read with the chart's ServiceAccount token;
- the node agent has its own ServiceAccount, and a ValidatingAdmissionPolicy confines its Node
  writes to its own Node and its attestation annotation.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from muster import cli
from muster.datasets import controllers as datasetcontrollers
from muster.gpu import nodeagent as nodeagent_
from muster.gpu.rules import policies as gpupolicies
from muster.gpu.rules import stack as gpustack
from muster.images.rules import policies as imagepolicies
from muster.kernel import scopes, selectors
from muster.models import controllers
from muster.models import gate as modeladmission
from muster.models.rules import registry as modelregistry
from muster.platform import controlplane, events, kubeapi, metrics, registries
from muster.platform import namespaces as platformnamespaces
from muster.platform.services import Services
from muster.signatures import oms as modelsigs
from tests import datasetfiles, gpuroots, kubeclients
from tests.integration.chart import rendering
from tests.integration.chart.rendering import CHART, ROOT
from tests.paths import fixture

pytestmark = pytest.mark.integration

SCOPE_LABEL = "muster.dev/chart-test"


# -- rendering -------------------------------------------------------------------------------


def test_default_gpu_stack_policy_is_generated_from_the_code() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "generate-default-policies.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, f"run python hack/generate-default-policies.py:\n{check.stderr}"
    assert not rendering.by_kind(rendering.documents(rendering.template()), "GPUStackPolicy")
    rendered = rendering.template("--set=defaultPolicies.gpuStack.enabled=true")
    policy = rendering.one(rendering.documents(rendered), "GPUStackPolicy")
    assert policy["metadata"]["name"] == "muster-default"
    assert policy["spec"] == gpupolicies.DEFAULT_POLICY
    gpupolicies.parse_spec(policy["spec"])
    # Every entry cites its source: list entries in a field, plain values in a comment.
    entries = [
        *policy["spec"]["deniedDrivers"]["ranges"],
        *policy["spec"]["endOfLifeBranches"],
        *policy["spec"]["deniedToolkitVersions"],
    ]
    assert entries
    for entry in entries:
        source = entry["source"]
        assert "Security Bulletin" in source or "lifecycle" in source, entry
        assert "https://" in source, entry
    lines = rendered.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("  minimumToolkitVersion:"))
    comment = " ".join(line.strip() for line in lines[index - 2 : index])
    assert "# source: NVIDIA Security Bulletin: NVIDIA Container Toolkit" in comment
    assert "CVE-2025-23266" in comment


def test_the_default_gpu_stack_policy_can_warn_first_and_say_what_unknown_nodes_get() -> None:
    rendered = rendering.template(
        "--set=defaultPolicies.gpuStack.enabled=true",
        "--set=defaultPolicies.gpuStack.mode=warn",
        "--set=defaultPolicies.gpuStack.unknownNodes=allow",
    )
    policy = rendering.one(rendering.documents(rendered), "GPUStackPolicy")
    assert policy["spec"] == {**gpupolicies.DEFAULT_POLICY, "mode": "warn", "unknownNodes": "allow"}
    spec = gpupolicies.parse_spec(policy["spec"])
    assert (spec.mode, spec.unknown_nodes) == ("warn", "allow")
    assert "# source: NVIDIA Security Bulletin" in rendered  # the sources are kept
    refused = rendering.helm(
        "template",
        "muster",
        str(rendering.CHART),
        "--set=defaultPolicies.gpuStack.enabled=true",
        "--set=defaultPolicies.gpuStack.mode=off",
        check=False,
    )
    assert refused.returncode != 0
    assert "/defaultPolicies/gpuStack/mode': value must be one of 'enforce', 'warn'" in (
        refused.stderr
    )


def test_registry_credentials_come_from_an_existing_secret() -> None:
    deployment = rendering.one(rendering.documents(rendering.template()), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert not any(a.startswith("--registry-credentials") for a in pod["containers"][0]["args"])
    deployment = rendering.one(
        rendering.documents(rendering.template("--set=operator.registryCredentialsSecret=regcred")),
        "Deployment",
    )
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    path = "/etc/muster/registry-credentials/.dockerconfigjson"
    assert f"--registry-credentials={path}" in container["args"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "registry-credentials")
    assert mount == {
        "name": "registry-credentials",
        "mountPath": "/etc/muster/registry-credentials",
        "readOnly": True,
    }
    volume = next(v for v in pod["volumes"] if v["name"] == "registry-credentials")
    assert volume["secret"]["secretName"] == "regcred"
    assert volume["secret"]["items"] == [{"key": ".dockerconfigjson", "path": ".dockerconfigjson"}]
    assert not any(a.startswith("--registry-ca-file") for a in container["args"])


def test_registry_ca_comes_from_an_existing_config_map() -> None:
    deployment = rendering.one(
        rendering.documents(rendering.template("--set=operator.registryCAConfigMap=private-ca")),
        "Deployment",
    )
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "--registry-ca-file=/etc/muster/registry-ca/ca.crt" in container["args"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "registry-ca")
    assert mount == {
        "name": "registry-ca",
        "mountPath": "/etc/muster/registry-ca",
        "readOnly": True,
    }
    volume = next(v for v in pod["volumes"] if v["name"] == "registry-ca")
    assert volume["configMap"] == {
        "name": "private-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }


def _grants_eviction(docs: list[dict[str, Any]]) -> bool:
    return any(
        "pods/eviction" in rule["resources"]
        for role in rendering.by_kind(docs, "ClusterRole")
        for rule in role["rules"]
    )


def test_eviction_of_revoked_model_pods_is_opt_in() -> None:
    docs = rendering.documents(rendering.template())
    assert not _grants_eviction(docs)
    args = rendering.one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--evict-revoked-model-pods" not in args
    docs = rendering.documents(rendering.template("--set=operator.evictRevokedModelPods=true"))
    assert _grants_eviction(docs)
    args = rendering.one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--evict-revoked-model-pods" in args


def _operator_pod(*args: str) -> dict[str, Any]:
    deployment = rendering.one(rendering.documents(rendering.template(*args)), "Deployment")
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def _parsed(container: dict[str, Any]) -> argparse.Namespace:
    """The container's arguments as the real `muster run` command line reads them."""
    return cli.build_parser().parse_args(container["args"])


def test_egress_exemptions_and_boms_reach_muster_run() -> None:
    (default,) = _operator_pod()["containers"]
    parsed = _parsed(default)
    assert parsed.registry_allow == [] and parsed.registry_deny == []
    assert not parsed.allow_private_registries and not parsed.refuse_private_networks
    assert parsed.exemption_group == []
    assert parsed.keep_boms is True  # BOMs are kept by default, in the chart as in muster run
    assert parsed.trivy_cache_dir is None  # no scanning unless asked
    (container,) = _operator_pod(
        "--set=operator.egress.registryAllow={ghcr.io,*.corp.example:5000}",
        "--set=operator.egress.registryDeny={169.254.169.254}",
        "--set=operator.egress.allowPrivateRegistries=true",
        "--set=operator.egress.refusePrivateNetworks=true",
        "--set=operator.exemptionGroups={sre,platform-oncall}",
        "--set=operator.keepBoms=false",
    )["containers"]
    parsed = _parsed(container)
    assert parsed.registry_allow == ["ghcr.io", "*.corp.example:5000"]
    assert parsed.registry_deny == ["169.254.169.254"]
    assert parsed.allow_private_registries and parsed.refuse_private_networks
    assert parsed.exemption_group == ["sre", "platform-oncall"]
    assert parsed.keep_boms is False


def test_images_no_policy_covers_are_denied_unless_the_values_say_otherwise() -> None:
    (default,) = _operator_pod()["containers"]
    assert _parsed(default).uncovered_images is imagepolicies.Uncovered.DENY
    (warned,) = _operator_pod("--set=images.uncovered=warn")["containers"]
    assert _parsed(warned).uncovered_images is imagepolicies.Uncovered.WARN
    refused = rendering.refusal("--set=images.uncovered=permit")
    assert "'/images/uncovered': value must be one of 'deny', 'warn', 'allow'" in refused


def test_scanning_mounts_a_trivy_cache_and_passes_its_settings() -> None:
    pod = _operator_pod(
        "--set=operator.scanning.enabled=true",
        "--set=operator.scanning.concurrency=4",
        "--set=operator.scanning.timeoutSeconds=120",
        "--set=operator.scanning.dbRepository=mirror.example/aquasecurity/trivy-db",
    )
    (container,) = pod["containers"]
    parsed = _parsed(container)
    assert str(parsed.trivy_cache_dir) == "/var/cache/trivy"
    assert (parsed.scan_concurrency, parsed.scan_timeout) == (4, 120.0)
    assert parsed.trivy_db_repository == "mirror.example/aquasecurity/trivy-db"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "trivy-cache")
    assert mount == {"name": "trivy-cache", "mountPath": "/var/cache/trivy"}
    volume = next(v for v in pod["volumes"] if v["name"] == "trivy-cache")
    assert volume == {"name": "trivy-cache", "emptyDir": {"sizeLimit": "2Gi"}}
    # A volume of one's own, e.g. a PVC a DB mirror job keeps current.
    pod = _operator_pod(
        "--set=operator.scanning.enabled=true",
        "--set=operator.scanning.cacheVolume.emptyDir=null",  # helm merges maps: drop the default
        "--set=operator.scanning.cacheVolume.persistentVolumeClaim.claimName=trivy-db",
    )
    volume = next(v for v in pod["volumes"] if v["name"] == "trivy-cache")
    assert volume == {"name": "trivy-cache", "persistentVolumeClaim": {"claimName": "trivy-db"}}
    assert "--trivy-db-repository" not in " ".join(pod["containers"][0]["args"])


# -- against the real apiserver ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    plane: controlplane.ControlPlane


@pytest.fixture(scope="module")
def release(
    control_plane: controlplane.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    name = f"muster-{uuid.uuid4().hex[:6]}"
    namespace = kubeclients.namespace(control_plane, "muster-gates")
    values = tmp_path_factory.mktemp("chart") / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "webhook": {
                    "timeoutSeconds": 2,
                    "namespaceSelectorExpressions": [
                        {"key": SCOPE_LABEL, "operator": "In", "values": [name]},
                    ],
                },
                "operator": {"evictRevokedModelPods": True},
                "nodeAgent": {"enabled": True},
            }
        )
    )
    helm = ("--namespace", namespace, f"--kubeconfig={control_plane.kubeconfig}")
    rendering.helm("install", name, str(CHART), f"--values={values}", *helm)
    try:
        yield Release(name, namespace, control_plane)
    finally:
        rendering.helm("uninstall", name, "--no-hooks", "--ignore-not-found", *helm)


def _token(plane: controlplane.ControlPlane, namespace: str, account: str, **spec: Any) -> str:
    with kubeclients.admin(plane) as api:
        token: str = (
            client.CoreV1Api(api)
            .create_namespaced_service_account_token(
                account, namespace, {"spec": {"expirationSeconds": 3600, **spec}}
            )
            .status.token
        )
    return token


@pytest.fixture
async def operator_kube(release: Release) -> AsyncIterator[kubeapi.KubeApi]:
    """The asyncio client the operator uses, with a token of the chart's ServiceAccount."""
    token = _token(release.plane, release.namespace, release.name)
    kube = kubeapi.KubeApi(
        kubeapi.Credentials(
            host=release.plane.url, ca_file=release.plane.state.ca_file, token=token
        )
    )
    yield kube
    await kube.close()


def test_the_default_gpu_stack_policy_is_accepted_by_the_real_crd(release: Release) -> None:
    rendered = rendering.template(
        "--set=defaultPolicies.gpuStack.enabled=true",
        "--show-only=templates/policies/default-gpustackpolicy.yaml",
    )
    result = controlplane.kubectl(
        release.plane, "apply", "--dry-run=server", "-f", "-", input_=rendered
    )
    assert "gpustackpolicy.muster.dev/muster-default created (server dry run)" in result.stdout


def _controller(kube: kubeapi.KubeApi) -> controllers.ModelController:
    return controllers.ModelController(
        kube=kube,
        catalog=modeladmission.ModelCatalog(kube),
        namespaces=platformnamespaces.NamespaceIndex(kube),
        recorder=events.EventRecorder(kube),
        metrics=metrics.Metrics(),
        evict=True,
    )


async def test_revoked_model_pods_are_evicted_with_the_chart_rbac(
    release: Release, operator_kube: kubeapi.KubeApi
) -> None:
    namespace = kubeclients.namespace(release.plane, "evict")
    revoked = f"revoked-{uuid.uuid4().hex[:6]}"
    digest = "sha256:" + "ab" * 32
    with kubeclients.admin(release.plane) as api:
        core = client.CoreV1Api(api)
        for name, model in (("user", revoked), ("bystander", "another-model")):
            uses = json.dumps([{"name": model, "digest": digest}])
            core.create_namespaced_pod(
                namespace,
                {
                    "metadata": {
                        "name": name,
                        "labels": {modelregistry.USES_MODELS_LABEL: "true"},
                        "annotations": {modelregistry.MODELS_ANNOTATION: uses},
                    },
                    # Scheduled, as a running pod would be (there is no kubelet to run it).
                    "spec": {
                        "nodeName": "gpu-node-1",
                        "containers": [{"name": "trainer", "image": "busybox:1"}],
                    },
                },
            )
    affected = await _controller(operator_kube).sweep(
        revoked, {"name": revoked, "uid": ""}, digest, revoked=True
    )
    assert affected == [f"{namespace}/user"]
    with kubeclients.admin(release.plane) as api:
        core = client.CoreV1Api(api)
        try:
            evicted = core.read_namespaced_pod("user", namespace)
            assert evicted.metadata.deletion_timestamp is not None  # graceful, no kubelet
        except client.ApiException as error:
            assert error.status == 404  # or already gone
        assert core.read_namespaced_pod("bystander", namespace).metadata.deletion_timestamp is None


async def test_model_public_key_secret_ref_is_read_with_the_chart_rbac(
    release: Release, operator_kube: kubeapi.KubeApi
) -> None:
    folder = fixture("models", "model-transparency", "v1.0.0-elliptic-key")
    public = fixture("models", "model-transparency", "keys", "certificate", "signing-key-pub.pem")
    bundle = json.loads((folder / "model.sig").read_text())
    signed = modelsigs.verify_with_key(bundle, public.read_bytes())
    keys = kubeclients.namespace(release.plane, "model-keys")
    with kubeclients.admin(release.plane) as api:
        client.CoreV1Api(api).create_namespaced_secret(
            keys,
            {
                "metadata": {"name": "signer"},
                "data": {"key.pub": base64.b64encode(public.read_bytes()).decode()},
            },
        )

    def spec(secret: str) -> modelregistry.ModelSpec:
        return modelregistry.ModelSpec.model_validate(
            {
                "digest": signed.manifest.digest,
                "signature": {
                    "bundle": json.dumps(bundle),
                    "publicKeySecretRef": {"name": secret, "namespace": keys},
                },
            }
        )

    controller = _controller(operator_kube)
    status, reason, message = await controller._signature(spec("signer"))
    assert (status, reason) == ("True", "Verified"), message
    status, reason, message = await controller._signature(spec("missing"))
    assert (status, reason) == ("False", "SignatureInvalid")
    assert "404" in message


async def test_dataset_status_and_its_secret_key_are_written_and_read_with_the_chart_rbac(
    release: Release, operator_kube: kubeapi.KubeApi, tmp_path: Path
) -> None:
    corpus = datasetfiles.make_dataset(tmp_path / "corpus")
    private, public = datasetfiles.key_pair(tmp_path, "data-team")
    digest = datasetfiles.sign(corpus, tmp_path / "model.sig", private)
    keys = kubeclients.namespace(release.plane, "dataset-keys")
    name = f"chart-data-{uuid.uuid4().hex[:6]}"
    with kubeclients.admin(release.plane) as api:
        client.CoreV1Api(api).create_namespaced_secret(
            keys,
            {
                "metadata": {"name": "signer"},
                "data": {"key.pub": base64.b64encode(public.read_bytes()).decode()},
            },
        )
        kubeclients.create_cluster_object(
            client.CustomObjectsApi(api),
            "datasets",
            "Dataset",
            name,
            {
                "digest": digest,
                "signature": {
                    "bundle": (tmp_path / "model.sig").read_text(),
                    "publicKeySecretRef": {"name": "signer", "namespace": keys},
                },
            },
        )
    services = Services(
        settings=_DatasetSettings(), kube=operator_kube, registries=registries.RegistryClient()
    )
    controller = datasetcontrollers.controller_for(services)
    path = f"/apis/muster.dev/v1alpha1/datasets/{name}"
    try:
        for _ in range(100):  # right after the release installs its CRDs: 429 (re)initializing
            try:
                await operator_kube.get("/apis/muster.dev/v1alpha1/datasetpolicies")
                break
            except kubeapi.ApiError as error:
                assert error.status == 429, error
                await asyncio.sleep(0.2)
        # Lists Datasets and DatasetPolicies, reads the Secret, patches the status: as the
        # chart's ServiceAccount.
        await controller.dataset_event("ADDED", await operator_kube.get(path))
        assert controller.catalog.loaded  # the list was allowed
        stored = await operator_kube.get(path)
        (signed,) = [c for c in stored["status"]["conditions"] if c["type"] == "SignatureVerified"]
        assert (signed["status"], signed["reason"]) == ("True", "Verified"), signed["message"]
    finally:
        await services.registries.close()
        with kubeclients.admin(release.plane) as api:
            client.CustomObjectsApi(api).delete_cluster_custom_object(
                "muster.dev", "v1alpha1", "datasets", name
            )


@dataclasses.dataclass(frozen=True)
class _DatasetSettings:
    own_namespace: str = "muster-system"
    enforcement: scopes.Enforcement = scopes.NAMESPACED
    namespace_selector: selectors.LabelSelector | None = None


def _bound_pod(release: Release, node: str, account: str) -> str:
    """A pod of the agent's ServiceAccount on ``node``; returns a token bound to it."""
    with kubeclients.admin(release.plane) as api:
        pod = client.CoreV1Api(api).create_namespaced_pod(
            release.namespace,
            {
                "metadata": {"generateName": "agent-"},
                "spec": {
                    "nodeName": node,
                    "serviceAccountName": account,
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "agent", "image": "busybox:1"}],
                },
            },
        )
    ref = {"kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name, "uid": pod.metadata.uid}
    return _token(release.plane, release.namespace, account, boundObjectRef=ref)


async def test_node_agent_may_annotate_only_its_own_node(release: Release, tmp_path: Path) -> None:
    account = f"{release.name}-node-agent"
    suffix = uuid.uuid4().hex[:6]
    own, other = f"gpu-own-{suffix}", f"gpu-other-{suffix}"
    with kubeclients.admin(release.plane) as api:
        core = client.CoreV1Api(api)
        for node in (own, other):
            core.create_node(
                {"metadata": {"name": node, "labels": {"nvidia.com/gpu.present": "true"}}}
            )
    token = _bound_pod(release, own, account)
    kube = kubeapi.KubeApi(
        kubeapi.Credentials(
            host=release.plane.url, ca_file=release.plane.state.ca_file, token=token
        )
    )
    measurement = nodeagent_.measure(gpuroots.host_root(tmp_path, driver="580.95.05"))
    try:
        # The agent's own write, through the agent's own code.
        await nodeagent_.publish(kube, own, measurement)
        with kubeclients.admin(release.plane) as api:
            annotations = client.CoreV1Api(api).read_node(own).metadata.annotations
        attested = json.loads(annotations[gpustack.ATTESTATION_ANNOTATION])
        assert attested["driverVersion"] == "580.95.05"
        # Another node: RBAC allows patching nodes, the admission policy does not. The
        # apiserver activates a new ValidatingAdmissionPolicy through an informer, a moment
        # after helm created it: wait for it to bite once, then every check is immediate.
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                await nodeagent_.publish(kube, other, measurement)
            except kubeapi.ApiError as error:
                refused_error = error
                break
            assert asyncio.get_running_loop().time() < deadline, "the policy never took effect"
            await asyncio.sleep(0.5)
        assert refused_error.status == 403
        assert f"the node agent may only write its own Node, not {other}" in str(refused_error)
        # Its own node, but anything other than the attestation annotation.
        for change in (
            {"metadata": {"labels": {"muster.dev/gpu-stack": "compliant"}}},
            {"metadata": {"annotations": {"other.example/claim": "x"}}},
            {"spec": {"unschedulable": True}},
        ):
            with pytest.raises(kubeapi.ApiError) as refused:
                await kube.patch(f"/api/v1/nodes/{own}", change)
            assert refused.value.status == 403, change
            assert "may only change the muster.dev/gpu-attestation annotation" in str(refused.value)
        # RBAC: nodes by name only, nothing else.
        for path in ("/api/v1/nodes", f"/api/v1/namespaces/{release.namespace}/secrets/x"):
            with pytest.raises(kubeapi.ApiError) as refused:
                await kube.get(path)
            assert refused.value.status == 403, path
    finally:
        await kube.close()
        with kubeclients.admin(release.plane) as api:
            for node in (own, other):
                client.CoreV1Api(api).delete_node(node)
