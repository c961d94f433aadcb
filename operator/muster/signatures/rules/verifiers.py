"""The init container that re-measures an OMS-digested volume on the node before any workload
container starts (``muster model verify``): Models and Datasets are verified the same way.

Pure: it builds the container; the gates decide which volumes get one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from muster.signatures.rules import oms

__all__ = [
    "MOUNT_ROOT",
    "VERIFIER_FIELDS",
    "VERIFIER_PREFIX",
    "hashing_args",
    "verifier_container",
    "verifier_name",
]

MOUNT_ROOT = "/models"
VERIFIER_PREFIX = "muster-verify-"

_SECURITY_CONTEXT: Mapping[str, Any] = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


_DEFAULT_HASHING = oms.Serialization()  # model_signing's default: files, sha256


def verifier_name(volume: str) -> str:
    name = f"{VERIFIER_PREFIX}{volume}"
    if len(name) <= 63:
        return name
    return f"{VERIFIER_PREFIX}{hashlib.sha256(volume.encode()).hexdigest()[:12]}"


def verifier_container(
    volume: str, digest: str, image: str, hashing: oms.Serialization = _DEFAULT_HASHING
) -> dict[str, Any]:
    """The init container that re-measures ``volume`` (hashed as ``hashing`` says, the Model's
    :attr:`~muster.models.rules.registry.ModelSpec.hashing`) and refuses to let the pod start
    on a mismatch (``muster model verify`` exits non-zero)."""
    path = f"{MOUNT_ROOT}/{volume}"
    return {
        "name": verifier_name(volume),
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["muster"],
        "args": ["model", "verify", path, "--digest", digest, *hashing_args(hashing)],
        # The verifier never needs a GPU: saying so spares the GPU gate a read of its image's
        # config (NVIDIA_VISIBLE_DEVICES, docs/gpu-stack.md) and keeps the toolkit away from it.
        "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}],
        "volumeMounts": [{"name": volume, "mountPath": path, "readOnly": True}],
        "securityContext": dict(_SECURITY_CONTEXT),
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"memory": "512Mi"},
        },
    }


def hashing_args(hashing: oms.Serialization) -> list[str]:
    """``muster model verify`` options for a hashing choice; none for the default."""
    args = []
    if hashing.algorithm != "sha256":
        args += ["--hashing-algorithm", hashing.hashing_algorithm]
    if hashing.method == "shards":
        args += ["--shard-size", str(hashing.shard_size)]
    return args


# What makes a verifier the verifier: the validating gate compares exactly these.
VERIFIER_FIELDS = ("image", "command", "args", "env", "volumeMounts", "securityContext")
