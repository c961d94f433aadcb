"""The image gate of an operator of the test's own against the real apiserver and registry: its
area, the ImagePolicies it holds as the controller would have left them, and the admission
subjects it judges."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from muster.admission import server
from muster.app import runtime
from muster.images import gate as imagegate
from muster.images.rules import policies as imagepolicies
from muster.kernel import findings, subjects
from muster.platform import controlplane, kubeapi, registries
from tests import peers

__all__ = ["area_with", "pod", "subject", "use_policies"]


@contextlib.asynccontextmanager
async def area_with(
    control_plane: controlplane.ControlPlane, registry: peers.Registry, **overrides: Any
) -> AsyncIterator[imagegate.ImageArea]:
    """An image area of its own whose operator settings differ (``muster run`` flags)."""
    settings = runtime.OperatorSettings(
        webhook=server.WebhookSettings(),
        registry=registries.RegistrySettings(insecure_registries=frozenset({registry.host})),
        **overrides,
    )
    services = runtime.Services(
        settings=settings,
        kube=kubeapi.KubeApi(kubeapi.Credentials.resolve(str(control_plane.kubeconfig))),
        registries=registries.RegistryClient(settings.registry),
    )
    found = imagegate.area_for(services)
    assert imagegate.area_for(services) is found  # one per process, shared with the controller
    try:
        yield found
    finally:
        await found.verifier.close()
        await services.close()


def use_policies(area: imagegate.ImageArea, *compiled: imagepolicies.CompiledPolicy) -> None:
    """As the controller would have left them (no listing from the API in these tests)."""
    for each in compiled:
        area.store.put(each)
    area.store.listed_at = time.monotonic()
    area.store.refresh = 3600


def subject(namespace: str, obj: dict[str, Any], resource: str = "pods") -> subjects.Subject:
    """The CREATE of ``obj`` (a pod, or a workload of the apps group) as the webhook reads it."""
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
