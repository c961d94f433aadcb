"""The operator's asyncio Kubernetes client against the real apiserver."""

from __future__ import annotations

import pytest

from muster.platform import controlplane, kubeapi
from tests import kubeclients

pytestmark = pytest.mark.integration


async def test_get_create_patch_delete(control_plane: controlplane.ControlPlane) -> None:
    namespace = kubeclients.namespace(control_plane, "kubeapi")
    api = kubeapi.KubeApi(kubeapi.Credentials.resolve(str(control_plane.kubeconfig)))
    try:
        got = await api.get(f"/api/v1/namespaces/{namespace}")
        assert got["metadata"]["name"] == namespace
        created = await api.create(
            f"/api/v1/namespaces/{namespace}/configmaps",
            {"metadata": {"name": "probe"}, "data": {"a": "1"}},
        )
        assert created["data"] == {"a": "1"}
        patched = await api.patch(
            f"/api/v1/namespaces/{namespace}/configmaps/probe", {"data": {"b": "2"}}
        )
        assert patched["data"] == {"a": "1", "b": "2"}
        await api.delete(f"/api/v1/namespaces/{namespace}/configmaps/probe")
        with pytest.raises(kubeapi.ApiError) as raised:
            await api.get(f"/api/v1/namespaces/{namespace}/configmaps/probe")
        assert raised.value.status == 404
        assert "not found" in str(raised.value)
    finally:
        await api.close()


async def test_a_token_identity_gets_only_its_rbac(
    control_plane: controlplane.ControlPlane,
) -> None:
    namespace = kubeclients.namespace(control_plane, "kubeapi")
    with kubeclients.service_account(control_plane, namespace, "nobody") as sa_client:
        token = sa_client.configuration.api_key["BearerToken"]
    api = kubeapi.KubeApi(
        kubeapi.Credentials(
            host=control_plane.url, ca_file=control_plane.state.ca_file, token=token
        )
    )
    try:
        with pytest.raises(kubeapi.ApiError) as raised:
            await api.get("/api/v1/secrets")
        assert raised.value.status == 403
        assert token not in repr(api.credentials)
    finally:
        await api.close()
