"""The loop proven end to end: kubectl -> real kube-apiserver -> muster run over TLS -> answer."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request

import pytest
from kubernetes import client

from muster.app import localoperator
from muster.images.rules import policies as imagepolicies
from muster.kernel import scopes
from muster.platform import controlplane
from tests import kubeclients
from tests.e2e.conftest import OWN_NAMESPACE

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("muster_operator")]

PINNED = "registry.example/team/trainer@sha256:" + "ab" * 32
UNPINNED = "registry.example/team/trainer:v1"
# Digest pinning is what these tests are about: no ImagePolicy covers their image, which their
# namespaces allow explicitly (tests/e2e/images/test_uncovered.py tests that rule).
ENFORCED = {scopes.ENFORCE_LABEL: "true", imagepolicies.UNCOVERED_LABEL: "allow"}
WARNED = {scopes.ENFORCE_LABEL: "warn", imagepolicies.UNCOVERED_LABEL: "allow"}


def _create(plane: controlplane.ControlPlane, namespace: str, body: dict[str, object]) -> None:
    with kubeclients.admin(plane) as api:
        client.CoreV1Api(api).create_namespaced_pod(namespace, body)


def _denial(plane: controlplane.ControlPlane, namespace: str, body: dict[str, object]) -> str:
    with pytest.raises(client.ApiException) as raised:
        _create(plane, namespace, body)
    assert raised.value.status == 403, raised.value.body
    message: str = json.loads(raised.value.body)["message"]
    return message


def test_unpinned_image_is_denied_naming_container_and_image(
    control_plane: controlplane.ControlPlane,
) -> None:
    namespace = kubeclients.namespace(control_plane, "enforced", ENFORCED)
    message = _denial(control_plane, namespace, kubeclients.pod("trainer", UNPINNED))
    assert 'admission webhook "enforce.validate.pods.muster.dev" denied the request' in message
    assert 'container "c0"' in message
    assert UNPINNED in message
    assert "not pinned by digest" in message


def test_every_unpinned_image_of_a_pod_is_named_once(
    control_plane: controlplane.ControlPlane,
) -> None:
    namespace = kubeclients.namespace(control_plane, "enforced", ENFORCED)
    body = kubeclients.pod("multi", PINNED, "busybox", init_images=("alpine:3",))
    message = _denial(control_plane, namespace, body)
    assert "2 violations" in message
    assert "init container \"init-0\": image 'alpine:3'" in message
    assert "container \"c1\": image 'busybox'" in message
    assert PINNED not in message


def test_pinned_image_is_admitted(control_plane: controlplane.ControlPlane) -> None:
    namespace = kubeclients.namespace(control_plane, "enforced", ENFORCED)
    _create(control_plane, namespace, kubeclients.pod("pinned", PINNED, init_images=(PINNED,)))
    with kubeclients.admin(control_plane) as api:
        created = client.CoreV1Api(api).read_namespaced_pod("pinned", namespace)
    assert created.spec.containers[0].image == PINNED


@pytest.mark.parametrize(
    "labels",
    [
        {},
        {scopes.ENFORCE_LABEL: "false"},
        {scopes.ENFORCE_LABEL: "true", scopes.OPT_OUT_LABEL: "true"},
    ],
)
def test_namespaces_that_did_not_opt_in_are_never_blocked(
    control_plane: controlplane.ControlPlane, labels: dict[str, str]
) -> None:
    namespace = kubeclients.namespace(control_plane, "free", labels)
    _create(control_plane, namespace, kubeclients.pod("anything", UNPINNED))


@pytest.mark.parametrize("namespace", ["kube-system", OWN_NAMESPACE])
def test_system_and_own_namespace_are_never_blocked_even_when_labelled(
    control_plane: controlplane.ControlPlane, namespace: str
) -> None:
    # Labelling them is a mistake an admin can make; Muster must still stay out of the way.
    kubeclients_namespace = kubeclients.admin(control_plane)
    with kubeclients_namespace as api:
        client.CoreV1Api(api).patch_namespace(
            namespace, {"metadata": {"labels": {scopes.ENFORCE_LABEL: "true"}}}
        )
    try:
        _create(control_plane, namespace, kubeclients.pod(f"system-{namespace}", UNPINNED))
    finally:
        with kubeclients.admin(control_plane) as api:
            client.CoreV1Api(api).patch_namespace(
                namespace, {"metadata": {"labels": {scopes.ENFORCE_LABEL: None}}}
            )


def test_warn_mode_admits_with_a_warning_shown_by_kubectl(
    control_plane: controlplane.ControlPlane,
) -> None:
    namespace = kubeclients.namespace(control_plane, "warned", WARNED)
    result = controlplane.kubectl(
        control_plane, "-n", namespace, "run", "warned", f"--image={UNPINNED}"
    )
    assert "pod/warned created" in result.stdout
    assert 'Warning: muster: container "warned"' in result.stderr
    assert "not pinned by digest" in result.stderr


def test_kubectl_user_sees_the_denial(control_plane: controlplane.ControlPlane) -> None:
    namespace = kubeclients.namespace(control_plane, "enforced", ENFORCED)
    result = controlplane.kubectl(
        control_plane, "-n", namespace, "run", "denied", f"--image={UNPINNED}", check=False
    )
    assert result.returncode == 1
    assert 'denied the request: muster: container "denied"' in result.stderr


def _post(operator: localoperator.LocalOperator, path: str, body: bytes) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(operator.ca_file))
    request = urllib.request.Request(
        operator.url + path, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.parametrize(
    "body",
    [
        b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}',
        b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",'
        b' "request": {"uid": "u1"}}',
        b"[1, 2, 3]",
        b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"uid": "u2",'
        b' "kind": {}, "resource": {"group": "", "version": "v1", "resource": "pods"},'
        b' "operation": "CREATE", "userInfo": {}, "object": "not an object"}}',
    ],
)
def test_malformed_review_gets_a_denying_review_not_a_traceback(
    muster_operator: localoperator.LocalOperator, body: bytes
) -> None:
    status, raw = _post(muster_operator, "/validate/enforce", body)
    assert status == 200
    answer = json.loads(raw)
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 400
    assert "malformed AdmissionReview" in answer["response"]["status"]["message"]
    assert "Traceback" not in raw.decode()


def test_non_json_body_gets_400(muster_operator: localoperator.LocalOperator) -> None:
    status, raw = _post(muster_operator, "/validate/enforce", b"\x00not json")
    assert status == 400
    assert b"body is not JSON" in raw
    assert b"Traceback" not in raw


def test_a_service_account_gets_only_its_rbac(control_plane: controlplane.ControlPlane) -> None:
    # Tests of the chart's RBAC act as its ServiceAccount: prove such identities are real here.
    namespace = kubeclients.namespace(control_plane, "rbac")
    with kubeclients.service_account(control_plane, namespace, "nobody") as api:
        with pytest.raises(client.ApiException) as raised:
            client.CoreV1Api(api).list_secret_for_all_namespaces()
        assert raised.value.status == 403
        assert f"system:serviceaccount:{namespace}:nobody" in raised.value.body


def _deployment(name: str, image: str) -> dict[str, object]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "trainer", "image": image}]},
            },
        },
    }


def test_a_deployment_with_an_unpinned_image_fails_at_apply_time(
    control_plane: controlplane.ControlPlane,
) -> None:
    namespace = kubeclients.namespace(control_plane, "enforced", ENFORCED)
    with kubeclients.admin(control_plane) as api, pytest.raises(client.ApiException) as raised:
        client.AppsV1Api(api).create_namespaced_deployment(
            namespace, _deployment("trainer", UNPINNED)
        )
    assert raised.value.status == 403
    message = json.loads(raised.value.body)["message"]
    assert 'container "trainer"' in message
    assert UNPINNED in message


def test_a_pinned_deployment_is_admitted_and_so_are_its_pods(
    control_plane: controlplane.ControlPlane,
) -> None:
    namespace = kubeclients.namespace(control_plane, "enforced", ENFORCED)
    with kubeclients.admin(control_plane) as api:
        client.AppsV1Api(api).create_namespaced_deployment(
            namespace, _deployment("trainer", PINNED)
        )
        # The real controller-manager turns it into a ReplicaSet and pods; each pod passes
        # through the webhook too.
        deadline = time.monotonic() + 60
        pods: list[client.V1Pod] = []
        while time.monotonic() < deadline and len(pods) < 2:
            pods = client.CoreV1Api(api).list_namespaced_pod(namespace).items
            time.sleep(0.5)
    assert len(pods) == 2
    assert {pod.spec.containers[0].image for pod in pods} == {PINNED}
