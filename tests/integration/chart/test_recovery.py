"""The emergency-recovery page's commands, run as written against the chart installed in a real
apiserver with nothing behind Muster's Service: Muster is "down", so its enforce webhooks
(``failurePolicy: Fail``) refuse pods. No pod runs: pods are created as server-side dry runs,
which go through admission like real ones."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from muster.platform import controlplane, processes
from tests import kubeclients
from tests.integration import docblocks
from tests.integration.chart import rendering
from tests.integration.chart.rendering import CHART

pytestmark = pytest.mark.integration

# The control plane is shared by the session: this release's webhooks match only namespaces
# carrying this label with the release's name.
SCOPE_LABEL = "muster.dev/chart-test"
PAGE = "docs/recovery.md"


@pytest.fixture(scope="module")
def release(
    control_plane: controlplane.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    name = f"muster-{uuid.uuid4().hex[:6]}"
    namespace = kubeclients.namespace(control_plane, "muster-recovery")
    values = tmp_path_factory.mktemp("recovery") / "values.yaml"
    scope = [{"key": SCOPE_LABEL, "operator": "In", "values": [name]}]
    values.write_text(
        yaml.safe_dump(
            {"webhook": {"timeoutSeconds": 2, "namespaceSelectorExpressions": scope}},
        )
    )
    kubeconfig = f"--kubeconfig={control_plane.kubeconfig}"
    rendering.helm("install", name, str(CHART), "-n", namespace, f"--values={values}", kubeconfig)
    try:
        yield name, namespace
    finally:
        rendering.helm("uninstall", name, "-n", namespace, "--no-hooks", kubeconfig, check=False)


def _ours(word: str, name: str, namespace: str, team: str) -> str:
    """A word of the page with the page's release, namespaces and chart path made the test's."""
    if word == "muster-system":
        return namespace
    if word == "team-a":
        return team
    if word == "charts/muster":
        return str(CHART)
    if word == "muster" or word.startswith("muster-"):
        return name + word[len("muster") :]
    return word


def _run(plane: controlplane.ControlPlane, block: docblocks.Block, words: dict[str, str]) -> None:
    for argv in docblocks.command_lines(block):
        ours = [words.get(word, word) for word in argv]
        if ours[0] == "kubectl":
            done = controlplane.kubectl(plane, *ours[1:], check=False)
        else:
            assert ours[0] == "helm", f"{block.where}: {argv}"
            done = rendering.helm(*ours[1:], f"--kubeconfig={plane.kubeconfig}", check=False)
        assert done.returncode == 0, f"{block.where}: {argv}: {done.stderr}"


# Pinned, in namespaces that let uncovered images in: when the tests' own session-wide operator
# also judges these namespaces (muster.dev/enforce=true selects them for it too), it admits this
# pod, so every refusal seen here is the chart's dead webhooks.
_IMAGE = "registry.example/app@sha256:" + "ab" * 32
_UNCOVERED_ALLOWED = {"muster.dev/uncovered-images": "allow"}


def _admitted(plane: controlplane.ControlPlane, namespace: str) -> str:
    """'' when a pod in ``namespace`` is admitted (dry run), else the apiserver's refusal."""
    with kubeclients.admin(plane) as api:
        core: Any = client.CoreV1Api(api)  # the generated types want V1Pod, not a dict
        try:
            core.create_namespaced_pod(namespace, kubeclients.pod("app", _IMAGE), dry_run="All")
        except client.ApiException as error:
            return str(error.body)
    return ""


def _refused(plane: controlplane.ControlPlane, namespace: str, refused: bool) -> None:
    """Wait until a pod in ``namespace`` is refused because the webhook is down (or admitted):
    the apiserver applies new webhook configurations and namespace labels through informers,
    a moment after the write that changed them."""

    def settled() -> bool:
        answer = _admitted(plane, namespace)
        return ("failed calling webhook" in answer) if refused else answer == ""

    what = f"a pod in {namespace} {'refused' if refused else 'admitted'}"
    processes.wait_until(settled, what=what, timeout=30)


def _exists(plane: controlplane.ControlPlane, path: str) -> bool:
    return controlplane.kubectl(plane, "get", "--raw", path, check=False).returncode == 0


def test_the_recovery_commands_let_pods_in_and_getting_back_restores_everything(
    release: tuple[str, str], control_plane: controlplane.ControlPlane
) -> None:
    name, namespace = release
    plane = control_plane
    enforced = {"muster.dev/enforce": "true", SCOPE_LABEL: name, **_UNCOVERED_ALLOWED}
    team = kubeclients.namespace(plane, "team-a", enforced)
    other = kubeclients.namespace(plane, "team-b", enforced)
    found = docblocks.named("delegated", "tests/integration/chart/test_recovery.py")
    assert [block.doc for block in found] == [PAGE] * 4
    relabel, webhooks, guards, back = found
    words = {
        word: _ours(word, name, namespace, team)
        for block in found
        for argv in docblocks.command_lines(block)
        for word in argv
    }
    admission = "/apis/admissionregistration.k8s.io/v1"
    configurations = [
        f"{admission}/validatingwebhookconfigurations/{name}",
        f"{admission}/mutatingwebhookconfigurations/{name}",
    ]
    bindings = [
        f"{admission}/validatingadmissionpolicybindings/{name}-{suffix}"
        for suffix in ("namespace-guard", "trust-anchors-nodes", "trust-anchors-status")
    ]
    policies = [path.replace("policybindings/", "policies/") for path in bindings]
    assert all(_exists(plane, path) for path in configurations + bindings + policies)

    # Muster is down: enforce namespaces refuse pods.
    for ns in (team, other):
        _refused(plane, ns, refused=True)

    _run(plane, relabel, words)  # one namespace to warn, as a namespace manager
    _refused(plane, team, refused=False)
    _refused(plane, other, refused=True)

    _run(plane, webhooks, words)  # the whole cluster
    assert not any(_exists(plane, path) for path in configurations)
    _refused(plane, other, refused=False)

    _run(plane, guards, words)
    assert not any(_exists(plane, path) for path in bindings)
    assert all(_exists(plane, path) for path in policies)

    _run(plane, back, words)
    assert all(_exists(plane, path) for path in configurations + bindings + policies)
    labels = controlplane.kubectl(plane, "get", "namespace", team, "-o", "yaml").stdout
    assert yaml.safe_load(labels)["metadata"]["labels"]["muster.dev/enforce"] == "true"
    for ns in (team, other):
        _refused(plane, ns, refused=True)
