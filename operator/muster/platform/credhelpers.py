"""Run Docker credential helpers (``docker-credential-<name> get``) for registries that the
node's cloud identity serves: ECR, Artifact Registry, ACR.

Each helper runs as a subprocess found on ``PATH``, never through a shell, with a timeout,
inheriting the operator's environment (the helpers read the pod's workload-identity token
files and variables from it). Answers are kept for ``ttl`` seconds (helpers give no expiry)
and can be forgotten early when the registry refuses them. Concurrent requests for one
registry share one run. Neither the answer nor the helper's output is ever logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterable

from muster.kernel import credhelpers

__all__ = ["CredentialHelpers", "HelperFailed", "check_rules"]

logger = logging.getLogger("muster.registries")
_MAX_OUTPUT = 64 * 1024


class HelperFailed(Exception):
    """A helper gave no usable credentials; the message names the helper, never a secret."""


def check_rules(rules: Iterable[credhelpers.HelperRule]) -> None:
    """``ValueError`` naming a helper that is not on ``PATH`` (a start-up check)."""
    for rule in rules:
        name = credhelpers.executable(rule.helper)
        if shutil.which(name) is None:
            raise ValueError(f"{name} (for {rule.pattern}) is not an executable on PATH")


class CredentialHelpers:
    # Registries whose answers are kept: a glob may match many hosts, and references are the
    # tenants' to write.
    MAX_REGISTRIES = 1024

    def __init__(
        self,
        rules: Iterable[credhelpers.HelperRule],
        *,
        ttl: float = 600.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rules = tuple(rules)
        self.ttl = ttl
        self.timeout = timeout
        self._clock = clock
        self._answers: dict[str, tuple[tuple[str, str], float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.runs = 0  # helper processes started (tests, and what a refresh cost)

    def helper_for(self, registry: str) -> str | None:
        return credhelpers.helper_for(self.rules, registry)

    def expires(self, registry: str) -> float | None:
        """When the kept answer for ``registry`` expires (``clock`` time), if one is kept."""
        entry = self._answers.get(registry)
        return entry[1] if entry is not None else None

    def forget(self, registry: str) -> None:
        """Drop the kept answer: the registry refused it (rotated, revoked, expired early)."""
        self._answers.pop(registry, None)

    async def get(self, registry: str) -> tuple[str, str] | None:
        """``(username, secret)`` for ``registry``; None when no helper is configured for it.
        ``HelperFailed`` when the configured helper has none or fails."""
        helper = self.helper_for(registry)
        if helper is None:
            return None
        lock = self._locks.setdefault(registry, asyncio.Lock())
        async with lock:
            entry = self._answers.get(registry)
            if entry is not None and entry[1] > self._clock():
                return entry[0]
            answer = await self._run(helper, registry)
            self._answers.pop(registry, None)
            self._answers[registry] = (answer, self._clock() + self.ttl)
            while len(self._answers) > self.MAX_REGISTRIES:
                del self._answers[next(iter(self._answers))]
            if len(self._locks) > self.MAX_REGISTRIES:
                self._locks = {name: held for name, held in self._locks.items() if held.locked()}
            return answer

    async def _run(self, helper: str, registry: str) -> tuple[str, str]:
        name = credhelpers.executable(helper)
        path = shutil.which(name)
        if path is None:
            raise HelperFailed(f"credential helper {name} is not an executable on PATH")
        self.runs += 1
        try:
            process = await asyncio.create_subprocess_exec(
                path,
                "get",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as error:
            raise HelperFailed(
                f"credential helper {name} could not start: {error.strerror or error}"
            ) from None
        try:
            stdout, _ = await asyncio.wait_for(
                process.communicate(credhelpers.server_url(registry).encode()), self.timeout
            )
        except TimeoutError:
            raise HelperFailed(
                f"credential helper {name} did not answer for {registry} within "
                f"{self.timeout:g} seconds"
            ) from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with contextlib.suppress(Exception):
                    await process.wait()
        stdout = stdout[:_MAX_OUTPUT]
        if process.returncode != 0:
            if credhelpers.NOT_FOUND in stdout.decode(errors="replace"):
                raise HelperFailed(f"credential helper {name} has no credentials for {registry}")
            # Its output is not quoted: a confused helper may print a secret in an error.
            raise HelperFailed(
                f"credential helper {name} failed for {registry} (exit status {process.returncode})"
            )
        try:
            answer = credhelpers.parse_answer(stdout, helper)
        except credhelpers.HelperAnswerInvalid as error:
            raise HelperFailed(f"credential helper {error} for {registry}") from None
        logger.debug("credential helper %s answered for %s", name, registry)
        return answer
