"""A tenant allowed to patch its own Namespace cannot switch Muster off for itself.

Through the real apiserver, with the namespace guard installed exactly as the chart renders it
(``helm template``; a protected label of the tenant's), and a ``muster run`` of its own that
judges the tenant's pods and records namespace mode changes. The tenant (tests/tenants.py: a
ServiceAccount with ``patch`` on its own Namespace and the usual workload rights) tries every
way out of enforcement; each is refused with a message naming the label and who may change it,
an unsigned image is still denied afterwards, raising enforcement works, and the very same
changes by a member of the managers group succeed. Every attempt, allowed or refused, becomes
an Event on the Namespace and a count in ``muster_namespace_mode_changes_total``, awaited.

The guard binds every namespace while this module runs (the control plane is shared by the
session, but tests run one at a time and everyone else labels namespaces as ``system:masters``,
a manager); it is removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from kubernetes import client
from prometheus_client import parser

from muster.app import localoperator, webhookconfigs
from muster.guards.rules import namespaces as namespaceguard
from muster.kernel import crds
from muster.platform import controlplane, kubesetup, tools
from tests import kubeclients, peers, tenants
from tests.e2e.suites import suite_operator
from tests.integration import docblocks
from tests.integration.chart import rendering
from tests.integration.images.conftest import Signer

pytestmark = pytest.mark.e2e

ENFORCE, IGNORE = "muster.dev/enforce", "muster.dev/ignore"
UNCOVERED = "muster.dev/uncovered-images"
TIER = "team.example/tier"  # a label the platform's policies select namespaces by: protected
SUITE_LABEL = "muster-e2e.dev/namespace-guard"
OWN_NAMESPACE = "muster-guard-e2e"
CONFIGURATION = "namespace-guard-e2e.muster.dev"
SETTINGS = namespaceguard.GuardSettings(protected_labels=(TIER,))
MANAGERS = "Only namespace managers may: groups system:masters, muster:namespace-managers"

_T = TypeVar("_T")


def eventually(probe: Callable[[], _T | None], what: str, timeout: float = 30) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


# -- the guard as the chart renders it, and an operator of this module's own ----------------


@pytest.fixture(scope="module")
def chart_guard(control_plane: controlplane.ControlPlane) -> Iterator[dict[str, Any]]:
    rendered = rendering.template(
        "--show-only=templates/guard/namespace-guard.yaml",
        f"--set=namespaceGuard.protectedLabels={{{TIER}}}",
    )
    docs = rendering.documents(rendered)
    policy = rendering.one(docs, "ValidatingAdmissionPolicy")
    binding = rendering.one(docs, "ValidatingAdmissionPolicyBinding")
    # What the chart renders is what muster.guards.rules.namespaces decides with.
    assert policy["spec"] == namespaceguard.policy_spec(SETTINGS)
    assert binding["spec"]["validationActions"] == ["Deny"]
    probe = _probe(control_plane)
    with kubeclients.admin(control_plane) as api:
        admission: Any = client.AdmissionregistrationV1Api(api)
        kubesetup.apply_admission_policy(api, policy)
        kubesetup.apply_admission_policy(api, binding)
        try:
            yield policy
        finally:
            admission.delete_validating_admission_policy_binding(binding["metadata"]["name"])
            admission.delete_validating_admission_policy(policy["metadata"]["name"])
            # The apiserver lets go of a policy through an informer too: leave only once it
            # has, so no later test meets it.
            eventually(lambda: not probe(), "the namespace guard to be gone")


def _probe(plane: controlplane.ControlPlane) -> Callable[[], bool]:
    """Whether a user who may patch a namespace of its own is refused ``muster.dev/ignore``."""
    name = f"guard-probe-{uuid.uuid4().hex[:6]}"
    with kubeclients.admin(plane) as api:
        kubesetup.ensure_namespace(api, name)
    patch = {
        "apiGroups": [""],
        "resources": ["namespaces"],
        "resourceNames": [name],
        "verbs": ["patch"],
    }
    kubeclients.bind_cluster_role(plane, name, [patch], [kubeclients.user(name)])

    def refused() -> bool:
        with kubeclients.admin(plane) as api:
            api.set_default_header("Impersonate-User", name)
            try:
                client.CoreV1Api(api).patch_namespace(
                    name, {"metadata": {"labels": {IGNORE: "true"}}}, dry_run="All"
                )
            except client.ApiException as error:
                assert error.status == 403, error.body
                return True
        return False

    return refused


def _select(hook: dict[str, Any]) -> None:
    """Pod webhooks: the real opt-in selector, narrowed to this module's namespaces. The
    record of namespace changes stays unscoped (a tenant could remove a scoping label)."""
    if hook["name"] == webhookconfigs.NAMESPACE_MODES:
        return
    hook["namespaceSelector"]["matchExpressions"].append({"key": SUITE_LABEL, "operator": "Exists"})


@pytest.fixture(scope="module")
def guard_operator(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    chart_guard: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    with suite_operator(
        control_plane,
        configuration=CONFIGURATION,
        own_namespace=OWN_NAMESPACE,
        workdir=tmp_path_factory.mktemp("muster-namespace-guard"),
        select=_select,
        extra_args=(f"--insecure-registry={registry.host}", f"--protected-namespace-label={TIER}"),
        namespace_guard=SETTINGS,
    ) as operator:
        yield operator


@pytest.fixture(scope="module")
def unsigned_image(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """An image nobody signed, which an ImagePolicy of this module's namespaces covers."""
    workdir = tmp_path_factory.mktemp("guard-images")
    digest = peers.push_image(registry, "guard-e2e/app", "v1", workdir=workdir)
    name = f"guard-e2e-{uuid.uuid4().hex[:6]}"
    spec = {
        "images": [f"{registry.host}/guard-e2e/**"],
        "namespaceSelector": {"matchExpressions": [{"key": SUITE_LABEL, "operator": "Exists"}]},
        "authorities": [{"name": "alice", "key": {"data": signers["alice"].pem}}],
    }
    with kubeclients.admin(control_plane) as api:
        objects: Any = client.CustomObjectsApi(api)
        kubeclients.create_cluster_object(objects, "imagepolicies", "ImagePolicy", name, spec)

        def compiled() -> bool:
            found = objects.get_cluster_custom_object(
                crds.GROUP, crds.VERSION, "imagepolicies", name
            )
            conditions = (found.get("status") or {}).get("conditions") or []
            return any(c.get("type") == "Compiled" and c["status"] == "True" for c in conditions)

        try:
            eventually(compiled, f"ImagePolicy {name} to compile")
            yield f"{registry.host}/guard-e2e/app@{digest}"
        finally:
            objects.delete_cluster_custom_object(crds.GROUP, crds.VERSION, "imagepolicies", name)


INITIAL = {ENFORCE: "true", TIER: "gold", SUITE_LABEL: "tenant"}


@pytest.fixture
def tenant(
    control_plane: controlplane.ControlPlane, guard_operator: localoperator.LocalOperator
) -> tenants.Tenant:
    namespace = kubeclients.namespace(control_plane, "tenant", INITIAL)
    made = tenants.tenant(control_plane, namespace)
    # The apiserver takes the policy up through an informer: wait until it refuses (dry runs
    # are refused like the real thing and change and record nothing).
    with contextlib.closing(made.api()) as api:
        core: Any = client.CoreV1Api(api)

        def bites() -> bool:
            try:
                core.patch_namespace(
                    namespace, {"metadata": {"labels": {IGNORE: "true"}}}, dry_run="All"
                )
            except client.ApiException as error:
                return error.status == 403
            return False

        eventually(bites, "the namespace guard to take effect")
    return made


# -- what a tenant tries ----------------------------------------------------------------------

# Each way out of enforcement: the labels patch, and the (from, to) modes it would make.
ESCAPES: dict[str, tuple[dict[str, str | None], tuple[str, str]]] = {
    "remove muster.dev/enforce": ({ENFORCE: None}, ("enforce", "off")),
    "downgrade to warn": ({ENFORCE: "warn"}, ("enforce", "warn")),
    "set it to a value no webhook selects": ({ENFORCE: "false"}, ("enforce", "off")),
    "add muster.dev/ignore=true": ({IGNORE: "true"}, ("enforce", "ignored")),
    "let uncovered images in": ({UNCOVERED: "allow"}, ("enforce", "enforce")),
    "change a protected label": ({TIER: "bronze"}, ("enforce", "enforce")),
    "remove a protected label": ({TIER: None}, ("enforce", "enforce")),
}


def _after(patch: dict[str, str | None]) -> dict[str, str]:
    labels = dict(INITIAL)
    for key, value in patch.items():
        if value is None:
            labels.pop(key, None)
        else:
            labels[key] = value
    return labels


def _labels(plane: controlplane.ControlPlane, namespace: str) -> dict[str, str]:
    with kubeclients.admin(plane) as api:
        found = client.CoreV1Api(api).read_namespace(namespace).metadata.labels or {}
    return {k: v for k, v in found.items() if k != "kubernetes.io/metadata.name"}


def _events(plane: controlplane.ControlPlane, namespace: str, reason: str) -> list[dict[str, Any]]:
    with kubeclients.admin(plane) as api:
        answer = client.EventsV1Api(api).list_namespaced_event(namespace, _preload_content=False)
    return [
        event
        for event in json.loads(answer.data)["items"]
        if event.get("reason") == reason
        and event.get("reportingController") == "muster.dev/operator"
    ]


def _changes(operator: localoperator.LocalOperator) -> dict[tuple[str, str, str], float]:
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.labels["from"], sample.labels["to"], sample.labels["outcome"]): sample.value
        for family in parser.text_string_to_metric_families(text)
        if family.name == "muster_namespace_mode_changes"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def _forbidden(call: Callable[[], object]) -> str:
    with pytest.raises(client.ApiException) as raised:
        call()
    assert raised.value.status == 403, raised.value.body
    return str(json.loads(raised.value.body)["message"])


def test_a_tenant_cannot_lower_its_namespace_enforcement(
    control_plane: controlplane.ControlPlane,
    guard_operator: localoperator.LocalOperator,
    unsigned_image: str,
    tenant: tenants.Tenant,
) -> None:
    namespace = tenant.namespace
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    before = _changes(guard_operator)
    for what, (patch, _) in ESCAPES.items():
        message = _forbidden(lambda patch=patch: tenant.patch_namespace_labels(patch))
        expected = namespaceguard.decide(
            namespace, INITIAL, _after(patch), username=tenant.username, groups=groups,
            settings=SETTINGS,
        )  # fmt: skip
        assert expected.refused, what
        assert message.endswith(f"denied request: {expected.message}"), (what, message)
        label = next(iter(patch))
        assert label in message and MANAGERS in message, (what, message)
    assert _labels(control_plane, namespace) == INITIAL  # nothing changed

    # The real kubectl, as the tenant would type it: the same refusal, readable.
    with contextlib.closing(tenant.api()) as api:
        token = api.configuration.api_key["BearerToken"]
    kubectl = subprocess.run(
        [
            str(tools.find("kubectl")),
            f"--server={control_plane.url}",
            f"--certificate-authority={control_plane.state.ca_file}",
            f"--token={token}",
            "label",
            "namespace",
            namespace,
            f"{ENFORCE}-",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert kubectl.returncode == 1
    assert (
        f"denied request: muster: {tenant.username} may not lower the enforcement of namespace "
        f"{namespace}: {ENFORCE} from 'true' to (unset). {MANAGERS}; users (none)"
    ) in kubectl.stderr
    # docs/security.md shows this very message (for a namespace team-a and its CI account).
    (documented,) = docblocks.named("real", "tests/e2e/security/test_tenant_namespace.py")
    ours = {"system:serviceaccount:team-a:ci": tenant.username, "team-a": namespace}
    assert docblocks.matches(documented, kubectl.stderr, ours) == ""

    # Still enforcing: an image nobody signed is denied to the tenant.
    with contextlib.closing(tenant.api()) as api:
        pod = kubeclients.pod("unsigned", unsigned_image)
        message = _forbidden(lambda: client.CoreV1Api(api).create_namespaced_pod(namespace, pod))
    assert f"image '{unsigned_image}'" in message, message

    # Every attempt is on record: a Warning Event on the Namespace and the metric, per attempt.
    wanted = {
        namespaceguard.notice(
            namespaceguard.decide(
                namespace, INITIAL, _after(patch), username=tenant.username, groups=groups,
                settings=SETTINGS,
            ),
            OWN_NAMESPACE,
        ).note
        for patch, _ in ESCAPES.values()
    }  # fmt: skip

    def recorded() -> list[dict[str, Any]] | None:
        found = _events(control_plane, namespace, "NamespaceModeChangeRefused")
        return found if wanted <= {event["note"] for event in found} else None

    events = eventually(recorded, "a NamespaceModeChangeRefused Event per attempt")
    assert all(event["type"] == "Warning" for event in events)
    assert all(event["note"].endswith(": refused") for event in events)
    expected_counts: dict[tuple[str, str, str], int] = {}
    for _, (from_, to) in ESCAPES.values():
        key = (from_, to, "refused")
        expected_counts[key] = expected_counts.get(key, 0) + 1
    expected_counts[("enforce", "off", "refused")] += 1  # kubectl's attempt

    def counted() -> bool:
        after = _changes(guard_operator)
        return all(
            after.get(key, 0) - before.get(key, 0) >= count
            for key, count in expected_counts.items()
        )

    eventually(counted, "muster_namespace_mode_changes_total to count every attempt")


def test_raising_enforcement_is_allowed_and_recorded(
    control_plane: controlplane.ControlPlane,
    guard_operator: localoperator.LocalOperator,
    tenant: tenants.Tenant,
) -> None:
    namespace = tenant.namespace
    with kubeclients.admin(control_plane) as api:  # a manager sets warn, the tenant raises it
        client.CoreV1Api(api).patch_namespace(
            namespace, {"metadata": {"labels": {ENFORCE: "warn"}}}
        )
    before = _changes(guard_operator)
    tenant.patch_namespace_labels({ENFORCE: "true"})
    assert _labels(control_plane, namespace)[ENFORCE] == "true"
    note = f"{tenant.username} changed namespace {namespace} from warn to enforce"
    eventually(
        lambda: [
            e
            for e in _events(control_plane, namespace, "NamespaceModeChanged")
            if e["note"] == note and e["type"] == "Normal"
        ],
        "the NamespaceModeChanged Event",
    )
    key = ("warn", "enforce", "allowed")
    eventually(
        lambda: _changes(guard_operator).get(key, 0) > before.get(key, 0), "the allowed count"
    )


def _manager(plane: controlplane.ControlPlane, namespace: str) -> client.ApiClient:
    """Alice, a member of the managers group, with RBAC to patch this one namespace."""
    role = f"manager-{namespace}"
    this_namespace = {
        "apiGroups": [""],
        "resources": ["namespaces"],
        "resourceNames": [namespace],
        "verbs": ["get", "patch", "update"],
    }
    kubeclients.bind_cluster_role(plane, role, [this_namespace], [kubeclients.user("alice")])
    api = kubeclients.admin(plane)
    api.set_default_header("Impersonate-User", "alice")
    api.set_default_header("Impersonate-Group", namespaceguard.MANAGER_GROUP)
    return api


def test_the_same_changes_by_a_namespace_manager_succeed(
    control_plane: controlplane.ControlPlane,
    guard_operator: localoperator.LocalOperator,
    tenant: tenants.Tenant,
) -> None:
    namespace = tenant.namespace
    before = _changes(guard_operator)
    with contextlib.closing(_manager(control_plane, namespace)) as api:
        core: Any = client.CoreV1Api(api)
        for what, (patch, _) in ESCAPES.items():
            core.patch_namespace(namespace, {"metadata": {"labels": patch}})
            assert _labels(control_plane, namespace) == _after(patch), what
            # Back to the start, as the admin (a manager too: recorded, allowed).
            reset = {key: INITIAL.get(key) for key in patch}
            with kubeclients.admin(control_plane) as admin:
                client.CoreV1Api(admin).patch_namespace(namespace, {"metadata": {"labels": reset}})
    notes = {
        event["note"]
        for event in eventually(
            lambda: (
                [
                    e
                    for e in _events(control_plane, namespace, "NamespaceModeChanged")
                    if e["note"].startswith("alice changed")
                ]
                or None
            ),
            "NamespaceModeChanged Events",
        )
    }
    for what, (_, (from_, to)) in ESCAPES.items():
        prefix = f"alice changed namespace {namespace} from {from_} to {to}"
        eventually(
            lambda prefix=prefix: any(
                e["note"].startswith(prefix)
                for e in _events(control_plane, namespace, "NamespaceModeChanged")
            ),
            f"the Event of {what}",
        )
    assert notes
    assert not [
        e
        for e in _events(control_plane, namespace, "NamespaceModeChangeRefused")
        if "alice" in e["note"]
    ]

    def counted() -> bool:
        after = _changes(guard_operator)
        return all(
            after.get((from_, to, "allowed"), 0) > before.get((from_, to, "allowed"), 0)
            for _, (from_, to) in ESCAPES.values()
        )

    eventually(counted, "the allowed changes in muster_namespace_mode_changes_total")


def test_creating_a_namespace_outside_enforcement_is_refused(
    control_plane: controlplane.ControlPlane,
    guard_operator: localoperator.LocalOperator,
) -> None:
    """A user who may create namespaces (tenants here cannot) may create one without the
    labels, or opted in, but not one that opts out; the refusal is recorded in Muster's own
    namespace, since the one asked for never exists. A manager may, and that is recorded on
    the new namespace."""
    role = f"creator-{uuid.uuid4().hex[:6]}"
    create = {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["create"]}
    kubeclients.bind_cluster_role(control_plane, role, [create], [kubeclients.user(role)])
    creator = kubeclients.admin(control_plane)
    creator.set_default_header("Impersonate-User", role)
    with contextlib.closing(creator):
        core: Any = client.CoreV1Api(creator)
        name = f"{role}-out"
        body = {"metadata": {"name": name, "labels": {ENFORCE: "true", IGNORE: "true"}}}
        message = _forbidden(lambda: core.create_namespace(body))
        assert f"{IGNORE} set to 'true'" in message and MANAGERS in message
        core.create_namespace({"metadata": {"name": f"{role}-plain"}})
        core.create_namespace({"metadata": {"name": f"{role}-in", "labels": {ENFORCE: "true"}}})
    eventually(
        lambda: [
            e
            for e in _events(control_plane, OWN_NAMESPACE, "NamespaceModeChangeRefused")
            if e["note"].startswith(f"{role} tried to change namespace {name} from off to ignored")
        ],
        "the refused CREATE's Event in Muster's namespace",
    )
    ignored = f"{role}-ignored"
    with kubeclients.admin(control_plane) as api:  # system:masters: a manager
        client.CoreV1Api(api).create_namespace(
            {"metadata": {"name": ignored, "labels": {IGNORE: "true"}}}
        )
    note = (
        f"{controlplane.ADMIN_USER} changed namespace {ignored} from off to ignored "
        f"({IGNORE} set to 'true')"
    )
    eventually(
        lambda: [
            e for e in _events(control_plane, ignored, "NamespaceModeChanged") if e["note"] == note
        ],
        "the manager's CREATE's Event on the new namespace",
    )
    # Creating a namespace in a mode changes nothing: no Event on it.
    assert not _events(control_plane, f"{role}-in", "NamespaceModeChanged")


def test_a_tenant_cannot_touch_the_guard_itself(
    control_plane: controlplane.ControlPlane,
    chart_guard: dict[str, Any],
    tenant: tenants.Tenant,
) -> None:
    """The policy and its binding are cluster-scoped: a tenant's RBAC cannot reach them."""
    name = chart_guard["metadata"]["name"]
    with contextlib.closing(tenant.api()) as api:
        admission: Any = client.AdmissionregistrationV1Api(api)
        for call in (
            lambda: admission.delete_validating_admission_policy(name),
            lambda: admission.delete_validating_admission_policy_binding(name),
            lambda: admission.patch_validating_admission_policy(
                name, {"spec": {"failurePolicy": "Ignore"}}
            ),
            lambda: admission.patch_validating_admission_policy_binding(
                name, {"spec": {"validationActions": ["Audit"]}}
            ),
            lambda: admission.create_validating_admission_policy_binding(
                {
                    "metadata": {"name": "mine"},
                    "spec": {"policyName": "x", "validationActions": ["Deny"]},
                }
            ),
            lambda: client.CoreV1Api(api).delete_namespace(tenant.namespace),
        ):
            _forbidden(call)
    with kubeclients.admin(control_plane) as api:
        live = client.AdmissionregistrationV1Api(api).read_validating_admission_policy(name)
    assert live.spec.failure_policy == "Fail"
