"""Muster's trust anchors through the real apiserver, attacked by identities that hold the RBAC
to write them: only Muster's operator, the node agent of that very Node (its attestation) and
the break-glass users may; everyone else is refused with a message that says who may.

The policies are the chart's (`helm template --show-only templates/guard/trust-anchors.yaml`,
the same as `muster dev up` installs: tests/integration/chart/test_scope_and_anchors.py), with
`nodeAgent.restrictToOwnNode=false` so that this guard alone judges the node agent. The control
plane is shared by the session: the bindings gain an objectSelector on a label only this
module's Nodes and Models carry. Every identity is a ServiceAccount with a token the apiserver
signed; the node agent's token is bound to a Pod scheduled to its Node, so the apiserver itself
adds the node's name to its user info (`authentication.kubernetes.io/node-name`).

And a Model whose status says SignatureVerified for an earlier generation of its spec is not
verified: its status written by the operator, its spec then changed by a tenant allowed to edit
Models (who cannot write status: the status subresource drops it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from muster.app import localoperator
from muster.gpu import nodeagent as nodeagent_
from muster.gpu.rules import stack as gpustack
from muster.kernel import crds
from muster.models import gate as modeladmission
from muster.models.rules import approval as modelgate
from muster.models.rules import registry as modelregistry
from muster.platform import controlplane, kubeapi, kubesetup, tools
from tests import gpuroots, kubeclients
from tests.integration import docblocks
from tests.integration.chart import rendering

pytestmark = pytest.mark.e2e

RUN = uuid.uuid4().hex[:6]
RELEASE = f"muster-anchors-{RUN}"  # the chart's full name is the release name (it has "muster")
GUARDED = "muster-e2e.dev/trust-anchors"
OMS = "sha256:" + "5a" * 32


def _user(namespace: str, account: str) -> str:
    return f"system:serviceaccount:{namespace}:{account}"


class Guard:
    """The installed policies and the identities of the module."""

    def __init__(self, plane: controlplane.ControlPlane, namespace: str) -> None:
        self.plane = plane
        self.namespace = namespace
        self.operator = _user(namespace, RELEASE)
        self.agent = _user(namespace, f"{RELEASE}-node-agent")
        self.attacker = _user(namespace, "node-patcher")
        self.breakglass = _user(namespace, "breakglass")
        self.nodes = (f"anchor-a-{RUN}", f"anchor-b-{RUN}")

    def api(self, account: str) -> client.ApiClient:
        return kubeclients.service_account(self.plane, self.namespace, account)

    def core(self, account: str) -> Any:
        return client.CoreV1Api(self.api(account))


def _rbac(plane: controlplane.ControlPlane, namespace: str) -> None:
    """Every account may write Nodes and Model status as far as RBAC goes; the model editor
    may edit Models but not their status (a tenant with spec rights)."""
    writes = ["get", "list", "create", "update", "patch"]
    roles = {
        f"anchors-{RUN}-writer": (
            [
                {"apiGroups": [""], "resources": ["nodes", "nodes/status"], "verbs": writes},
                {
                    "apiGroups": [crds.GROUP],
                    "resources": ["models", "models/status"],
                    "verbs": writes,
                },
            ],
            [RELEASE, f"{RELEASE}-node-agent", "node-patcher", "breakglass"],
        ),
        f"anchors-{RUN}-model-editor": (
            [{"apiGroups": [crds.GROUP], "resources": ["models"], "verbs": writes}],
            ["model-editor"],
        ),
    }
    for role, (rules, accounts) in roles.items():
        kubeclients.bind_cluster_role(
            plane,
            role,
            rules,
            [{"kind": "ServiceAccount", "name": a, "namespace": namespace} for a in accounts],
        )
    with kubeclients.admin(plane) as api:
        core: Any = client.CoreV1Api(api)
        for _, accounts in roles.values():
            for account in accounts:
                core.create_namespaced_service_account(namespace, {"metadata": {"name": account}})


def _policies(namespace: str, tmp_path: Path) -> list[dict[str, Any]]:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "nodeAgent": {"enabled": True, "restrictToOwnNode": False},
                "trustAnchors": {"users": [_user(namespace, "breakglass")]},
            }
        )
    )
    docs = rendering.documents(
        rendering.template(
            "--show-only=templates/guard/trust-anchors.yaml",
            f"--values={values}",
            release=RELEASE,
            namespace=namespace,
        )
    )
    assert sorted(d["kind"] for d in docs) == sorted(
        ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"] * 2
    )
    for doc in docs:
        if doc["kind"] == "ValidatingAdmissionPolicyBinding":
            doc["spec"]["matchResources"] = {"objectSelector": {"matchLabels": {GUARDED: RUN}}}
    return docs


@pytest.fixture(scope="module")
def guard(
    control_plane: controlplane.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guard]:
    localoperator.install_crds(control_plane)
    namespace = kubeclients.namespace(control_plane, "anchors")
    installed = Guard(control_plane, namespace)
    _rbac(control_plane, namespace)
    docs = _policies(namespace, tmp_path_factory.mktemp("anchors"))
    with kubeclients.admin(control_plane) as api:
        for doc in docs:
            kubesetup.apply_admission_policy(api, doc)
        core: Any = client.CoreV1Api(api)
        for node in installed.nodes:
            core.create_node(
                {
                    "metadata": {
                        "name": node,
                        "labels": {GUARDED: RUN, "nvidia.com/gpu.present": "true"},
                    }
                }
            )
    _model(installed, f"anchor-probe-{RUN}")
    _await_policies(installed)
    try:
        yield installed
    finally:
        with kubeclients.admin(control_plane) as api:
            admission: Any = client.AdmissionregistrationV1Api(api)
            for doc in docs:
                name = doc["metadata"]["name"]
                with contextlib.suppress(client.ApiException):
                    if doc["kind"] == "ValidatingAdmissionPolicy":
                        admission.delete_validating_admission_policy(name)
                    else:
                        admission.delete_validating_admission_policy_binding(name)
            for node in installed.nodes:
                with contextlib.suppress(client.ApiException):
                    client.CoreV1Api(api).delete_node(node)


def _refused(call: Callable[[], Any]) -> str:
    """The message of a 403 from ``call``."""
    with pytest.raises(client.ApiException) as raised:
        call()
    assert raised.value.status == 403, raised.value.body
    return str(json.loads(raised.value.body)["message"])


def _await_policies(guard: Guard, timeout: float = 30.0) -> None:
    """The apiserver activates new policies through an informer, a moment after they were
    created. Dry runs (admission runs, nothing is stored) until both refuse the attacker; from
    then on every check is immediate and each test's first attempt already counts."""
    node = guard.nodes[0]
    label = _label_patch(**{gpustack.STATE_LABEL: "compliant"})
    with contextlib.closing(guard.api("node-patcher")) as api:
        attempts: list[Callable[[], Any]] = [
            lambda: client.CoreV1Api(api).patch_node(node, label, dry_run="All"),
            lambda: client.CustomObjectsApi(api).patch_cluster_custom_object_status(
                crds.GROUP,
                crds.VERSION,
                "models",
                f"anchor-probe-{RUN}",
                _verified(1),
                dry_run="All",
            ),
        ]
        deadline = time.monotonic() + timeout
        for attempt in attempts:
            while True:
                try:
                    attempt()
                except client.ApiException as error:
                    assert error.status == 403, error.body
                    break
                assert time.monotonic() < deadline, "the trust-anchor policies never took effect"
                time.sleep(0.5)


def _labels(guard: Guard, node: str) -> dict[str, str]:
    with kubeclients.admin(guard.plane) as api:
        return dict(client.CoreV1Api(api).read_node(node).metadata.labels or {})


def _annotations(guard: Guard, node: str) -> dict[str, str]:
    with kubeclients.admin(guard.plane) as api:
        return dict(client.CoreV1Api(api).read_node(node).metadata.annotations or {})


def _label_patch(**labels: str | None) -> dict[str, Any]:
    return {"metadata": {"labels": labels}}


def test_the_apiserver_type_checks_the_policies_clean(guard: Guard) -> None:
    with kubeclients.admin(guard.plane) as api:
        admission: Any = client.AdmissionregistrationV1Api(api)

        def checked() -> list[Any] | None:
            policies = [
                admission.read_validating_admission_policy(f"{RELEASE}-trust-anchors-{suffix}")
                for suffix in ("nodes", "status")
            ]
            if all(p.status and p.status.type_checking is not None for p in policies):
                return policies
            return None

        deadline = time.monotonic() + 30
        while (policies := checked()) is None:
            assert time.monotonic() < deadline, "the apiserver never type-checked the policies"
            time.sleep(0.5)
    for policy in policies:
        assert not policy.status.type_checking.expression_warnings, policy.metadata.name


def test_a_node_patcher_cannot_forge_the_gpu_stack_labels(guard: Guard) -> None:
    node = guard.nodes[0]
    attacker = guard.core("node-patcher")
    message = _refused(
        lambda: attacker.patch_node(node, _label_patch(**{gpustack.STATE_LABEL: "compliant"}))
    )
    assert (
        f"is forbidden: ValidatingAdmissionPolicy '{RELEASE}-trust-anchors-nodes' with binding "
    ) in message
    assert (
        f"node {node}: {gpustack.STATE_LABEL} may only be written by Muster's operator "
        f"{guard.operator}, the users {guard.breakglass}, not by {guard.attacker}"
    ) in message
    for change in (
        {gpustack.CUDA_CAPABILITY_LABEL: "12040"},
        {gpustack.STATE_LABEL: "compliant", gpustack.CUDA_CAPABILITY_LABEL: "12040"},
    ):
        body = _label_patch(**change)
        message = _refused(functools.partial(attacker.patch_node, node, body))
        assert ", ".join(trust_order(change)) + " may only be written by" in message
    # Through the status subresource, which carries metadata changes too.
    message = _refused(
        lambda: attacker.patch_node_status(
            node, _label_patch(**{gpustack.STATE_LABEL: "compliant"})
        )
    )
    assert f"{gpustack.STATE_LABEL} may only be written by Muster's operator" in message
    # A new Node that claims compliance from the start.
    forged = f"anchor-forged-{RUN}"
    message = _refused(
        lambda: attacker.create_node(
            {
                "metadata": {
                    "name": forged,
                    "labels": {GUARDED: RUN, gpustack.STATE_LABEL: "compliant"},
                }
            }
        )
    )
    assert f"node {forged}: {gpustack.STATE_LABEL} may only be written by" in message
    assert gpustack.STATE_LABEL not in _labels(guard, node)
    # The real kubectl, as docs/security.md shows it (for a node gpu-node-1, a CI account).
    with kubeclients.admin(guard.plane) as api:
        token = (
            client.CoreV1Api(api)
            .create_namespaced_service_account_token(
                "node-patcher", guard.namespace, {"spec": {"expirationSeconds": 600}}
            )
            .status.token
        )
    kubectl = subprocess.run(
        [
            str(tools.find("kubectl")),
            f"--server={guard.plane.url}",
            f"--certificate-authority={guard.plane.state.ca_file}",
            f"--token={token}",
            "label",
            "node",
            node,
            f"{gpustack.STATE_LABEL}=compliant",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert kubectl.returncode == 1, kubectl.stdout
    (documented,) = docblocks.named("real", "tests/e2e/security/test_tenant_anchors.py")
    ours = {
        "muster-trust-anchors-nodes": f"{RELEASE}-trust-anchors-nodes",
        "gpu-node-1": node,
        "system:serviceaccount:muster-system:muster,": f"{guard.operator},",
        "system:serviceaccount:muster-system:breakglass": guard.breakglass,
        "system:serviceaccount:team-a:ci": guard.attacker,
    }
    assert docblocks.matches(documented, kubectl.stderr, ours) == ""
    # The guard is narrow: the same identity may change any other label.
    attacker.patch_node(node, _label_patch(**{"example.com/team": "ml"}))
    assert _labels(guard, node)["example.com/team"] == "ml"


def trust_order(change: dict[str, str]) -> list[str]:
    """The anchored labels of ``change`` in the order the policy names them."""
    return [k for k in (gpustack.STATE_LABEL, gpustack.CUDA_CAPABILITY_LABEL) if k in change]


def test_a_node_patcher_cannot_forge_the_attestation(guard: Guard) -> None:
    node = guard.nodes[0]
    attacker = guard.core("node-patcher")
    forged = {
        "metadata": {"annotations": {gpustack.ATTESTATION_ANNOTATION: '{"driverVersion":"x"}'}}
    }
    message = _refused(lambda: attacker.patch_node(node, forged))
    assert (
        f"node {node}: {gpustack.ATTESTATION_ANNOTATION} may only be written by the node agent "
        f"running on {node} ({guard.agent}) or Muster's operator {guard.operator}"
    ) in message
    assert f"not by {guard.attacker}" in message
    assert gpustack.ATTESTATION_ANNOTATION not in _annotations(guard, node)


def test_the_operator_and_the_break_glass_users_may_write_them(guard: Guard) -> None:
    node = guard.nodes[1]
    attacker = guard.core("node-patcher")
    operator = guard.core(RELEASE)
    operator.patch_node(
        node,
        _label_patch(
            **{gpustack.STATE_LABEL: "compliant", gpustack.CUDA_CAPABILITY_LABEL: "12040"}
        ),
    )
    operator.patch_node(
        node, {"metadata": {"annotations": {gpustack.ATTESTATION_ANNOTATION: "{}"}}}
    )
    assert _labels(guard, node)[gpustack.STATE_LABEL] == "compliant"
    # Nor may anyone else remove what the operator wrote.
    message = _refused(
        lambda: attacker.patch_node(node, _label_patch(**{gpustack.STATE_LABEL: None}))
    )
    assert f"{gpustack.STATE_LABEL} may only be written by" in message
    breakglass = guard.core("breakglass")
    breakglass.patch_node(node, _label_patch(**{gpustack.STATE_LABEL: "non-compliant"}))
    assert _labels(guard, node)[gpustack.STATE_LABEL] == "non-compliant"


def _bound_token(guard: Guard, node: str) -> str:
    """A token of the node agent's ServiceAccount bound to a Pod scheduled to ``node``: the
    apiserver puts the node's name into the user info of every request made with it."""
    account = f"{RELEASE}-node-agent"
    with kubeclients.admin(guard.plane) as api:
        core = client.CoreV1Api(api)
        pod = core.create_namespaced_pod(
            guard.namespace,
            {
                "metadata": {"generateName": "agent-"},
                "spec": {
                    "nodeName": node,
                    "serviceAccountName": account,
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "agent", "image": "busybox:1"}],
                },
            },
        )
        ref = {
            "kind": "Pod",
            "apiVersion": "v1",
            "name": pod.metadata.name,
            "uid": pod.metadata.uid,
        }
        token: str = core.create_namespaced_service_account_token(
            account, guard.namespace, {"spec": {"expirationSeconds": 3600, "boundObjectRef": ref}}
        ).status.token
    return token


@pytest.fixture
async def agent_of_a(guard: Guard) -> AsyncIterator[kubeapi.KubeApi]:
    """The node agent's own client (the one `muster node-agent` uses) on the first Node."""
    kube_ = kubeapi.KubeApi(
        kubeapi.Credentials(
            host=guard.plane.url,
            ca_file=guard.plane.state.ca_file,
            token=_bound_token(guard, guard.nodes[0]),
        )
    )
    yield kube_
    await kube_.close()


async def test_the_agent_of_a_node_attests_that_node_only(
    guard: Guard, agent_of_a: kubeapi.KubeApi, tmp_path: Path
) -> None:
    own, other = guard.nodes
    measurement = nodeagent_.measure(gpuroots.host_root(tmp_path, driver="580.95.05"))
    # Its own Node, through the agent's own code.
    await nodeagent_.publish(agent_of_a, own, measurement)
    attested = json.loads(_annotations(guard, own)[gpustack.ATTESTATION_ANNOTATION])
    assert attested["driverVersion"] == "580.95.05"
    # Another Node: the same ServiceAccount, but the apiserver says the token is of another node.
    with pytest.raises(kubeapi.ApiError) as refused:
        await nodeagent_.publish(agent_of_a, other, measurement)
    assert refused.value.status == 403
    assert (
        f"node {other}: {gpustack.ATTESTATION_ANNOTATION} may only be written by the node agent "
        f"running on {other} ({guard.agent})"
    ) in str(refused.value)
    assert f"not by {guard.agent}" in str(refused.value)
    # Its own Node's labels are the operator's.
    with pytest.raises(kubeapi.ApiError) as refused:
        await agent_of_a.patch(
            f"/api/v1/nodes/{own}", _label_patch(**{gpustack.STATE_LABEL: "compliant"})
        )
    assert refused.value.status == 403
    assert f"{gpustack.STATE_LABEL} may only be written by Muster's operator" in str(refused.value)
    # A token of the agent's account that no Pod on a Node carries: no node, no attestation.
    unbound = guard.core(f"{RELEASE}-node-agent")
    message = _refused(
        lambda: unbound.patch_node(
            own, {"metadata": {"annotations": {gpustack.ATTESTATION_ANNOTATION: "{}"}}}
        )
    )
    assert f"may only be written by the node agent running on {own}" in message


# -- Models ----------------------------------------------------------------------------------


def _model(guard: Guard, name: str) -> None:
    with kubeclients.admin(guard.plane) as api:
        client.CustomObjectsApi(api).create_cluster_custom_object(
            crds.GROUP,
            crds.VERSION,
            "models",
            {
                "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
                "kind": "Model",
                "metadata": {"name": name, "labels": {GUARDED: RUN}},
                "spec": {"digest": OMS},
            },
        )


def _read_model(guard: Guard, name: str) -> dict[str, Any]:
    with kubeclients.admin(guard.plane) as api:
        found: dict[str, Any] = client.CustomObjectsApi(api).get_cluster_custom_object(
            crds.GROUP, crds.VERSION, "models", name
        )
    return found


def _verified(generation: int) -> dict[str, Any]:
    return {
        "status": {
            "observedGeneration": generation,
            "conditions": [
                {
                    "type": "SignatureVerified",
                    "status": "True",
                    "reason": "Verified",
                    "message": "forged",
                    "observedGeneration": generation,
                }
            ],
        }
    }


def _patch_status(api: client.ApiClient, name: str, body: dict[str, Any]) -> Any:
    return client.CustomObjectsApi(api).patch_cluster_custom_object_status(
        crds.GROUP, crds.VERSION, "models", name, body
    )


def test_only_the_operator_writes_a_models_status(guard: Guard) -> None:
    name = f"anchor-model-{RUN}"
    _model(guard, name)
    with contextlib.closing(guard.api("node-patcher")) as attacker:
        message = _refused(lambda: _patch_status(attacker, name, _verified(1)))
    assert (
        f"the status of Model {name} is written by Muster's operator {guard.operator}, "
        f"the users {guard.breakglass} only, not by {guard.attacker}"
    ) in message
    assert "status" not in _read_model(guard, name)
    # A tenant who may edit Models but not their status: its status is dropped, not stored.
    with contextlib.closing(guard.api("model-editor")) as editor:
        objects = client.CustomObjectsApi(editor)
        objects.patch_cluster_custom_object(
            crds.GROUP,
            crds.VERSION,
            "models",
            name,
            {"metadata": {"labels": {"x": "y"}}, **_verified(1)},
        )
        message = _refused(lambda: _patch_status(editor, name, _verified(1)))
        assert 'cannot patch resource "models/status"' in message  # RBAC, before admission
    assert "status" not in _read_model(guard, name)
    with contextlib.closing(guard.api(RELEASE)) as operator:
        _patch_status(operator, name, _verified(1))
    assert _read_model(guard, name)["status"]["conditions"][0]["status"] == "True"


async def _reload(catalog: modeladmission.ModelCatalog) -> None:
    """Re-list Models as the gate does. The session's CRDs were just applied again (a CRD
    replaced makes its storage answer 429 for a moment): retried through that."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await catalog.reload()
            return
        except kubeapi.ApiError as error:
            if error.status != 429 or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_a_verification_of_an_earlier_spec_does_not_count(guard: Guard) -> None:
    name = f"anchor-stale-{RUN}"
    _model(guard, name)
    with contextlib.closing(guard.api(RELEASE)) as operator:
        _patch_status(operator, name, _verified(1))
    catalog = modeladmission.ModelCatalog(
        kubeapi.KubeApi(kubeapi.Credentials.resolve(str(guard.plane.kubeconfig)))
    )
    strict = modelregistry.ModelPolicySpec(requireSignature=True)
    use = modelgate.ModelUse("declaredVolume", "weights", name)
    try:
        await _reload(catalog)
        assert catalog.index.models[name].signature_verified
        assert modelgate.judge_use(use, catalog.index, strict).finding is None
        # The tenant changes the spec; the status still speaks of generation 1.
        with contextlib.closing(guard.api("model-editor")) as editor:
            client.CustomObjectsApi(editor).patch_cluster_custom_object(
                crds.GROUP, crds.VERSION, "models", name, {"spec": {"format": "gguf"}}
            )
        stored = _read_model(guard, name)
        assert stored["metadata"]["generation"] == 2
        assert stored["status"]["conditions"][0]["status"] == "True"
        await _reload(catalog)
        assert not catalog.index.models[name].signature_verified
        finding = modelgate.judge_use(use, catalog.index, strict).finding
        assert finding is not None and finding.reason == "ModelSignatureNotVerified"
    finally:
        await catalog.kube.close()
