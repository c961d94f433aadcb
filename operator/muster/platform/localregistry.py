"""A local OCI registry for the demo and the tests: Debian's ``docker-registry`` on loopback.

Plain HTTP on 127.0.0.1 (tools need ``--insecure`` / ``--allow-http-registry``, and
``muster run --insecure-registry``). It runs in its own session so ``muster dev down`` can stop
it by the pid recorded in the dev state.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from muster.platform import processes, tools

__all__ = ["LocalRegistry", "start"]


@dataclasses.dataclass(frozen=True)
class LocalRegistry:
    host: str  # 127.0.0.1:PORT
    port: int
    pid: int
    log: Path

    def ref(self, repository: str, tag: str = "latest") -> str:
        return f"{self.host}/{repository}:{tag}"

    def stop(self) -> None:
        processes.stop_pid(self.pid)


def _answers(url: str, context: ssl.SSLContext | None = None) -> bool:
    """The registry answers: 200, or 401 when it demands credentials."""
    try:
        with urllib.request.urlopen(url, timeout=1, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except urllib.error.HTTPError as error:
        return error.code == 401
    except OSError:
        return False


def binary() -> Path:
    found = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not Path(found).is_file():
        raise tools.ToolMissing("docker-registry is not installed: apt-get install docker-registry")
    return Path(found)


def start(
    workdir: Path,
    *,
    extra_config: dict[str, object] | None = None,
    tls: tuple[Path, Path, Path] | None = None,
) -> LocalRegistry:
    """Start a registry storing its blobs under ``workdir``; waits until it answers.

    ``extra_config`` adds top-level settings (e.g. ``auth``); ``tls`` is (certificate, key,
    CA file) to serve HTTPS with a certificate the CA file verifies.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = processes.free_port()
    http: dict[str, object] = {"addr": f"127.0.0.1:{port}"}
    context = None
    if tls is not None:
        certificate, key, ca_file = tls
        http["tls"] = {"certificate": str(certificate), "key": str(key)}
        context = ssl.create_default_context(cafile=str(ca_file))
    settings: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "data")},
            "delete": {"enabled": True},
        },
        "http": http,
        **(extra_config or {}),
    }
    config = workdir / "registry.yml"
    config.write_text(json.dumps(settings))
    log = workdir / "registry.log"
    process = processes.spawn([binary(), "serve", config], log=log)
    running = LocalRegistry(host=f"127.0.0.1:{port}", port=port, pid=process.pid, log=log)
    try:
        processes.wait_until(
            lambda: _answers(f"{'https' if tls else 'http'}://127.0.0.1:{port}/v2/", context),
            what="docker-registry",
            timeout=30,
            process=process,
            log=log,
        )
    except BaseException:
        running.stop()
        raise
    return running
