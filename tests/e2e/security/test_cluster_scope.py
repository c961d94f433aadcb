"""Cluster scope through the real apiserver: every namespace is judged in enforce mode with no
opt-in label, except the exclusions; `muster.dev/enforce=warn` still selects warn mode and
`muster.dev/ignore=true` still opts out.

An operator of its own runs with `--enforcement-scope=cluster`, its webhooks built by
`muster.app.webhookconfigs` with the cluster-scope namespaceSelector (the chart's, compared in
tests/integration/chart/test_scope_and_anchors.py). The control plane is shared by the whole
session, so one extra selector expression confines these webhooks to this module's namespaces.
The pods are created by a tenant, a ServiceAccount with ordinary rights in its own namespace.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client

from muster.app import localoperator, webhookconfigs
from muster.kernel import crds, scopes
from muster.platform import controlplane, kubesetup
from tests import kubeclients, peers, tenants
from tests.integration.images.conftest import Signer, sign_v3

pytestmark = pytest.mark.e2e

RUN = uuid.uuid4().hex[:6]
OWN_NAMESPACE = f"muster-cluster-scope-{RUN}"
SCOPE_LABEL = "muster-e2e.dev/cluster-scope"
CONFIGURATION = f"cluster-scope-{RUN}.muster.dev"
POLICY = f"cluster-scope-{RUN}"
# Excluded from judgement: in the webhooks' selector and in the operator's flags both.
EXCLUDED = f"cs-excluded-{RUN}"
# Excluded by the operator's flag only: a misconfigured webhook still sends it; the handler's
# own check must leave it alone.
EXCLUDED_BY_OPERATOR = f"cs-operator-excluded-{RUN}"

_T = TypeVar("_T")


def eventually(probe: Callable[[], _T | None], what: str, timeout: float = 45.0) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def images(
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """An unsigned and a signed image, pinned, in a repository only this module's policy covers."""
    workdir = tmp_path_factory.mktemp("cluster-scope-images")
    found = {}
    for name in ("unsigned", "signed"):
        digest = peers.push_image(registry, f"cs-{RUN}/{name}", "v1", workdir=workdir)
        found[name] = f"{registry.host}/cs-{RUN}/{name}@{digest}"
    sign_v3(signers["alice"], found["signed"])
    return found


def _register(plane: controlplane.ControlPlane, operator: localoperator.LocalOperator) -> None:
    """The cluster-scope webhooks, confined to namespaces labelled for this module."""
    ca_bundle = base64.b64encode(operator.ca_file.read_bytes()).decode("ascii")
    # The webhooks know one exclusion; the operator knows both (see EXCLUDED_BY_OPERATOR).
    selected = scopes.Enforcement.of("cluster", [EXCLUDED])
    with contextlib.closing(kubesetup.api_client(plane.kubeconfig)) as api:
        for build in (webhookconfigs.validating, webhookconfigs.mutating):
            manifest = build(
                operator.url, ca_bundle, own_namespace=OWN_NAMESPACE, enforcement=selected
            )
            manifest["metadata"]["name"] = CONFIGURATION
            manifest["webhooks"] = [h for h in manifest["webhooks"] if ".pods." in h["name"]]
            for hook in manifest["webhooks"]:
                hook["namespaceSelector"]["matchExpressions"].append(
                    {"key": SCOPE_LABEL, "operator": "In", "values": [RUN]}
                )
            kubesetup.apply_webhook_configuration(api, manifest)


def _unregister(plane: controlplane.ControlPlane) -> None:
    with contextlib.closing(kubesetup.api_client(plane.kubeconfig)) as api:
        admission: Any = client.AdmissionregistrationV1Api(api)
        with contextlib.suppress(client.ApiException):
            admission.delete_validating_webhook_configuration(CONFIGURATION)
        with contextlib.suppress(client.ApiException):
            admission.delete_mutating_webhook_configuration(CONFIGURATION)


@pytest.fixture(scope="module")
def cluster_operator(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    localoperator.install_crds(control_plane)
    kubeclients.create_muster_object(
        control_plane,
        "imagepolicies",
        "ImagePolicy",
        POLICY,
        {
            "images": [f"{registry.host}/cs-{RUN}/**"],
            "mode": "enforce",
            "authorities": [{"name": "alice", "key": {"data": signers["alice"].pem}}],
        },
    )
    operator = localoperator.start(
        control_plane,
        own_namespace=OWN_NAMESPACE,
        workdir=tmp_path_factory.mktemp("muster-cluster-scope"),
        extra_args=(f"--insecure-registry={registry.host}",),
        enforcement=scopes.Enforcement.of("cluster", [EXCLUDED, EXCLUDED_BY_OPERATOR]),
    )
    try:
        _register(control_plane, operator)
        yield operator
    finally:
        _unregister(control_plane)
        operator.stop()
        with kubeclients.admin(control_plane) as api, contextlib.suppress(client.ApiException):
            client.CustomObjectsApi(api).delete_cluster_custom_object(
                crds.GROUP, crds.VERSION, "imagepolicies", POLICY
            )
        print(f"--- muster run (cluster scope) log ---\n{operator.log.read_text()[-4000:]}")


def _namespace(plane: controlplane.ControlPlane, name: str, **labels: str) -> tenants.Tenant:
    """A namespace of this module with ``labels`` (no opt-in label unless given), and its tenant."""
    with kubeclients.admin(plane) as api:
        kubesetup.ensure_namespace(api, name, {SCOPE_LABEL: RUN, **labels})
    return tenants.tenant(plane, name)


def _create(tenant: tenants.Tenant, image: str, *, dry_run: bool = False) -> tuple[Any, list[str]]:
    """Create a pod as the tenant; returns it and the apiserver's Warning headers."""
    body = kubeclients.pod(f"p-{uuid.uuid4().hex[:6]}", image)
    with contextlib.closing(tenant.api()) as api:
        created, _, headers = client.CoreV1Api(api).create_namespaced_pod_with_http_info(
            tenant.namespace, body, dry_run="All" if dry_run else None
        )
    warnings = [w for k, w in (headers or {}).items() if k.lower() == "warning"]
    return created, warnings


def _refusal(tenant: tenants.Tenant, image: str, *, dry_run: bool = False) -> str | None:
    try:
        _create(tenant, image, dry_run=dry_run)
    except client.ApiException as error:
        assert error.status == 403, error.body
        return str(json.loads(error.body)["message"])
    return None


def _policy_bites(tenant: tenants.Tenant, image: str) -> str:
    """The operator learns of the new ImagePolicy through its watch: until then the image is not
    covered. Dry runs (the webhooks are called, nothing is stored) until the policy bites."""

    def probe() -> str | None:
        message = _refusal(tenant, image, dry_run=True)
        return message if message and "no signature found" in message else None

    return eventually(probe, f"the unsigned image to be refused in {tenant.namespace}")


def test_an_unlabelled_namespace_is_judged_in_enforce_mode(
    control_plane: controlplane.ControlPlane,
    cluster_operator: localoperator.LocalOperator,
    images: dict[str, str],
    tmp_path: Path,
) -> None:
    tenant = _namespace(control_plane, f"cs-plain-{RUN}")
    message = _policy_bites(tenant, images["unsigned"])
    assert f"ImagePolicy '{POLICY}'" in message
    # Stored for real: refused, with no opt-in label anywhere on the namespace.
    refused = _refusal(tenant, images["unsigned"])
    assert refused is not None and "no signature found" in refused
    assert f"image '{images['unsigned']}'" in refused
    with kubeclients.admin(control_plane) as api:
        labels = client.CoreV1Api(api).read_namespace(tenant.namespace).metadata.labels
    assert scopes.ENFORCE_LABEL not in labels
    # Judged, not merely blocked: the signed image is admitted.
    created, warnings = _create(tenant, images["signed"])
    assert created.spec.containers[0].image == images["signed"]
    assert warnings == []


def test_warn_label_selects_warn_mode_and_ignore_opts_out(
    control_plane: controlplane.ControlPlane,
    cluster_operator: localoperator.LocalOperator,
    images: dict[str, str],
) -> None:
    _policy_bites(_namespace(control_plane, f"cs-probe-{RUN}"), images["unsigned"])
    warned = _namespace(control_plane, f"cs-warn-{RUN}", **{scopes.ENFORCE_LABEL: "warn"})
    created, warnings = _create(warned, images["unsigned"])
    assert created.metadata.name
    assert any("no signature found" in w for w in warnings), warnings
    ignored = _namespace(control_plane, f"cs-ignored-{RUN}", **{scopes.OPT_OUT_LABEL: "true"})
    created, warnings = _create(ignored, images["unsigned"])
    assert created.metadata.name
    assert warnings == []
    # Any other value of the label is not an opt-out in cluster scope.
    odd = _namespace(control_plane, f"cs-odd-{RUN}", **{scopes.ENFORCE_LABEL: "false"})
    refused = _refusal(odd, images["unsigned"])
    assert refused is not None and "no signature found" in refused


@pytest.mark.parametrize("excluded", [EXCLUDED, EXCLUDED_BY_OPERATOR])
def test_excluded_namespaces_are_not_judged(
    control_plane: controlplane.ControlPlane,
    cluster_operator: localoperator.LocalOperator,
    images: dict[str, str],
    excluded: str,
) -> None:
    # Only once an unlabelled namespace's pod is refused does an admission here mean anything.
    probe = _namespace(control_plane, f"cs-probe-{excluded}")
    _policy_bites(probe, images["unsigned"])
    tenant = _namespace(control_plane, excluded)
    created, warnings = _create(tenant, images["unsigned"])
    assert created.spec.containers[0].image == images["unsigned"]
    assert warnings == []
