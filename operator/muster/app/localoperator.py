"""Running ``muster run`` as a real process beside a local control plane, webhooks registered.

Shared by ``muster dev up`` and the end-to-end tests so that both exercise the same wiring.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import ssl
import sys
import urllib.request
from pathlib import Path

from muster.app import catalog, webhookconfigs
from muster.guards.rules import datamarks as datamarksguard
from muster.guards.rules import namespaces as namespaceguard
from muster.guards.rules import trustanchors
from muster.kernel import pki, scopes
from muster.platform import controlplane, kubesetup, processes

__all__ = [
    "DEFAULT_GUARD",
    "LocalOperator",
    "install_crds",
    "install_namespace_guard",
    "install_trust_anchor_guard",
    "register_webhooks",
    "start",
]

# What `muster run` judges namespace changes with when started without --namespace-* flags.
DEFAULT_GUARD = namespaceguard.GuardSettings()


@dataclasses.dataclass(frozen=True)
class LocalOperator:
    url: str
    port: int
    pid: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    log: Path
    metrics_url: str = ""  # http://127.0.0.1:<port>/metrics

    def stop(self) -> None:
        processes.stop_pid(self.pid)


def _healthy(url: str, ca_file: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file))
    with urllib.request.urlopen(f"{url}/healthz", context=context, timeout=1) as response:  # noqa: S310
        return bool(response.status == 200)


def start(
    plane: controlplane.ControlPlane,
    *,
    own_namespace: str,
    workdir: Path,
    extra_args: tuple[str, ...] = (),
    kubeconfig: Path | None = None,
    enforcement: scopes.Enforcement = scopes.NAMESPACED,
) -> LocalOperator:
    """Start ``muster run`` on a random loopback port with a fresh serving certificate.

    ``kubeconfig`` is the identity it runs with (default: the control plane's admin), e.g. one
    holding a ServiceAccount's token to prove that account's RBAC is enough. ``enforcement``
    must be the one its webhooks are registered with (:func:`register_webhooks`).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    ca = pki.new_ca("muster-webhook-ca")
    serving = pki.issue(ca, "muster-webhook", hosts=["127.0.0.1", "localhost"], server=True)
    ca_file, cert_file, key_file = workdir / "ca.crt", workdir / "tls.crt", workdir / "tls.key"
    ca_file.write_bytes(ca.cert_pem)
    cert_file.write_bytes(serving.cert_pem)
    key_file.write_bytes(serving.key_pem)
    key_file.chmod(0o600)
    port = processes.free_port()
    url = f"https://127.0.0.1:{port}"
    # A free metrics port too: several operators (tests, demos) may run on one machine.
    metrics_port = processes.free_port()
    log = workdir / "muster.log"
    process = processes.spawn(
        [
            sys.executable,
            "-m",
            "muster",
            "run",
            "--listen-address=127.0.0.1",
            f"--port={port}",
            f"--tls-cert-file={cert_file}",
            f"--tls-key-file={key_file}",
            f"--kubeconfig={kubeconfig or plane.kubeconfig}",
            f"--namespace={own_namespace}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={metrics_port}",
            f"--enforcement-scope={enforcement.scope}",
            *(f"--exclude-namespace={name}" for name in sorted(enforcement.excluded)),
            *extra_args,
        ],
        log=log,
    )
    operator = LocalOperator(
        url=url,
        port=port,
        pid=process.pid,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        log=log,
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
    )
    try:
        processes.wait_until(
            lambda: _healthy(url, ca_file), what="muster run", timeout=60, process=process, log=log
        )
    except BaseException:
        operator.stop()
        raise
    return operator


def install_crds(plane: controlplane.ControlPlane) -> None:
    """Muster's own custom resources, from the same catalog the chart's CRDs come from."""
    api = kubesetup.api_client(plane.kubeconfig)
    with contextlib.closing(api):
        for crd in catalog.definitions():
            kubesetup.apply_custom_resource_definition(api, crd)


def register_webhooks(
    plane: controlplane.ControlPlane,
    operator: LocalOperator,
    *,
    own_namespace: str,
    enforcement: scopes.Enforcement = scopes.NAMESPACED,
    namespace_guard: namespaceguard.GuardSettings | None = DEFAULT_GUARD,
) -> None:
    """Point Validating and Mutating webhook configurations at ``operator``; with
    ``namespace_guard`` (the settings ``operator`` was started with: by default, none given)
    the mutating one also carries the record of namespace mode changes."""
    ca_bundle = base64.b64encode(operator.ca_file.read_bytes()).decode("ascii")
    api = kubesetup.api_client(plane.kubeconfig)
    with contextlib.closing(api):
        kubesetup.ensure_namespace(api, own_namespace)
        for manifest in (
            webhookconfigs.validating(
                operator.url, ca_bundle, own_namespace=own_namespace, enforcement=enforcement
            ),
            webhookconfigs.mutating(
                operator.url,
                ca_bundle,
                own_namespace=own_namespace,
                enforcement=enforcement,
                namespace_guard=namespace_guard,
            ),
        ):
            kubesetup.apply_webhook_configuration(api, manifest)


def install_namespace_guard(
    plane: controlplane.ControlPlane,
    settings: namespaceguard.GuardSettings = DEFAULT_GUARD,
    name: str = namespaceguard.DEV_NAME,
) -> None:
    """The namespace guard (a ValidatingAdmissionPolicy and its binding), as the chart
    installs it: only namespace managers may lower a namespace's enforcement; and beside it the
    data-marks guard: only they may mark a claim muster.dev/not-model-data."""
    api = kubesetup.api_client(plane.kubeconfig)
    with contextlib.closing(api):
        kubesetup.apply_admission_policy(api, namespaceguard.policy(settings, name))
        kubesetup.apply_admission_policy(api, namespaceguard.binding(name))
        kubesetup.apply_admission_policy(api, datamarksguard.policy(settings))
        kubesetup.apply_admission_policy(api, datamarksguard.binding())


def install_trust_anchor_guard(
    plane: controlplane.ControlPlane, writers: trustanchors.Writers | None = None
) -> None:
    """The trust-anchor policies (muster.guards.rules.trustanchors), as the chart installs them. The
    operator :func:`start` runs as the control plane's admin unless told otherwise, so that is
    who writes Muster's Node labels and statuses by default."""
    writers = writers or trustanchors.Writers(operator=controlplane.ADMIN_USER)
    api = kubesetup.api_client(plane.kubeconfig)
    with contextlib.closing(api):
        for manifest in trustanchors.manifests("muster", writers):
            kubesetup.apply_admission_policy(api, manifest)
