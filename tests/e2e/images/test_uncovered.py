"""No image walks around the policies: through the real apiserver, as a tenant would try.

A tenant ServiceAccount with ordinary rights (tests/tenants.py) creates pods in an enforcing
namespace. A pinned image that no ImagePolicy covers is denied (``ImageNotCovered``), and so is
the test registry (``127.0.0.1:PORT``, which a policy covers) named as ``localhost:PORT``.
What happens to uncovered images follows ``muster run --uncovered-images`` and the namespace
label ``muster.dev/uncovered-images``. A static-pass ImagePolicy admits its images unsigned but
pinned, and says so every time (an Event and a metric); it admits no tag.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from muster.app import localoperator
from muster.cli import common
from muster.images.rules import policies as imagepolicies
from muster.platform import controlplane
from tests import kubeclients, peers, tenants
from tests.checkcli import muster_check
from tests.e2e.images.conftest import SELECT_LABEL
from tests.e2e.images.test_image_admission import compiled_condition, create_policy, delete_policy
from tests.e2e.suites import suite_operator
from tests.integration import docblocks
from tests.integration.images.conftest import Signer, sign_v3

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("image_operator")]

RUN = uuid.uuid4().hex[:6]
RUN_LABEL = "muster-e2e.dev/uncovered"  # the namespaces of this module, for its policies
WARN_LABEL = "muster-e2e.dev/uncovered-warn"  # judged by the operator that warns by default

_T = TypeVar("_T")


def eventually(probe: Callable[[], _T | None], what: str, timeout: float = 30) -> _T:
    deadline = time.monotonic() + timeout
    while (value := probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return value


def alias(host: str) -> str:
    """The test registry under its other name: the same registry, another host name."""
    address, _, port = host.partition(":")
    assert address == "127.0.0.1", host
    return f"localhost:{port}"


def namespace(plane: controlplane.ControlPlane, **labels: str) -> tenants.Tenant:
    """A fresh namespace of this module's policies, and its tenant."""
    name = kubeclients.namespace(plane, "uncovered", {RUN_LABEL: RUN, **labels})
    return tenants.tenant(plane, name)


def pod(image: str, name: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name or f"p-{uuid.uuid4().hex[:6]}"},
        "spec": {"containers": [{"name": "main", "image": image}]},
    }


def create(tenant: tenants.Tenant, body: dict[str, Any], *, dry_run: bool = False) -> Any:
    with contextlib.closing(tenant.api()) as api:
        return client.CoreV1Api(api).create_namespaced_pod(
            tenant.namespace, body, **({"dry_run": "All"} if dry_run else {})
        )


def denial(tenant: tenants.Tenant, body: dict[str, Any]) -> str:
    with pytest.raises(client.ApiException) as raised:
        create(tenant, body)
    assert raised.value.status == 403, raised.value.body
    return str(json.loads(raised.value.body)["message"])


def admitted_when_ready(tenant: tenants.Tenant, body: dict[str, Any]) -> Any:
    """Create ``body`` once a dry run passes: every operator has then compiled the policies
    this module just made (the first to compile writes the status, not necessarily ours)."""

    def probe() -> bool | None:
        try:
            create(tenant, body, dry_run=True)
        except client.ApiException as error:
            if error.status != 403:
                raise
            return None
        return True

    eventually(probe, f"pod {body['metadata']['name']} to be admitted")
    return create(tenant, body)


def events(plane: controlplane.ControlPlane, namespace: str, reason: str) -> list[dict[str, Any]]:
    with kubeclients.admin(plane) as api:
        response = client.EventsV1Api(api).list_namespaced_event(namespace, _preload_content=False)
    return [e for e in json.loads(response.data)["items"] if e.get("reason") == reason]


def passed_unsigned(operator: localoperator.LocalOperator, policy: str, namespace: str) -> float:
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "muster_images_passed_unsigned_total"
        and sample.labels == {"policy": policy, "resource_namespace": namespace}
    )


@pytest.fixture(scope="module")
def images(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """Images of this run (``repo@digest`` on the registry's own name), and the policies over
    them, which apply only to this module's namespaces: alice signs ``signed/``; ``vendor/``
    passes unsigned (and is pinned); ``vendor-tags/`` passes unsigned and is not pinned."""
    workdir = tmp_path_factory.mktemp("uncovered")
    prefix = f"uncovered-{RUN}"
    found = {
        name: f"{registry.host}/{prefix}/{name}@"
        + peers.push_image(registry, f"{prefix}/{name}", "v1", workdir=workdir)
        for name in ("signed/app", "nobody/app", "vendor/sidecar", "vendor-tags/init")
    }
    sign_v3(signers["alice"], found["signed/app"])
    selector = {"matchLabels": {RUN_LABEL: RUN}}
    policies = {
        f"uncovered-signed-{RUN}": {
            "images": [f"{registry.host}/{prefix}/signed/**"],
            "authorities": [{"name": "alice", "key": {"data": signers["alice"].pem}}],
        },
        f"uncovered-pass-{RUN}": {
            "images": [f"{registry.host}/{prefix}/vendor/*"],
            "authorities": [{"static": {"action": "pass"}}],
        },
        f"uncovered-pass-tags-{RUN}": {
            "images": [f"{registry.host}/{prefix}/vendor-tags/*"],
            "pinDigests": False,
            "authorities": [{"static": {"action": "pass"}}],
        },
    }
    for name, spec in policies.items():
        create_policy(control_plane, name, {**spec, "namespaceSelector": selector})
    try:
        for name in policies:
            assert compiled_condition(control_plane, name)["status"] == "True"
        yield {"prefix": prefix, **found}
    finally:
        for name in policies:
            delete_policy(control_plane, name)


def test_a_pinned_image_no_policy_covers_is_denied(
    control_plane: controlplane.ControlPlane, images: dict[str, str]
) -> None:
    tenant = namespace(control_plane, **{SELECT_LABEL: "enforce"})
    admitted_when_ready(tenant, pod(images["signed/app"]))  # the policies are in force
    image = images["nobody/app"]
    message = denial(tenant, pod(image))
    assert (
        f"denied the request: muster: container \"main\": image '{image}' is not covered by "
        f"any ImagePolicy for namespace '{tenant.namespace}'"
    ) in message
    assert f"/{images['prefix']}/signed/** (uncovered-signed-{RUN})" in message
    assert "Uncovered images are denied (the operator's default)" in message
    (event,) = eventually(
        lambda: events(control_plane, tenant.namespace, "ImageNotCovered") or None,
        "the ImageNotCovered Event on the namespace",
    )
    assert (event["action"], event["regarding"]["kind"]) == ("Denied", "Namespace")


def test_the_same_registry_under_another_name_is_denied(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    images: dict[str, str],
    tmp_path: Path,
) -> None:
    tenant = namespace(control_plane, **{SELECT_LABEL: "enforce"})
    signed = images["signed/app"]
    created = admitted_when_ready(tenant, pod(signed))
    assert created.spec.containers[0].image == signed
    aliased = signed.replace(registry.host, alias(registry.host), 1)
    message = denial(tenant, pod(aliased))
    assert f"image '{aliased}' is not covered by any ImagePolicy" in message
    assert f"covers this repository as {registry.host}, another name" in message
    (documented,) = docblocks.named("real", "tests/e2e/images/test_uncovered.py")
    assert docblocks.matches(documented, message) == ""
    # muster check, reading the cluster's policies and labels, gives the same answer first.
    manifest = tmp_path / "aliased.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                **pod(aliased, name="aliased"),
                "metadata": {"name": "aliased", "namespace": tenant.namespace},
            }
        )
    )
    code, out, err = muster_check(
        "--kubeconfig", str(control_plane.kubeconfig), "--insecure-registry", registry.host,
        str(manifest),
    )  # fmt: skip
    assert code == common.EXIT_FAIL, err
    assert message.endswith(out.splitlines()[1].strip())


@pytest.mark.parametrize(("label", "outcome"), [("warn", "warned"), ("allow", "admitted")])
def test_the_namespace_label_warns_or_allows(
    control_plane: controlplane.ControlPlane,
    images: dict[str, str],
    label: str,
    outcome: str,
) -> None:
    tenant = namespace(
        control_plane, **{SELECT_LABEL: "enforce", imagepolicies.UNCOVERED_LABEL: label}
    )
    admitted_when_ready(tenant, pod(images["signed/app"]))
    created = create(tenant, pod(images["nobody/app"], name="uncovered"))
    assert created.metadata.name == "uncovered"
    if outcome == "warned":
        (event,) = eventually(
            lambda: events(control_plane, tenant.namespace, "ImageNotCovered") or None,
            "the ImageNotCovered Event on the pod",
        )
        assert (event["action"], event["regarding"]["name"]) == ("Warned", "uncovered")
        assert f"label {imagepolicies.UNCOVERED_LABEL}=warn" in event["note"]
    else:
        time.sleep(2)  # an Event, if any were coming, is posted within this
        assert events(control_plane, tenant.namespace, "ImageNotCovered") == []


@pytest.fixture(scope="module")
def warning_operator(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    """A ``muster run --uncovered-images=warn`` judging namespaces labelled WARN_LABEL."""

    def select(hook: dict[str, Any]) -> None:
        mode = hook["clientConfig"]["url"].rsplit("/", 1)[-1]
        hook["namespaceSelector"] = {"matchLabels": {WARN_LABEL: mode}}

    with suite_operator(
        control_plane,
        configuration="uncovered-warn-e2e.muster.dev",
        own_namespace="muster-uncovered-warn-e2e",
        workdir=tmp_path_factory.mktemp("muster-uncovered-warn"),
        select=select,
        extra_args=(f"--insecure-registry={registry.host}", "--uncovered-images=warn"),
    ) as operator:
        yield operator


def test_the_operator_setting_warns_and_a_namespace_label_raises_it(
    control_plane: controlplane.ControlPlane,
    images: dict[str, str],
    warning_operator: localoperator.LocalOperator,
) -> None:
    del warning_operator
    warned = namespace(control_plane, **{WARN_LABEL: "enforce"})
    admitted_when_ready(warned, pod(images["signed/app"]))
    assert create(warned, pod(images["nobody/app"], name="uncovered")).metadata.name
    (event,) = eventually(
        lambda: events(control_plane, warned.namespace, "ImageNotCovered") or None,
        "the ImageNotCovered Event",
    )
    assert (
        "Uncovered images are admitted with a warning (the operator's default)" in (event["note"])
    )
    strict = namespace(
        control_plane, **{WARN_LABEL: "enforce", imagepolicies.UNCOVERED_LABEL: "deny"}
    )
    admitted_when_ready(strict, pod(images["signed/app"]))
    message = denial(strict, pod(images["nobody/app"]))
    assert f"Uncovered images are denied (label {imagepolicies.UNCOVERED_LABEL}=deny)" in message


def test_a_static_pass_admits_its_pinned_unsigned_image_and_records_it(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    images: dict[str, str],
    image_operator: localoperator.LocalOperator,
) -> None:
    tenant = namespace(control_plane, **{SELECT_LABEL: "enforce"})
    policy = f"uncovered-pass-{RUN}"
    sidecar = images["vendor/sidecar"]
    created = admitted_when_ready(tenant, pod(sidecar, name="sidecar"))
    assert created.spec.containers[0].image == sidecar
    (event,) = eventually(
        lambda: events(control_plane, tenant.namespace, "ImagePassedUnsigned") or None,
        "the ImagePassedUnsigned Event on the pod",
    )
    assert (event["type"], event["regarding"]["name"]) == ("Warning", "sidecar")
    assert f"ImagePolicy '{policy}' (static pass)" in event["note"]
    assert passed_unsigned(image_operator, policy, tenant.namespace) >= 1
    # By tag: the mutation pins it, as for any covered image; unsigned, still pinned.
    tagged = f"{registry.host}/{images['prefix']}/vendor/sidecar:v1"
    pinned = create(tenant, pod(tagged, name="by-tag"))
    assert pinned.spec.containers[0].image == f"{tagged}@{sidecar.rsplit('@', 1)[1]}"


def test_a_static_pass_does_not_admit_an_unpinned_image(
    control_plane: controlplane.ControlPlane, registry: peers.Registry, images: dict[str, str]
) -> None:
    tenant = namespace(control_plane, **{SELECT_LABEL: "enforce"})
    admitted_when_ready(tenant, pod(images["vendor-tags/init"]))  # pinned: passes
    tagged = f"{registry.host}/{images['prefix']}/vendor-tags/init:v1"  # pinDigests: false
    message = denial(tenant, pod(tagged))
    assert f"image '{tagged}' is not pinned by digest" in message
