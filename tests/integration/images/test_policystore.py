"""The policy store every replica's gate reads: listed from the real apiserver, fail closed."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from muster.admission import server
from muster.app import localoperator, runtime
from muster.images import gate as imagegate
from muster.kernel import crds, findings, gates, subjects
from muster.platform import controlplane, kubeapi, registries
from tests import kubeclients
from tests.integration.images.conftest import Signer

pytestmark = pytest.mark.integration


def admin_api(plane: controlplane.ControlPlane) -> kubeapi.KubeApi:
    return kubeapi.KubeApi(kubeapi.Credentials.resolve(str(plane.kubeconfig)))


async def test_policies_are_listed_and_compiled_once(
    control_plane: controlplane.ControlPlane, signers: dict[str, Signer]
) -> None:
    localoperator.install_crds(control_plane)
    name = f"store-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
        "kind": "ImagePolicy",
        "metadata": {"name": name},
        "spec": {
            "images": ["store.example/**"],
            "authorities": [{"name": "alice", "key": {"data": signers["alice"].pem}}],
        },
    }
    with kubeclients.admin(control_plane) as api:
        client.CustomObjectsApi(api).create_cluster_custom_object(
            crds.GROUP, crds.VERSION, "imagepolicies", body
        )
    kube = admin_api(control_plane)
    try:
        store = imagegate.PolicyStore(kube)
        first = {p.name: p for p in await store.snapshot()}
        assert first[name].authorities[0].name == "alice"
        assert first[name].generation == 1
        store.listed_at = None  # force a relist: an unchanged generation is not recompiled
        second = {p.name: p for p in await store.snapshot()}
        assert second[name] is first[name]
        await kube.delete(f"{imagegate.POLICIES_PATH}/{name}")
        store.listed_at = None
        assert name not in {p.name for p in await store.snapshot()}
    finally:
        await kube.close()


async def test_policies_that_cannot_be_listed_fail_closed(
    control_plane: controlplane.ControlPlane,
) -> None:
    namespace = kubeclients.namespace(control_plane, "store")
    with kubeclients.service_account(control_plane, namespace, "nobody") as api:
        token = api.configuration.api_key["BearerToken"]
    state = control_plane.state
    kube = kubeapi.KubeApi(
        kubeapi.Credentials(host=control_plane.url, ca_file=str(state.ca_file), token=token)
    )
    try:
        store = imagegate.PolicyStore(kube)
        with pytest.raises(imagegate.PoliciesUnavailable, match="cannot list ImagePolicies"):
            await store.snapshot()
        services = runtime.Services(
            settings=runtime.OperatorSettings(webhook=server.WebhookSettings()),
            kube=kube,
            registries=registries.RegistryClient(),
        )
        gate = imagegate.ImageGate(imagegate.area_for(services))
        obj = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}}
        subject = subjects.Subject(
            uid="u",
            api_version="admission.k8s.io/v1",
            operation="CREATE",
            group="",
            resource="pods",
            subresource="",
            kind="Pod",
            namespace=namespace,
            name="p",
            object=obj,
            templates=subjects.templates_of(obj, ("",)),
            user={},
            mode=findings.Mode.ENFORCE,
            dry_run=False,
        )
        denied = await gate.judge(subject, gates.Phase.VALIDATE)
        assert [f.reason for f in denied.findings] == ["ImagePoliciesUnavailable"]
        assert denied.findings[0].mode is findings.Mode.ENFORCE
        assert (await gate.judge(subject, gates.Phase.MUTATE)).findings == ()
    finally:
        await kube.close()
