"""A tenant's workloads, through the real apiserver: every kind README names.

The tenant is a ServiceAccount with ordinary rights in its own namespace (tests/tenants.py);
the custom kinds are served from their real upstream CRDs (tests/fixtures/crds). For each
kind, an unsigned image is refused at ``kubectl apply`` time and a signed one admitted (and
pinned by digest where the API puts it); changing the admitted object to the unsigned image is
refused too, by Muster or, where the field is immutable (a Job's template), by the apiserver
itself, and changing it to another signed image rolls out pinned. Then the pod's own UPDATE
paths: a pod's image swapped, an ephemeral container added (what ``kubectl debug`` does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from muster.app import localoperator
from muster.kernel import crds
from muster.platform import controlplane
from tests import kubeclients, peers, tenants, workloadkinds
from tests.e2e.suites import SUITE_LABEL, suite_labels, suite_operator, suite_selector
from tests.integration.images.conftest import Signer, sign_v3

pytestmark = pytest.mark.e2e

SUITE = "tenant-workloads"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


@dataclasses.dataclass(frozen=True)
class Images:
    """Tags in the test registry: two signed by a key the policy trusts, one unsigned."""

    signed: str
    signed_digest: str
    other: str
    other_digest: str
    unsigned: str


@pytest.fixture(scope="module")
def operator(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    workloadkinds.install_crds(control_plane)
    with suite_operator(
        control_plane,
        configuration=f"{SUITE}-e2e.muster.dev",
        own_namespace=f"muster-{SUITE}-e2e",
        workdir=tmp_path_factory.mktemp("muster-tenant-workloads"),
        select=suite_selector(SUITE),
        extra_args=(f"--insecure-registry={registry.host}",),
    ) as started:
        yield started


def _compiled(plane: controlplane.ControlPlane, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with kubeclients.admin(plane) as api:
            objects: Any = client.CustomObjectsApi(api)
            policy = objects.get_cluster_custom_object(
                crds.GROUP, crds.VERSION, "imagepolicies", name
            )
        conditions = (policy.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Compiled" and c["status"] == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise AssertionError(f"ImagePolicy {name} did not compile: {conditions}")


@pytest.fixture(scope="module")
def images(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    operator: localoperator.LocalOperator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Images]:
    del operator
    workdir = tmp_path_factory.mktemp("tenant-images")
    digests = {}
    for repository, tag in (("signed", "v1"), ("signed", "v2"), ("unsigned", "v1")):
        digest = peers.push_image(registry, f"{SUITE}/{repository}", tag, workdir=workdir)
        if repository == "signed":
            sign_v3(signers["alice"], f"{registry.host}/{SUITE}/{repository}@{digest}")
        digests[repository, tag] = digest
    name = f"{SUITE}-{uuid.uuid4().hex[:6]}"
    kubeclients.create_muster_object(
        control_plane,
        "imagepolicies",
        "ImagePolicy",
        name,
        {
            "images": [f"{registry.host}/{SUITE}/**"],
            "namespaceSelector": {"matchLabels": {SUITE_LABEL: SUITE}},
            "authorities": [{"name": "alice", "key": {"data": signers["alice"].pem}}],
        },
    )
    _compiled(control_plane, name)
    yield Images(
        signed=registry.ref(f"{SUITE}/signed", "v1"),
        signed_digest=digests["signed", "v1"],
        other=registry.ref(f"{SUITE}/signed", "v2"),
        other_digest=digests["signed", "v2"],
        unsigned=registry.ref(f"{SUITE}/unsigned", "v1"),
    )
    with kubeclients.admin(control_plane) as api:
        client.CustomObjectsApi(api).delete_cluster_custom_object(
            crds.GROUP, crds.VERSION, "imagepolicies", name
        )


@pytest.fixture(scope="module")
def tenant(control_plane: controlplane.ControlPlane, images: Images) -> tenants.Tenant:
    del images
    namespace = kubeclients.namespace(control_plane, "tenant", suite_labels(SUITE))
    return tenants.tenant(control_plane, namespace)


@contextlib.contextmanager
def _as(tenant: tenants.Tenant) -> Iterator[tuple[Any, Any]]:
    """The tenant's clients: (custom objects, core)."""
    with contextlib.closing(tenant.api()) as api:
        yield client.CustomObjectsApi(api), client.CoreV1Api(api)


def _refused(call: Callable[[], Any], status: int = 403) -> str:
    with pytest.raises(client.ApiException) as raised:
        call()
    assert raised.value.status == status, raised.value.body
    message: str = json.loads(raised.value.body or "{}")["message"]
    return message


def _unsigned_refusal(
    message: str, place: str | workloadkinds.WorkloadKind, images: Images
) -> None:
    """What Muster says: the place, the image pinned by the mutating webhook, and why."""
    subject = place if isinstance(place, str) else place.subject
    assert subject in message, message
    assert f"image '{images.unsigned}@sha256:" in message, message
    assert "no signature found" in message, message


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


# Kinds whose API refuses any change of the image after creation, before Muster is asked:
# a Job's template (suspended or not), a TrainJob's trainer and its runtime patches' volumes
# (CEL ``self == oldSelf``). A suspended JobSet's template may change: Muster judges it.
_IMMUTABLE = {
    "Job": "field is immutable",
    "TrainJob (trainer image)": "field is immutable",
    "TrainJob (runtime patch)": "field is immutable",
}


@pytest.mark.parametrize("kind", workloadkinds.KINDS, ids=lambda k: k.label)
def test_every_kind_refuses_unsigned_and_admits_signed_on_create_and_update(
    kind: workloadkinds.WorkloadKind, tenant: tenants.Tenant, images: Images
) -> None:
    name = _slug(kind.label)
    namespace = tenant.namespace

    def create(image: str, suffix: str = "") -> Any:
        body = kind.object(f"{name}{suffix}", image, images.signed)
        return custom.create_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, body
        )

    def update(image: str) -> Any:
        swap = [{"op": "replace", "path": kind.pointer, "value": image}]
        return custom.patch_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, name, swap, _content_type=JSON_PATCH
        )

    with _as(tenant) as (custom, _):
        _unsigned_refusal(_refused(lambda: create(images.unsigned, "-unsigned")), kind, images)
        created = create(images.signed)
        assert workloadkinds.resolve(created, kind.pointer) == (
            f"{images.signed}@{images.signed_digest}"
        )
        immutable = _IMMUTABLE.get(kind.label)
        if immutable is None:
            _unsigned_refusal(_refused(lambda: update(images.unsigned)), kind, images)
            updated = update(images.other)
            assert workloadkinds.resolve(updated, kind.pointer) == (
                f"{images.other}@{images.other_digest}"
            )
        else:  # refused by the apiserver whatever the image, signed or not
            for image in (images.unsigned, images.other):
                assert immutable in _refused(functools.partial(update, image), 422)
            stored = custom.get_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, name
            )
            assert workloadkinds.resolve(stored, kind.pointer) == (
                f"{images.signed}@{images.signed_digest}"
            )


def _pod(name: str, image: str) -> dict[str, Any]:
    # No node carries this label: the pod stays Pending, its spec still open to updates.
    return {
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "main", "image": image}],
            "nodeSelector": {"muster-e2e.dev/no-such-node": "true"},
        },
    }


def test_a_pods_image_swapped_on_update_is_refused(tenant: tenants.Tenant, images: Images) -> None:
    with _as(tenant) as (_, core):
        core.create_namespaced_pod(tenant.namespace, _pod("swap", images.signed))
        swap = {"spec": {"containers": [{"name": "main", "image": images.unsigned}]}}
        message = _refused(
            lambda: core.patch_namespaced_pod(
                "swap", tenant.namespace, swap, _content_type=STRATEGIC
            )
        )
        _unsigned_refusal(message, 'container "main"', images)
        again = {"spec": {"containers": [{"name": "main", "image": images.other}]}}
        patched = core.patch_namespaced_pod(
            "swap", tenant.namespace, again, _content_type=STRATEGIC
        )
    assert patched.spec.containers[0].image == f"{images.other}@{images.other_digest}"


def test_an_ephemeral_container_is_judged_like_any_other(
    tenant: tenants.Tenant, images: Images
) -> None:
    """``kubectl debug`` patches the pods/ephemeralcontainers subresource."""

    def debug(container: str, image: str) -> Any:
        body = {
            "spec": {
                "ephemeralContainers": [
                    {"name": container, "image": image, "targetContainerName": "main"}
                ]
            }
        }
        return core.patch_namespaced_pod_ephemeralcontainers(
            "debugged", tenant.namespace, body, _content_type=STRATEGIC
        )

    with _as(tenant) as (_, core):
        core.create_namespaced_pod(tenant.namespace, _pod("debugged", images.signed))
        message = _refused(lambda: debug("shell", images.unsigned))
        _unsigned_refusal(message, 'ephemeral container "shell"', images)
        patched = debug("tools", images.other)
    assert [(c.name, c.image) for c in patched.spec.ephemeral_containers] == [
        ("tools", f"{images.other}@{images.other_digest}")
    ]
