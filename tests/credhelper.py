"""A Docker credential helper for tests: ``docker-credential-testhelper``, a real executable
speaking the protocol, whose answers a test changes by rewriting its state file."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

NAME = "testhelper"

_SCRIPT = """#!{python}
import json, pathlib, sys, time
state = json.loads(pathlib.Path({state!r}).read_text())
server = sys.stdin.read()
with open({calls!r}, "a") as calls:
    calls.write(server + "\\n")
mode = state.get("mode", "answer")
if mode == "hang":
    time.sleep(3600)
if mode == "garbage":
    print("Secret=" + state["secret"] + " and not JSON")
    sys.exit(0)
if mode == "fail":
    print("cannot reach the identity service, secret " + state["secret"])
    sys.exit(3)
if server not in state.get("servers", []):
    print("credentials not found in native keychain")
    sys.exit(1)
print(json.dumps({{"ServerURL": server, "Username": state["username"], "Secret": state["secret"]}}))
"""


@dataclasses.dataclass(frozen=True)
class Helper:
    directory: Path  # put on PATH
    state: Path
    calls: Path

    def set(self, **state: Any) -> None:
        self.state.write_text(json.dumps(state))

    @property
    def asked(self) -> list[str]:
        """The server URLs the helper was asked about, in order."""
        if not self.calls.exists():
            return []
        return [line for line in self.calls.read_text().splitlines() if line]


def install(directory: Path, name: str = NAME) -> Helper:
    directory.mkdir(parents=True, exist_ok=True)
    helper = Helper(directory, directory / f"{name}.state.json", directory / f"{name}.calls")
    script = directory / f"docker-credential-{name}"
    script.write_text(
        _SCRIPT.format(python=sys.executable, state=str(helper.state), calls=str(helper.calls))
    )
    script.chmod(0o755)
    helper.set(mode="missing")
    return helper


def path_with(directory: Path) -> str:
    return f"{directory}{os.pathsep}{os.environ.get('PATH', '')}"
