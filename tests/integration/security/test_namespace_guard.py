"""The namespace guard, evaluated by the real kube-apiserver, decides as its Python twin.

``muster.guards.rules.namespaces`` writes the guard once, as a ValidatingAdmissionPolicy (CEL) and
as :func:`~muster.guards.rules.namespaces.decide` (Python), which the record of namespace mode
changes uses to tell allowed from refused. Here the apiserver is the oracle: for every pair of
label sets (before, after) from a matrix, and for a user who is no manager, a manager by group
and a manager by name, in both enforcement scopes, a server-side dry run of the UPDATE (and of
a CREATE with the "after" labels) is allowed exactly when ``decide`` allows it, and refused
with exactly ``decide``'s message.

The record's webhook is checked the same way: its match conditions, on a webhook that points
where nothing listens (``failurePolicy: Fail``), make the apiserver call it for every change
worth recording, and never for a dry run.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from kubernetes import client

from muster.app import webhookconfigs
from muster.guards.rules import namespaces as namespaceguard
from muster.platform import controlplane, kubesetup, processes
from tests import guardmatrix, kubeclients
from tests.guardmatrix import GITOPS, IDENTITIES, MALLORY, Identity, labels_patch

pytestmark = pytest.mark.integration

ENFORCE, IGNORE = "muster.dev/enforce", "muster.dev/ignore"
UNCOVERED = "muster.dev/uncovered-images"
TIER = "team.example/tier"  # a protected label
LABEL_SETS: tuple[dict[str, str], ...] = (
    {},
    {ENFORCE: "true"},
    {ENFORCE: "enforce"},
    {ENFORCE: "warn"},
    {ENFORCE: "TRUE"},  # not a value the webhooks select: no mode at all
    {ENFORCE: "true", IGNORE: "true"},
    {IGNORE: "false"},
    {ENFORCE: "warn", TIER: "gold"},
    {ENFORCE: "true", TIER: ""},
    {ENFORCE: "true", UNCOVERED: "warn"},
    {UNCOVERED: "Allow"},  # the image gate reads it as allow
    {UNCOVERED: "typo"},  # and this as deny
)
# Both scopes; the operator's default for unlabelled namespaces differs between them.
SETTINGS = {
    scope: namespaceguard.GuardSettings(
        manager_users=("gitops",),
        protected_labels=(TIER,),
        cluster_scope=scope == "cluster",
        uncovered_default="deny" if scope == "cluster" else "warn",
    )
    for scope in ("namespaced", "cluster")
}


_refusal = guardmatrix.refusals("guard-matrix-")


@contextlib.contextmanager
def installed(
    plane: controlplane.ControlPlane,
    settings: namespaceguard.GuardSettings,
    names: list[str],
    probe: Callable[[], bool],
) -> Iterator[None]:
    """The guard for ``settings``, bound only to the namespaces ``names`` (the control plane
    is shared by the session); waits until ``probe`` says the apiserver enforces it."""
    name = f"guard-matrix-{uuid.uuid4().hex[:6]}"
    bound = namespaceguard.binding(name)
    bound["spec"]["matchResources"] = {
        "resourceRules": [
            {
                "apiGroups": [""],
                "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["namespaces", "namespaces/*"],
                "resourceNames": names,
            }
        ]
    }
    with guardmatrix.installed(plane, namespaceguard.policy(settings, name), bound, probe):
        yield


@pytest.fixture(scope="module")
def writers(control_plane: controlplane.ControlPlane) -> Iterator[dict[Identity, Any]]:
    """Clients for each identity, allowed by RBAC to create and update namespaces."""
    role = f"guard-matrix-{uuid.uuid4().hex[:6]}"
    with guardmatrix.writers(control_plane, role, ["namespaces"]) as found:
        yield found


@pytest.mark.parametrize("scope", list(SETTINGS))
def test_the_apiserver_decides_as_the_python_twin(
    control_plane: controlplane.ControlPlane,
    writers: dict[Identity, Any],
    scope: str,
) -> None:
    settings = SETTINGS[scope]
    prefix = f"guard-{scope[:4]}-{uuid.uuid4().hex[:6]}"
    existing = [f"{prefix}-{index}" for index in range(len(LABEL_SETS))]
    created = f"{prefix}-new"
    for name, labels in zip(existing, LABEL_SETS, strict=True):
        with kubeclients.admin(control_plane) as api:
            kubesetup.ensure_namespace(api, name, labels)
    mallory, gitops = writers[MALLORY], writers[GITOPS]
    ignore = {"metadata": {"labels": {IGNORE: "true"}}}  # refused in both scopes

    def bites() -> bool:
        """Ours refuses, and no other guard does (another test's, on its way out: gitops is
        a manager only here)."""
        try:
            gitops.patch_namespace(existing[1], ignore, dry_run="All")
        except client.ApiException:
            return False
        return _refusal(mallory.patch_namespace, existing[1], ignore, dry_run="All") is not None

    checked = refused = 0
    with installed(control_plane, settings, [*existing, created], bites):
        for (name, before), after, who in itertools.product(
            zip(existing, LABEL_SETS, strict=True), LABEL_SETS, IDENTITIES
        ):
            expected = namespaceguard.decide(
                name, before, after, username=who[0], groups=[who[1]], settings=settings
            )
            patch = labels_patch(before, after)
            got = _refusal(writers[who].patch_namespace, name, patch, dry_run="All")
            assert got == (expected.message or None), (scope, who, before, after)
            checked += 1
            refused += got is not None
        for after, who in itertools.product(LABEL_SETS, IDENTITIES):
            expected = namespaceguard.decide(
                created, None, after, username=who[0], groups=[who[1]], settings=settings,
                operation="CREATE",
            )  # fmt: skip
            body = {"metadata": {"name": created, "labels": after}}
            got = _refusal(writers[who].create_namespace, body, dry_run="All")
            assert got == (expected.message or None), (scope, who, "CREATE", after)
            checked += 1
            refused += got is not None
    # The matrix has both answers, for every identity that can get them.
    assert checked == len(LABEL_SETS) ** 2 * 3 + len(LABEL_SETS) * 3
    assert 0 < refused < checked


def test_the_policy_type_checks_without_warnings(control_plane: controlplane.ControlPlane) -> None:
    """The apiserver type-checks a policy's CEL against the Namespace schema and reports
    what it cannot check in ``status.typeChecking``: nothing here."""
    name = f"guard-types-{uuid.uuid4().hex[:6]}"
    settings = namespaceguard.GuardSettings(manager_users=("u",), protected_labels=(TIER,))
    checked = guardmatrix.type_checking(control_plane, namespaceguard.policy(settings, name))
    assert not checked.expression_warnings


# -- the record's match conditions ----------------------------------------------------------

RECORD_LABEL = "muster-tests.dev/record"


def _watched_differ(
    before: Mapping[str, str] | None,
    after: Mapping[str, str],
    settings: namespaceguard.GuardSettings,
) -> bool:
    watched = namespaceguard.watched_labels(settings)
    if before is None:
        return any(key in after for key in watched)
    return any(before.get(key) != after.get(key) for key in watched)


@contextlib.contextmanager
def record_probe(
    plane: controlplane.ControlPlane, marker: str, *, dry_runs: bool
) -> Iterator[None]:
    """The record's webhook entry as the chart and ``muster dev up`` register it, pointed at
    a port where nothing listens and failing closed, so a call is a refusal. A webhook cannot
    be bound by name: its objectSelector (a Namespace's own labels) keeps it to the namespaces
    labelled with ``marker``. ``dry_runs``: without the not-a-dry-run condition."""
    hook = copy.deepcopy(
        webhookconfigs.namespace_modes(
            f"https://127.0.0.1:{processes.free_port()}",
            "",
            SETTINGS["namespaced"],
            timeout_seconds=2,
        )
    )
    hook["failurePolicy"] = "Fail"
    hook["objectSelector"] = {"matchLabels": {RECORD_LABEL: marker}}
    if dry_runs:
        hook["matchConditions"] = [
            c for c in hook["matchConditions"] if c["name"] != "not-a-dry-run"
        ]
    name = f"record-{marker}.muster-tests.dev"
    manifest = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [hook],
    }
    with kubeclients.admin(plane) as api:
        admission: Any = client.AdmissionregistrationV1Api(api)
        kubesetup.apply_webhook_configuration(api, manifest)
        try:
            yield
        finally:
            admission.delete_mutating_webhook_configuration(name)


def _called(call: Callable[..., object], *args: Any, **kwargs: Any) -> bool:
    try:
        call(*args, **kwargs)
    except client.ApiException as error:
        if "failed calling webhook" in str(error.body):
            return True
        raise AssertionError(f"refused for another reason: {error.body}") from None
    return False


def test_the_record_is_sent_every_change_worth_recording(
    control_plane: controlplane.ControlPlane,
) -> None:
    settings = SETTINGS["namespaced"]
    marker = uuid.uuid4().hex[:6]
    scoped = {RECORD_LABEL: marker}
    names = [f"record-{marker}-{index}" for index in range(len(LABEL_SETS))]
    with kubeclients.admin(control_plane) as api:
        for name, labels in zip(names, LABEL_SETS, strict=True):
            kubesetup.ensure_namespace(api, name, {**labels, **scoped})
        core = client.CoreV1Api(api)
        with record_probe(control_plane, marker, dry_runs=True):
            # Wait until the apiserver calls it (configurations arrive through an informer).
            removal = labels_patch({ENFORCE: "true"}, {})
            deadline = time.monotonic() + 30
            while not _called(core.patch_namespace, names[1], removal, dry_run="All"):
                assert time.monotonic() < deadline, "the probe webhook never took effect"
                time.sleep(0.2)
            for (name, before), after in itertools.product(
                zip(names, LABEL_SETS, strict=True), LABEL_SETS
            ):
                patch = labels_patch(before, after)
                called = _called(core.patch_namespace, name, patch, dry_run="All")
                assert called == _watched_differ(before, after, settings), (before, after)
                change = namespaceguard.decide(
                    name, before, after, username="u", groups=[], settings=settings
                )
                assert called or not change.worth_recording, (before, after)
            for after in LABEL_SETS:
                body = {"metadata": {"name": f"record-{marker}-new", "labels": {**after, **scoped}}}
                called = _called(core.create_namespace, body, dry_run="All")
                assert called == _watched_differ(None, after, settings), after
        # As registered: never for a dry run, which records nothing; for the real change.
        with record_probe(control_plane, marker, dry_runs=False):
            # Real changes (each one a change, whichever went through before) until one is sent.
            values = itertools.cycle(["warn", "true"])
            deadline = time.monotonic() + 30
            while True:
                value = next(values)
                patch = {"metadata": {"labels": {ENFORCE: value}}}
                if _called(core.patch_namespace, names[1], patch):
                    break
                assert time.monotonic() < deadline, "the probe webhook never took effect"
                time.sleep(0.2)
            # The same change (the refused one was not applied), as a dry run: not sent.
            assert not _called(core.patch_namespace, names[1], patch, dry_run="All")
            assert _called(core.patch_namespace, names[1], patch)
