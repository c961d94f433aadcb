"""Reading the Kubeflow TrainJob a pod says it belongs to (muster.kernel.trainerpods)."""

from __future__ import annotations

from typing import Any

from muster.platform import kubeapi

__all__ = ["TRAINJOBS_PATH", "read_trainjob"]

TRAINJOBS_PATH = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/{namespace}/trainjobs/{name}"


async def read_trainjob(kube: kubeapi.KubeApi, namespace: str, name: str) -> dict[str, Any] | None:
    """The TrainJob, or None when there is none of that name (or no TrainJob CRD): then the
    pod's label names no TrainJob and there is no download of it to re-measure. Every other
    failure propagates: the caller fails closed."""
    try:
        return await kube.get(TRAINJOBS_PATH.format(namespace=namespace, name=name))
    except kubeapi.ApiError as error:
        if error.status == 404:
            return None
        raise
