"""``muster dev up`` yields a control plane with Muster in it; ``dev down`` leaves nothing.

It runs the README's ``muster dev`` block and compares the README's denial message with
kubectl's."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from kubernetes import client

from muster.app import webhookconfigs
from muster.gpu.rules import stack as gpustack
from muster.guards.rules import namespaces as namespaceguard
from muster.guards.rules import trustanchors
from muster.platform import controlplane, kubesetup, processes, tools
from tests.e2e import devcli
from tests.integration import docblocks

pytestmark = pytest.mark.e2e


def _kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools.find("kubectl")), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_readme_dev_block_runs_and_dev_down_leaves_nothing_behind(tmp_path: Path) -> None:
    """The README's ``muster dev up; kubectl ... get ns; muster dev down`` block, line by line,
    with ``$MUSTER_DEV_DIR`` in a temporary folder instead of ``~/.local/state/muster/dev``;
    between its lines, the README's denial message is compared with kubectl's real one."""
    workdir = tmp_path / "dev"
    env = {"MUSTER_DEV_DIR": str(workdir)}
    (block,) = docblocks.named("delegated", "tests/e2e/test_dev.py")
    up, get_ns, down_ = list(docblocks.command_lines(block))
    assert (up, get_ns[0], down_) == (["muster", "dev", "up"], "kubectl", ["muster", "dev", "down"])
    up_result = devcli.muster(*up[1:], env=env)
    assert up_result.returncode == 0, up_result.stderr
    kubeconfig = workdir / "kubeconfig"
    assert f"export KUBECONFIG={kubeconfig}" in up_result.stdout
    state = controlplane.ControlPlaneState.load(workdir)
    try:
        assert set(state.pids) >= {"etcd", "kube-apiserver", "muster-operator"}
        documented = [arg.replace("~/.local/state/muster/dev", str(workdir)) for arg in get_ns]
        namespaces = _kubectl(*documented[1:])
        assert namespaces.returncode == 0, namespaces.stderr
        names = {line.split()[0] for line in namespaces.stdout.splitlines()[1:]}
        assert {"default", "demo", "muster-system"} <= names

        # The README's denial: a pod in the opted-in namespace naming its image by a tag.
        denied = _kubectl(
            f"--kubeconfig={kubeconfig}", "-n", "demo", "run", "trainer",
            "--image=ghcr.io/acme/trainer:v1",
        )  # fmt: skip
        assert denied.returncode == 1
        (message,) = docblocks.named("real", "tests/e2e/test_dev.py")
        assert docblocks.matches(message, denied.stderr) == ""

        _the_namespace_guard_is_installed(kubeconfig)
        _the_trust_anchor_guard_is_installed(kubeconfig)

        again = devcli.muster("dev", "up", env=env)
        assert again.returncode == 2
        assert "already up" in again.stderr
    finally:
        down = devcli.muster(*down_[1:], env=env)
    assert down.returncode == 0, down.stderr
    assert [name for name, pid in state.pids.items() if devcli.alive(pid)] == []
    assert [name for name, port in state.ports.items() if processes.port_is_open(port)] == []
    assert not workdir.exists()


def _the_namespace_guard_is_installed(kubeconfig: Path) -> None:
    """`muster dev up` installs the chart's namespace guard: someone allowed to patch the
    namespace "demo" cannot lower its enforcement, a namespace manager can, and the refusal
    is recorded as an Event in "demo"."""
    config = f"--kubeconfig={kubeconfig}"
    policy = json.loads(
        _kubectl(
            config, "get", "validatingadmissionpolicy", namespaceguard.DEV_NAME, "-o=json"
        ).stdout
    )
    expected = namespaceguard.policy(namespaceguard.GuardSettings())["spec"]
    for field in ("failurePolicy", "variables", "validations"):  # the rest has defaults added
        assert policy["spec"][field] == expected[field], field
    hooks = json.loads(
        _kubectl(config, "get", "mutatingwebhookconfiguration", "muster.dev", "-o=json").stdout
    )["webhooks"]
    assert webhookconfigs.NAMESPACE_MODES in [hook["name"] for hook in hooks]
    role = "namespace-labeller"
    for step in (
        ["create", "clusterrole", role, "--verb=get,patch", "--resource=namespaces"],
        ["create", "clusterrolebinding", role, f"--clusterrole={role}", "--user=mallory",
         "--user=alice"],
    ):  # fmt: skip
        assert _kubectl(config, *step).returncode == 0
    remove = ["label", "namespace", "demo", "muster.dev/enforce-"]
    deadline = time.monotonic() + 30
    while (
        "denied request" not in _kubectl(config, "--as=mallory", *remove, "--dry-run=server").stderr
    ):
        assert time.monotonic() < deadline, "the namespace guard never took effect"
        time.sleep(0.2)
    refused = _kubectl(config, "--as=mallory", *remove)
    assert refused.returncode == 1
    assert (
        "muster: mallory may not lower the enforcement of namespace demo: muster.dev/enforce "
        "from 'true' to (unset). Only namespace managers may: groups system:masters, "
        "muster:namespace-managers; users (none)"
    ) in refused.stderr
    manager = ["--as=alice", f"--as-group={namespaceguard.MANAGER_GROUP}"]
    allowed = _kubectl(config, *manager, *remove, "--dry-run=server")
    assert allowed.returncode == 0, allowed.stderr
    events = ["get", "events", "-n", "demo", "--field-selector=reason=NamespaceModeChangeRefused"]
    deadline = time.monotonic() + 30
    while "mallory tried to change namespace demo" not in _kubectl(config, *events).stdout:
        assert time.monotonic() < deadline, "no NamespaceModeChangeRefused Event in demo"
        time.sleep(0.5)


def _the_trust_anchor_guard_is_installed(kubeconfig: Path) -> None:
    """`muster dev up` installs the chart's trust-anchor policies for the identity its operator
    runs as (the control plane's admin): anyone else allowed to patch Nodes cannot set Muster's
    node labels."""
    config = f"--kubeconfig={kubeconfig}"
    writers = trustanchors.Writers(operator=controlplane.ADMIN_USER)
    for manifest in trustanchors.manifests("muster", writers):
        if manifest["kind"] != "ValidatingAdmissionPolicy":
            continue
        name = manifest["metadata"]["name"]
        live = json.loads(
            _kubectl(config, "get", "validatingadmissionpolicy", name, "-o=json").stdout
        )
        for field in ("failurePolicy", "variables", "validations"):  # the rest has defaults
            assert live["spec"][field] == manifest["spec"][field], (name, field)
    with kubesetup.api_client(kubeconfig) as api:
        client.CoreV1Api(api).create_node({"metadata": {"name": "dev-gpu"}})
    role = "node-labeller"
    for step in (
        ["create", "clusterrole", role, "--verb=get,patch", "--resource=nodes"],
        ["create", "clusterrolebinding", role, f"--clusterrole={role}", "--user=mallory"],
    ):
        assert _kubectl(config, *step).returncode == 0
    forge = ["--as=mallory", "label", "node", "dev-gpu", f"{gpustack.STATE_LABEL}=compliant"]
    deadline = time.monotonic() + 30
    while "denied request" not in _kubectl(config, *forge, "--dry-run=server").stderr:
        assert time.monotonic() < deadline, "the trust-anchor guard never took effect"
        time.sleep(0.2)
    refused = _kubectl(config, *forge)
    assert refused.returncode == 1
    assert (
        f"node dev-gpu: {gpustack.STATE_LABEL} may only be written by Muster's operator "
        f"{controlplane.ADMIN_USER}, not by mallory"
    ) in refused.stderr
