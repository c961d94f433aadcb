"""Prometheus finding Muster the way a ServiceMonitor makes it: through the apiserver.

No kubelet runs, so the objects a Deployment and the endpoint controllers would make are made
here by hand: a Pod (it stays Pending), a Service with the chart's labels and port name, and an
EndpointSlice that points at the real ``muster run``'s metrics port. The apiserver refuses
loopback addresses in an EndpointSlice, so the slice names a documentation address
(``192.0.2.10``, RFC 5737, never routed) and the scrape job's last relabelling rule, the one rule
a ServiceMonitor would not have, maps it to the loopback address ``muster run`` listens on:
the tests' traffic never leaves loopback. Prometheus discovers it with
``kubernetes_sd_configs`` (role ``endpointslice``) and the relabelling the Prometheus
operator generates for a ServiceMonitor (``namespace``, ``service``, ``pod``, ``container``,
``job``, ``endpoint`` from ``__meta_kubernetes_*``), and also scrapes the apiserver itself
for the webhook metrics.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from kubernetes import client

from muster.platform import controlplane
from tests import kubeclients

SERVICE = "muster"  # the Service's name becomes the job label, as with a ServiceMonitor
POD = "muster-0"
CONTAINER = "operator"
PORT_NAME = "metrics"
SELECTOR = {
    "app.kubernetes.io/name": "muster",
    "app.kubernetes.io/instance": "muster",
    "app.kubernetes.io/component": "operator",
}


# What the EndpointSlice names, and where the scrape really goes.
PUBLISHED_ADDRESS = "192.0.2.10"
LISTEN_ADDRESS = "127.0.0.1"


def publish(plane: controlplane.ControlPlane, namespace: str, metrics_port: int, image: str) -> str:
    """The Pod, Service and EndpointSlice a chart install would have; returns the address."""
    address = PUBLISHED_ADDRESS
    with kubeclients.admin(plane) as api:
        core: Any = client.CoreV1Api(api)
        discovery: Any = client.DiscoveryV1Api(api)
        body: dict[str, Any] = kubeclients.pod(POD, image)
        body["metadata"]["labels"] = SELECTOR
        container = body["spec"]["containers"][0]
        container["name"] = CONTAINER
        container["ports"] = [{"name": PORT_NAME, "containerPort": metrics_port}]
        pod = core.create_namespaced_pod(namespace, body)
        core.create_namespaced_service(
            namespace,
            {
                "metadata": {"name": SERVICE, "labels": SELECTOR},
                # No selector: the endpoint controllers leave the EndpointSlice below alone.
                "spec": {"ports": [{"name": PORT_NAME, "port": 8080, "targetPort": PORT_NAME}]},
            },
        )
        discovery.create_namespaced_endpoint_slice(
            namespace,
            {
                "metadata": {
                    "name": f"{SERVICE}-metrics",
                    "labels": {"kubernetes.io/service-name": SERVICE},
                },
                "addressType": "IPv4",
                "endpoints": [
                    {
                        "addresses": [address],
                        "conditions": {"ready": True},
                        "targetRef": {
                            "kind": "Pod",
                            "name": POD,
                            "namespace": namespace,
                            "uid": pod.metadata.uid,
                        },
                    }
                ],
                "ports": [{"name": PORT_NAME, "port": metrics_port, "protocol": "TCP"}],
            },
        )
    return address


def _tls(plane: controlplane.ControlPlane) -> dict[str, str]:
    state = plane.state
    return {
        "ca_file": state.ca_file,
        "cert_file": state.admin_cert_file,
        "key_file": state.admin_key_file,
    }


def _keep_label(name: str, value: str) -> dict[str, Any]:
    meta = name.replace(".", "_").replace("/", "_").replace("-", "_")
    return {
        "action": "keep",
        "source_labels": [
            f"__meta_kubernetes_service_label_{meta}",
            f"__meta_kubernetes_service_labelpresent_{meta}",
        ],
        "regex": f"({value});true",
    }


def scrape_configs(plane: controlplane.ControlPlane, namespace: str) -> list[dict[str, Any]]:
    """What the Prometheus operator generates for the chart's ServiceMonitor (role
    endpointslice), and a job for the apiserver (kube-prometheus names it ``apiserver``)."""
    slice_target = ["__meta_kubernetes_endpointslice_address_target_kind",
                    "__meta_kubernetes_endpointslice_address_target_name"]  # fmt: skip
    muster = {
        "job_name": f"serviceMonitor/{namespace}/{SERVICE}/0",
        "honor_labels": False,
        "kubernetes_sd_configs": [
            {
                "role": "endpointslice",
                "api_server": plane.url,
                "tls_config": _tls(plane),
                "namespaces": {"names": [namespace]},
            }
        ],
        "metrics_path": "/metrics",
        "relabel_configs": [
            {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
            *(_keep_label(name, value) for name, value in sorted(SELECTOR.items())),
            {
                "action": "keep",
                "source_labels": ["__meta_kubernetes_endpointslice_port_name"],
                "regex": PORT_NAME,
            },
            {
                "source_labels": slice_target,
                "separator": ";",
                "regex": "Node;(.*)",
                "replacement": "${1}",
                "target_label": "node",
            },
            {
                "source_labels": slice_target,
                "separator": ";",
                "regex": "Pod;(.*)",
                "replacement": "${1}",
                "target_label": "pod",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {
                "source_labels": ["__meta_kubernetes_pod_container_name"],
                "target_label": "container",
            },
            {
                "action": "drop",
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "(Failed|Succeeded)",
            },
            {
                "source_labels": ["__meta_kubernetes_service_name"],
                "target_label": "job",
                "replacement": "${1}",
            },
            {"target_label": "endpoint", "replacement": PORT_NAME},
            # Not the operator's: the published address stands for the loopback one.
            {
                "source_labels": ["__address__"],
                "regex": f"{PUBLISHED_ADDRESS.replace('.', '[.]')}:(\\d+)",
                "replacement": f"{LISTEN_ADDRESS}:${{1}}",
                "target_label": "__address__",
            },
        ],
    }
    apiserver = {
        "job_name": "apiserver",
        "scheme": "https",
        "tls_config": _tls(plane),
        "static_configs": [{"targets": [urllib.parse.urlsplit(plane.url).netloc]}],
    }
    return [muster, apiserver]
