"""The image config ``Env`` of NVIDIA's CUDA base images, from their real recipes.

A build's config ``Env`` is the base image's plus each ``ENV`` instruction of the stages it
goes through, in order, ``${VAR}`` expanded. The recipes start ``FROM ubuntu:22.04``, whose
config holds only Docker's default ``PATH``; the per-architecture stage is picked the way
``FROM base-${TARGETARCH}`` picks it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests import paths

__all__ = ["CUDA_124_BASE", "CUDA_124_DOCKERFILE", "dockerfile_env"]

CUDA_124_BASE = "nvidia/cuda:12.4.1-base-ubuntu22.04"
CUDA_124_DOCKERFILE = paths.FIXTURES / "gpu" / "cuda-images" / "12.4.1-base-ubuntu22.04.Dockerfile"
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_FROM = re.compile(r"^FROM\s+(\S+)(?:\s+as\s+(\S+))?\s*$", re.IGNORECASE)
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _expand(text: str, env: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda m: env.get(m[1] or m[2], ""), text)


def dockerfile_env(path: Path = CUDA_124_DOCKERFILE, arch: str = "amd64") -> dict[str, str]:
    """The config ``Env`` of the image ``path`` builds for ``linux/<arch>``."""
    stages: dict[str, dict[str, str]] = {}
    env: dict[str, str] = {}
    build_args = {"TARGETARCH": arch}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if match := _FROM.match(line):
            parent = _expand(match[1], build_args)
            env = dict(stages.get(parent, {"PATH": _DEFAULT_PATH}))
            if match[2]:
                stages[match[2]] = env
        elif line.upper().startswith("ENV "):
            rest = line[4:].strip()
            key, _, value = rest.partition(" ")
            if "=" in key:  # ENV KEY=value [KEY=value ...]
                for word in shlex.split(rest):
                    name, _, text = word.partition("=")
                    env[name] = _expand(text, env)
            else:  # the legacy form: ENV KEY value (the rest of the line)
                env[key] = _expand(" ".join(shlex.split(value)), env)
    return env
