"""The init container that re-measures an OMS-digested volume on the node before any workload
container starts (``muster model verify``): Models and Datasets are verified the same way.

Pure: it builds the container; the gates decide which volumes get one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from muster.kernel import findings, subjects
from muster.signatures.rules import oms

__all__ = [
    "MOUNT_ROOT",
    "VERIFIER_FIELDS",
    "VERIFIER_PREFIX",
    "has_verifier",
    "hashing_args",
    "missing_verifiers",
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


def _sub_path_key(volume: str, sub_path: str) -> str:
    """A name for ``sub_path`` of ``volume`` that is a DNS label part and a path segment; text
    that had to be changed to fit gets a hash of the original, so two sub-paths never share one."""
    text = f"{volume}-{sub_path}"
    safe = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if safe == text:
        return safe
    return f"{safe[:40].rstrip('-')}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def verifier_container(
    volume: str,
    digest: str,
    image: str,
    hashing: oms.Serialization = _DEFAULT_HASHING,
    *,
    sub_path: str | None = None,
) -> dict[str, Any]:
    """The init container that re-measures ``volume`` (hashed as ``hashing`` says, the Model's
    :attr:`~muster.models.rules.registry.ModelSpec.hashing`) and refuses to let the pod start
    on a mismatch (``muster model verify`` exits non-zero). With ``sub_path`` only that
    directory of the volume is mounted (read-only) and re-measured: a Trainer initializer
    downloads into a sub-directory of the volume its trainer mounts whole."""
    key = volume if not sub_path else _sub_path_key(volume, sub_path)
    path = f"{MOUNT_ROOT}/{key}"
    mount: dict[str, Any] = {"name": volume, "mountPath": path, "readOnly": True}
    if sub_path:
        mount["subPath"] = sub_path
    return {
        "name": verifier_name(key),
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["muster"],
        "args": ["model", "verify", path, "--digest", digest, *hashing_args(hashing)],
        # The verifier never needs a GPU: saying so spares the GPU gate a read of its image's
        # config (NVIDIA_VISIBLE_DEVICES, docs/gpu-stack.md) and keeps the toolkit away from it.
        "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}],
        "volumeMounts": [mount],
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


def missing_verifiers(
    template: subjects.PodTemplate,
    expected: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    check: str,
    reason: str,
    mode: findings.Mode,
) -> list[findings.Finding]:
    """A finding for each ``(subject, verifier)`` of ``expected`` whose init container the
    template lacks, or has with other :data:`VERIFIER_FIELDS` (the mutating gate did not run)."""
    by_name = _init_containers(template)
    missing: list[findings.Finding] = []
    for subject, container in expected:
        if not _same_verifier(by_name.get(container["name"]), container):
            missing.append(
                findings.Finding(
                    check=check,
                    reason=reason,
                    subject=subject,
                    message=f"has no verifying init container {container['name']!r} "
                    "(is Muster's mutating webhook registered?)",
                    mode=mode,
                )
            )
    return missing


def has_verifier(template: subjects.PodTemplate, container: Mapping[str, Any]) -> bool:
    """Whether the template has ``container`` as an init container, as Muster writes it."""
    return _same_verifier(_init_containers(template).get(container["name"]), container)


def _init_containers(template: subjects.PodTemplate) -> dict[object, Mapping[str, Any]]:
    existing = template.spec.get("initContainers")
    return {
        c.get("name"): c
        for c in (existing if isinstance(existing, list) else ())
        if isinstance(c, Mapping)
    }


def _same_verifier(actual: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    return actual is not None and all(
        actual.get(field) == wanted[field] for field in VERIFIER_FIELDS
    )
