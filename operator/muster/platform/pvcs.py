"""Reading the PersistentVolumeClaims a pod template mounts (the gates judge what marks them)."""

from __future__ import annotations

import asyncio
from typing import Any

from muster.kernel import podvolumes, subjects
from muster.platform import kubeapi

__all__ = ["read_claims"]


async def read_claims(
    kube: kubeapi.KubeApi,
    namespace: str,
    template: subjects.PodTemplate,
    *,
    errors: tuple[type[Exception], ...] = (kubeapi.ApiError,),
) -> tuple[dict[str, dict[str, Any] | None], dict[str, Exception]]:
    """Each claim the template mounts, read once: claim -> the PVC (None: not found, e.g. not
    created yet), and claim -> why it could not be read (one of ``errors``; any other failure
    propagates)."""
    found: dict[str, dict[str, Any] | None] = {}
    failed: dict[str, Exception] = {}

    async def read(claim: str) -> None:
        try:
            found[claim] = await kube.get(
                f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}"
            )
        except errors as error:
            if isinstance(error, kubeapi.ApiError) and error.status == 404:
                found[claim] = None
                return
            failed[claim] = error

    await asyncio.gather(
        *(read(claim) for claim in sorted(set(podvolumes.pvc_claims(template).values())))
    )
    return found, failed
