"""The data-marks guard, evaluated by the real kube-apiserver, decides as its Python twin.

``muster.guards.rules.datamarks`` writes the guard once, as a ValidatingAdmissionPolicy on
PersistentVolumeClaims (CEL) and as :func:`~muster.guards.rules.datamarks.decide` (Python). Here
the apiserver is the oracle: for every pair of claim label sets (before, after) from a matrix,
and for a user who is no manager, a manager by group and a manager by name, a server-side dry
run of the UPDATE (and of a CREATE with the "after" labels) is allowed exactly when ``decide``
allows it, and refused with exactly ``decide``'s message.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from kubernetes import client

from muster.guards.rules import datamarks as datamarksguard
from muster.guards.rules import namespaces as namespaceguard
from muster.kernel import datamarks
from muster.platform import controlplane
from tests import guardmatrix, kubeclients
from tests.guardmatrix import GITOPS, IDENTITIES, MALLORY, Identity, labels_patch
from tests.integration import docblocks

pytestmark = pytest.mark.integration

MARK = datamarks.NOT_MODEL_DATA_LABEL
LABEL_SETS: tuple[dict[str, str], ...] = (
    {},
    {MARK: "true"},
    {MARK: "false"},
    {MARK: "TRUE"},
    {MARK: ""},
    {MARK: "true", "app": "cache"},
    {"app": "cache"},
)
SETTINGS = namespaceguard.GuardSettings(manager_users=("gitops",))


def _claim(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}},
    }


_refusal = guardmatrix.refusals("marks-matrix-")


@contextlib.contextmanager
def installed(
    plane: controlplane.ControlPlane, namespace: str, probe: Callable[[], bool]
) -> Iterator[None]:
    """The guard, bound only to ``namespace`` (the control plane is shared by the session);
    waits until ``probe`` says the apiserver enforces it."""
    name = f"marks-matrix-{uuid.uuid4().hex[:6]}"
    bound = datamarksguard.binding(name)
    bound["spec"]["matchResources"] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    }
    with guardmatrix.installed(plane, datamarksguard.policy(SETTINGS, name), bound, probe):
        yield


@pytest.fixture(scope="module")
def writers(control_plane: controlplane.ControlPlane) -> Iterator[dict[Identity, Any]]:
    """Clients for each identity, allowed by RBAC to create and update claims."""
    resources = ["persistentvolumeclaims", "persistentvolumeclaims/status"]
    role = f"marks-matrix-{uuid.uuid4().hex[:6]}"
    with guardmatrix.writers(control_plane, role, resources) as found:
        yield found


def test_the_apiserver_decides_as_the_python_twin(
    control_plane: controlplane.ControlPlane, writers: dict[Identity, Any]
) -> None:
    namespace = kubeclients.namespace(control_plane, "marks")
    existing = [f"claim-{index}" for index in range(len(LABEL_SETS))]
    with kubeclients.admin(control_plane) as api:
        core = client.CoreV1Api(api)
        for name, labels in zip(existing, LABEL_SETS, strict=True):
            core.create_namespaced_persistent_volume_claim(namespace, _claim(name, labels))
    mallory, gitops = writers[MALLORY], writers[GITOPS]
    marking = _claim("probe", {MARK: "true"})

    def bites() -> bool:
        """Ours refuses, and no other guard does (gitops is a manager only here)."""
        try:
            gitops.create_namespaced_persistent_volume_claim(namespace, marking, dry_run="All")
        except client.ApiException:
            return False
        create = mallory.create_namespaced_persistent_volume_claim
        return _refusal(create, namespace, marking, dry_run="All") is not None

    checked = refused = 0
    with installed(control_plane, namespace, bites):
        for (name, before), after, who in itertools.product(
            zip(existing, LABEL_SETS, strict=True), LABEL_SETS, IDENTITIES
        ):
            expected = datamarksguard.decide(
                namespace, name, before, after, username=who[0], groups=[who[1]],
                settings=SETTINGS,
            )  # fmt: skip
            patch = labels_patch(before, after)
            got = _refusal(
                writers[who].patch_namespaced_persistent_volume_claim,
                name,
                namespace,
                patch,
                dry_run="All",
            )
            assert got == expected, (who, before, after)
            checked += 1
            refused += got is not None
        for after, who in itertools.product(LABEL_SETS, IDENTITIES):
            expected = datamarksguard.decide(
                namespace, "new", None, after, username=who[0], groups=[who[1]],
                settings=SETTINGS,
            )  # fmt: skip
            create = writers[who].create_namespaced_persistent_volume_claim
            got = _refusal(create, namespace, _claim("new", after), dry_run="All")
            assert got == expected, (who, "CREATE", after)
            checked += 1
            refused += got is not None
        # Labels written through the status subresource are guarded too.
        status = mallory.patch_namespaced_persistent_volume_claim_status
        got = _refusal(status, existing[0], namespace, labels_patch({}, {MARK: "true"}))
        assert got is not None
        assert f"{MARK} from (unset) to 'true'" in got
        # docs/security.md shows this very message (for a claim of team-a and its CI account).
        found = docblocks.named("real", "tests/integration/security/test_data_marks_guard.py")
        (documented,) = found
        create = mallory.create_namespaced_persistent_volume_claim
        got = _refusal(create, namespace, _claim("scratch", {MARK: "true"}), dry_run="All")
        assert got is not None
        ours = {
            "system:serviceaccount:team-a:ci": MALLORY[0],
            "team-a/": f"{namespace}/",
            "users (none)": "users gitops",
        }
        assert docblocks.matches(documented, got, ours) == ""
    assert checked == len(LABEL_SETS) ** 2 * 3 + len(LABEL_SETS) * 3
    assert 0 < refused < checked
    # Nothing a dry run refused was written: the claims keep their labels.
    with kubeclients.admin(control_plane) as api:
        core = client.CoreV1Api(api)
        for name, labels in zip(existing, LABEL_SETS, strict=True):
            claim = core.read_namespaced_persistent_volume_claim(name, namespace)
            assert (claim.metadata.labels or {}) == labels


def test_the_policy_type_checks_without_warnings(control_plane: controlplane.ControlPlane) -> None:
    """The apiserver type-checks a policy's CEL against the claim's schema and reports what it
    cannot check in ``status.typeChecking``: nothing here."""
    name = f"marks-types-{uuid.uuid4().hex[:6]}"
    checked = guardmatrix.type_checking(control_plane, datamarksguard.policy(SETTINGS, name))
    assert not checked.expression_warnings
