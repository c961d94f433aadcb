"""A real local Kubernetes control plane: etcd and kube-apiserver (plus, when built,
kube-controller-manager) on 127.0.0.1, with generated certificates and RBAC.

Used by ``muster dev up`` and by the test suite. Nothing here is a fake: pods are never run
(there is no kubelet), but admission, RBAC, CRD schemas, Events and bindings are all real.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from muster.kernel import pki
from muster.platform import processes, tools

__all__ = ["ControlPlane", "ControlPlaneState", "restart_apiserver", "start", "stop"]

STATE_FILE = "state.json"
ADMIN_USER = "muster-admin"


@dataclasses.dataclass(frozen=True)
class ControlPlaneState:
    """What a running control plane is: enough to talk to it and to stop it from elsewhere."""

    workdir: str
    url: str
    kubeconfig: str
    ca_file: str
    admin_cert_file: str
    admin_key_file: str
    pids: dict[str, int]
    ports: dict[str, int]

    def save(self) -> None:
        Path(self.workdir, STATE_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, workdir: Path) -> ControlPlaneState:
        return cls(**json.loads((workdir / STATE_FILE).read_text()))


class ControlPlane:
    """Handle on a started control plane; ``stop()`` leaves no process or port behind."""

    def __init__(self, state: ControlPlaneState) -> None:
        self.state = state

    @property
    def url(self) -> str:
        return self.state.url

    @property
    def kubeconfig(self) -> Path:
        return Path(self.state.kubeconfig)

    @property
    def workdir(self) -> Path:
        return Path(self.state.workdir)

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.state.ca_file)
        context.load_cert_chain(self.state.admin_cert_file, self.state.admin_key_file)
        return context

    def get(self, path: str, *, timeout: float = 5.0) -> Any:
        """GET ``path`` as the admin user and decode the JSON answer."""
        with urllib.request.urlopen(  # noqa: S310  # the URL is our own https apiserver
            self.state.url + path, context=self.ssl_context(), timeout=timeout
        ) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        stop(self.workdir)


def _write(path: Path, data: bytes, *, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def _kubeconfig(url: str, ca: bytes, cert: bytes, key: bytes) -> dict[str, Any]:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "muster-dev",
                "cluster": {"server": url, "certificate-authority-data": b64(ca)},
            }
        ],
        "users": [
            {
                "name": ADMIN_USER,
                "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            }
        ],
        "contexts": [
            {"name": "muster-dev", "context": {"cluster": "muster-dev", "user": ADMIN_USER}}
        ],
        "current-context": "muster-dev",
    }


def start(workdir: Path, *, controllers: bool = True, timeout: float = 90.0) -> ControlPlane:
    """Start etcd and kube-apiserver (and kube-controller-manager if wanted and installed)."""
    workdir.mkdir(parents=True, exist_ok=True)
    certs = workdir / "pki"
    certs.mkdir(exist_ok=True)
    logs = workdir / "logs"

    ca = pki.new_ca("muster-dev-ca")
    serving = pki.issue(
        ca,
        "kube-apiserver",
        server=True,
        hosts=["127.0.0.1", "localhost", "kubernetes", "kubernetes.default.svc"],
    )
    admin = pki.issue(ca, ADMIN_USER, organizations=["system:masters"], client=True)
    sa_private, sa_public = pki.rsa_signing_key()
    ca_file = _write(certs / "ca.crt", ca.cert_pem)
    _write(certs / "ca.key", ca.key_pem, private=True)
    serving_cert = _write(certs / "apiserver.crt", serving.cert_pem)
    serving_key = _write(certs / "apiserver.key", serving.key_pem, private=True)
    admin_cert = _write(certs / "admin.crt", admin.cert_pem)
    admin_key = _write(certs / "admin.key", admin.key_pem, private=True)
    sa_key = _write(certs / "sa.key", sa_private, private=True)
    sa_pub = _write(certs / "sa.pub", sa_public)

    ports = {
        "etcd": processes.free_port(),
        "etcd-peer": processes.free_port(),
        "apiserver": processes.free_port(),
    }
    url = f"https://127.0.0.1:{ports['apiserver']}"
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(_kubeconfig(url, ca.cert_pem, admin.cert_pem, admin.key_pem))
    )
    kubeconfig.chmod(0o600)
    pids: dict[str, int] = {}
    state = ControlPlaneState(
        workdir=str(workdir),
        url=url,
        kubeconfig=str(kubeconfig),
        ca_file=str(ca_file),
        admin_cert_file=str(admin_cert),
        admin_key_file=str(admin_key),
        pids=pids,
        ports=ports,
    )
    plane = ControlPlane(state)
    try:
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        etcd_log = logs / "etcd.log"
        etcd = processes.spawn(
            [
                tools.find("etcd"),
                "--name=muster-dev",
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=muster-dev={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            log=etcd_log,
        )
        pids["etcd"] = etcd.pid
        state.save()
        processes.wait_until(
            lambda: _http_ok(f"{etcd_url}/health"),
            what="etcd",
            timeout=timeout,
            process=etcd,
            log=etcd_log,
        )

        apiserver_log = logs / "kube-apiserver.log"
        apiserver = processes.spawn(
            [
                tools.find("kube-apiserver"),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={certs}",
                f"--tls-cert-file={serving_cert}",
                f"--tls-private-key-file={serving_key}",
                f"--client-ca-file={ca_file}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--api-audiences=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.0.0.0/24",
                # No kubelet or token controller mounts tokens; tests request tokens explicitly.
                "--disable-admission-plugins=ServiceAccount",
                "--enable-admission-plugins=NamespaceLifecycle,MutatingAdmissionWebhook,"
                "ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=1",
            ],
            log=apiserver_log,
        )
        pids["kube-apiserver"] = apiserver.pid
        state.save()
        processes.wait_until(
            lambda: _readyz(plane),
            what="kube-apiserver",
            timeout=timeout,
            process=apiserver,
            log=apiserver_log,
        )
        if controllers:
            _start_controller_manager(plane, certs, ca, sa_key, logs, pids)
        state.save()
    except BaseException:
        stop(workdir)
        raise
    return plane


def _start_controller_manager(
    plane: ControlPlane,
    certs: Path,
    ca: pki.KeyPair,
    sa_key: Path,
    logs: Path,
    pids: dict[str, int],
) -> None:
    try:
        binary = tools.find("kube-controller-manager")
    except tools.ToolMissing:
        return  # optional: without it Deployments create no pods, everything else works
    # Without a token controller bootstrapped per-controller identities, the simplest honest
    # setup for a local plane is to let the controller-manager act with full rights.
    user = pki.issue(
        ca, "system:kube-controller-manager", organizations=["system:masters"], client=True
    )
    config = workdir_kubeconfig = certs.parent / "controller-manager.kubeconfig"
    workdir_kubeconfig.write_text(
        yaml.safe_dump(_kubeconfig(plane.url, ca.cert_pem, user.cert_pem, user.key_pem))
    )
    config.chmod(0o600)
    log = logs / "kube-controller-manager.log"
    process = processes.spawn(
        [
            binary,
            f"--kubeconfig={config}",
            f"--authentication-kubeconfig={config}",
            f"--authorization-kubeconfig={config}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--use-service-account-credentials=false",
            f"--service-account-private-key-file={sa_key}",
            f"--root-ca-file={certs / 'ca.crt'}",
            "--controllers=*,-nodeipam,-nodelifecycle,-persistentvolume-binder,-attachdetach,"
            "-persistentvolume-expander,-cloud-node-lifecycle,-ttl,-bootstrapsigner,-tokencleaner",
            "--v=1",
        ],
        log=log,
    )
    pids["kube-controller-manager"] = process.pid


def restart_apiserver(plane: ControlPlane, *, down_for: float = 0.0, timeout: float = 90.0) -> None:
    """Stop the kube-apiserver (watches break, clients see refused connections), wait
    ``down_for`` seconds, start it again with the same arguments and wait until it is ready.
    For reliability tests; etcd keeps the data."""
    pid = plane.state.pids["kube-apiserver"]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    processes.stop_pid(pid)
    time.sleep(down_for)
    log = plane.workdir / "logs" / "kube-apiserver.log"
    apiserver = processes.spawn([arg.decode() for arg in argv], log=log)
    plane.state.pids["kube-apiserver"] = apiserver.pid
    plane.state.save()
    processes.wait_until(
        lambda: _readyz(plane),
        what="kube-apiserver (restarted)",
        timeout=timeout,
        process=apiserver,
        log=log,
    )


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310  # loopback etcd
        return bool(response.status == 200)


def _readyz(plane: ControlPlane) -> bool:
    try:
        with urllib.request.urlopen(  # noqa: S310  # our own https apiserver
            plane.url + "/readyz", context=plane.ssl_context(), timeout=2
        ) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError:
        return False


def stop(workdir: Path) -> list[str]:
    """Stop every process recorded for ``workdir``; return the names of those stopped."""
    try:
        state = ControlPlaneState.load(workdir)
    except FileNotFoundError:
        return []
    stopped = []
    # Reverse start order: clients of etcd go first so nothing logs a storm of errors.
    for name, pid in reversed(list(state.pids.items())):
        processes.stop_pid(pid)
        stopped.append(name)
    return stopped


def kubectl(
    plane: ControlPlane, *args: str, check: bool = True, input_: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real kubectl against ``plane``."""
    return subprocess.run(
        [str(tools.find("kubectl")), f"--kubeconfig={plane.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=check,
        input=input_,
        timeout=60,
    )
