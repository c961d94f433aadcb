"""A guard written once as a ValidatingAdmissionPolicy (CEL) and once in Python, put to the real
kube-apiserver as the oracle: clients for a user who is no manager, a manager by group and a
manager by name; the policy installed and bound for one test; the message of a refused dry run;
and the apiserver's type check of the policy's CEL."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from kubernetes import client

from muster.guards.rules import namespaces as namespaceguard
from muster.platform import controlplane, kubesetup
from tests import kubeclients

__all__ = [
    "ALICE",
    "GITOPS",
    "IDENTITIES",
    "MALLORY",
    "Identity",
    "impersonating",
    "installed",
    "labels_patch",
    "refusals",
    "type_checking",
    "writers",
]

Identity = tuple[str, str]  # (user, group), asked as by impersonation

MALLORY: Identity = ("mallory", "developers")
ALICE: Identity = ("alice", namespaceguard.MANAGER_GROUP)  # a manager by group
GITOPS: Identity = ("gitops", "developers")  # a manager by name (the settings' manager_users)
IDENTITIES = (MALLORY, ALICE, GITOPS)


def impersonating(plane: controlplane.ControlPlane, user: str, group: str) -> client.ApiClient:
    api = kubeclients.admin(plane)
    untyped: Any = api  # the generated client's methods carry no types
    untyped.set_default_header("Impersonate-User", user)
    untyped.set_default_header("Impersonate-Group", group)
    return api


@contextlib.contextmanager
def writers(
    plane: controlplane.ControlPlane, role: str, resources: Sequence[str]
) -> Iterator[dict[Identity, Any]]:
    """A CoreV1Api for each identity, allowed by the ClusterRole ``role`` (bound to all three
    for the length of the block) to get, create, update and patch ``resources``."""
    kubeclients.bind_cluster_role(
        plane,
        role,
        [
            {
                "apiGroups": [""],
                "resources": list(resources),
                "verbs": ["get", "create", "update", "patch"],
            }
        ],
        [kubeclients.user(user) for user, _ in IDENTITIES],
    )
    clients: dict[Identity, Any] = {who: impersonating(plane, *who) for who in IDENTITIES}
    try:
        yield {who: client.CoreV1Api(api) for who, api in clients.items()}
    finally:
        for api in clients.values():
            api.close()
        with kubeclients.admin(plane) as api:
            rbac = client.RbacAuthorizationV1Api(api)
            rbac.delete_cluster_role_binding(role)
            rbac.delete_cluster_role(role)


def labels_patch(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, Any]:
    """A merge patch that turns ``before`` into exactly ``after``."""
    labels: dict[str, str | None] = {key: None for key in before if key not in after}
    labels.update(after)
    return {"metadata": {"labels": labels}}


def refusals(prefix: str) -> Callable[..., str | None]:
    """``refusal(call, *args, **kwargs)``: None when the dry run ``call`` is allowed, else the
    message of the policy whose name starts with ``prefix`` (and of no other)."""

    def refusal(call: Callable[..., object], *args: Any, **kwargs: Any) -> str | None:
        try:
            call(*args, **kwargs)
        except client.ApiException as error:
            assert error.status in (403, 422), error.body
            message = str(json.loads(error.body or "{}")["message"])
            assert f"ValidatingAdmissionPolicy '{prefix}" in message, message  # ours alone
            return message.split("denied request: ", 1)[1]
        return None

    return refusal


@contextlib.contextmanager
def installed(
    plane: controlplane.ControlPlane,
    policy: dict[str, Any],
    binding: dict[str, Any],
    probe: Callable[[], bool],
) -> Iterator[None]:
    """``policy`` and its ``binding`` for the length of the block, once ``probe`` says the
    apiserver enforces them (it takes policies up through an informer)."""
    with kubeclients.admin(plane) as api:
        admission: Any = client.AdmissionregistrationV1Api(api)
        kubesetup.apply_admission_policy(api, policy)
        kubesetup.apply_admission_policy(api, binding)
        try:
            deadline = time.monotonic() + 30
            while not probe():
                assert time.monotonic() < deadline, "the policy never took effect"
                time.sleep(0.2)
            yield
        finally:
            admission.delete_validating_admission_policy_binding(binding["metadata"]["name"])
            admission.delete_validating_admission_policy(policy["metadata"]["name"])


def type_checking(plane: controlplane.ControlPlane, policy: dict[str, Any]) -> Any:
    """The ``status.typeChecking`` the apiserver writes for ``policy`` (installed meanwhile)."""
    name = policy["metadata"]["name"]
    with kubeclients.admin(plane) as api:
        admission: Any = client.AdmissionregistrationV1Api(api)
        kubesetup.apply_admission_policy(api, policy)
        try:
            deadline = time.monotonic() + 30
            while True:
                status = admission.read_validating_admission_policy(name).status
                if status is not None and status.type_checking is not None:
                    return status.type_checking
                assert time.monotonic() < deadline, "the policy was never type-checked"
                time.sleep(0.2)
        finally:
            admission.delete_validating_admission_policy(name)
