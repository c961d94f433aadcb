"""GPUs reached without asking: ``NVIDIA_VISIBLE_DEVICES`` in a container that requests no GPU.

The NVIDIA container toolkit, configured the default way, hands a container the GPUs that its
``NVIDIA_VISIBLE_DEVICES`` names (``all``: every GPU of the node), whether the scheduler gave it
any or not. The variable can come from the pod's ``env``, from ``envFrom`` or ``valueFrom``
(a ConfigMap the tenant writes), or from the image config (NVIDIA's CUDA base images set
``all``). The toolkit's rules (``internal/config/image/cuda_image.go``):

* ``void``, the empty string and an unset variable give no GPU; ``none`` gives the driver's
  libraries and no GPU;
* unset in a *legacy* CUDA image (``CUDA_VERSION`` set, ``NVIDIA_REQUIRE_CUDA`` unset or empty)
  means ``all``.

Kubernetes builds the environment the toolkit sees: the image's, then ``envFrom`` (later sources
win), then ``env`` (the last entry of a name wins, ``$(VAR)`` expanded). Admission cannot read a
ConfigMap or Secret a tenant may change later, so a value it cannot see counts as granting GPUs.
Only the exact values ``void``, ``none`` and the empty string are taken as no access: older
toolkits compare the whole value. Everything here is pure; image configs arrive as data.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from muster.gpu.rules import pods as gpupods
from muster.gpu.rules import policies as gpupolicies
from muster.kernel import findings, pods

__all__ = [
    "NO_ACCESS",
    "REASON",
    "VARIABLE",
    "Candidate",
    "Exposure",
    "Setting",
    "candidates",
    "exposure",
    "findings_for",
    "grants_access",
    "needs_image_env",
    "pod_setting",
    "requests_devices",
    "unreadable_finding",
]

VARIABLE = "NVIDIA_VISIBLE_DEVICES"
NO_ACCESS = frozenset({"", "void", "none"})
REASON = "GPUAccessNotRequested"
_CUDA_VERSION = "CUDA_VERSION"
_REQUIRE_CUDA = "NVIDIA_REQUIRE_CUDA"
_DEVICE_RESOURCE_PREFIX = "nvidia.com/"
_FIELDS = {
    "container": "containers",
    "initContainer": "initContainers",
    "ephemeralContainer": "ephemeralContainers",
}
# A Kubernetes quantity: a number with an optional suffix (SI, binary or exponent).
_QUANTITY = re.compile(
    r"^[+]?(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+|[a-zA-Z]{1,2})?$"
)


def grants_access(value: str) -> bool:
    """Whether the toolkit gives GPUs for this value of ``NVIDIA_VISIBLE_DEVICES``."""
    return value not in NO_ACCESS


def _positive(quantity: object) -> bool:
    if isinstance(quantity, bool):
        return False
    if isinstance(quantity, int | float):
        return quantity > 0
    match = _QUANTITY.match(str(quantity).strip())
    return match is not None and float(match["number"]) > 0


def requests_devices(container: Mapping[str, Any]) -> bool:
    """Whether the container asks the scheduler for NVIDIA devices: a positive quantity of an
    ``nvidia.com/`` resource (``nvidia.com/gpu: 0`` asks for none, and the toolkit still
    honours the variable), or a resource claim (DRA)."""
    resources = container.get("resources")
    if not isinstance(resources, Mapping):
        return False
    for kind in ("limits", "requests"):
        values = resources.get(kind)
        if isinstance(values, Mapping) and any(
            str(name).startswith(_DEVICE_RESOURCE_PREFIX) and _positive(quantity)
            for name, quantity in values.items()
        ):
            return True
    claims = resources.get("claims")
    return isinstance(claims, list) and bool(claims)


@dataclasses.dataclass(frozen=True, slots=True)
class Candidate:
    """A container that requests no NVIDIA device, so must not reach one."""

    label: str
    image: str | None
    container: Mapping[str, Any]


def candidates(spec: Mapping[str, Any]) -> list[Candidate]:
    """Every container, init and ephemeral container of the pod spec that requests no device."""
    found: list[Candidate] = []
    for use in pods.image_uses(spec):
        field = _FIELDS.get(use.kind)
        if field is None:
            continue
        index = int(use.pointer.split("/")[-2])
        raw = spec.get(field)
        container = raw[index] if isinstance(raw, list) else None
        if not isinstance(container, Mapping) or requests_devices(container):
            continue
        found.append(
            Candidate(use.label, use.image if isinstance(use.image, str) else None, container)
        )
    return found


@dataclasses.dataclass(frozen=True, slots=True)
class Setting:
    """A variable's value as the container will see it; ``value`` None: not knowable now."""

    value: str | None
    source: str


def _describe_value_from(value_from: Mapping[str, Any]) -> str:
    for key, what in (
        ("configMapKeyRef", "ConfigMap"),
        ("secretKeyRef", "Secret"),
    ):
        ref = value_from.get(key)
        if isinstance(ref, Mapping):
            return f"{what} {ref.get('name', '?')} key {ref.get('key', '?')}"
    field = value_from.get("fieldRef")
    if isinstance(field, Mapping):
        return f"field {field.get('fieldPath', '?')}"
    return ", ".join(sorted(str(key) for key in value_from)) or "valueFrom"


def _env_from_sources(container: Mapping[str, Any], name: str) -> list[str]:
    sources: list[str] = []
    raw = container.get("envFrom")
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, Mapping):
            continue
        prefix = item.get("prefix") or ""
        if not isinstance(prefix, str) or not name.startswith(prefix) or name == prefix:
            continue
        for key, what in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            ref = item.get(key)
            if isinstance(ref, Mapping):
                where = f"{what} {ref.get('name', '?')}"
                sources.append(f"{where} (prefix {prefix})" if prefix else where)
    return sources


def pod_setting(container: Mapping[str, Any], name: str) -> Setting | None:
    """The variable as the pod spec sets it, or None when the pod leaves it to the image."""
    last: Mapping[str, Any] | None = None
    env = container.get("env")
    for item in env if isinstance(env, list) else []:
        if isinstance(item, Mapping) and item.get("name") == name:
            last = item  # kubelet: the last entry of a name wins
    if last is not None:
        value = last.get("value")
        value_from = last.get("valueFrom")
        if isinstance(value, str) and value:
            if "$(" in value:  # kubelet expands $(VAR) from other variables
                return Setting(None, f"the pod's env as {value!r}, which refers to other variables")
            return Setting(value, "the pod's env")
        if isinstance(value_from, Mapping) and value_from:
            return Setting(
                None,
                f"the pod's env from {_describe_value_from(value_from)}, unreadable at admission",
            )
        return Setting("", "the pod's env")
    sources = _env_from_sources(container, name)
    if sources:
        return Setting(None, f"envFrom {', '.join(sources)}, unreadable at admission")
    return None


def needs_image_env(container: Mapping[str, Any]) -> bool:
    """Whether the image config decides: the pod spec does not set the variable itself."""
    return pod_setting(container, VARIABLE) is None


def _effective(
    container: Mapping[str, Any], name: str, image: str | None, image_env: Mapping[str, str]
) -> Setting | None:
    setting = pod_setting(container, name)
    if setting is not None:
        return setting
    if name in image_env:
        return Setting(image_env[name], f"the image config of {image}")
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Exposure:
    """A container that reaches GPUs it did not request, and where that comes from."""

    label: str
    setting: Setting
    legacy: bool = False  # unset variable in a legacy CUDA image: the toolkit's ``all``

    def message(self) -> str:
        fix = "request nvidia.com/gpu, or set NVIDIA_VISIBLE_DEVICES=void in the container's env"
        if self.legacy:
            return (
                f"requests no GPU, yet {VARIABLE} is unset and {_CUDA_VERSION} "
                f"({self.setting.source}) without {_REQUIRE_CUDA} makes it a legacy CUDA image, "
                f"to which the NVIDIA container toolkit gives every GPU of the node; {fix}"
            )
        if self.setting.value is None:
            shown = f"{VARIABLE} from {self.setting.source}"
        else:
            shown = f"{VARIABLE}={self.setting.value} from {self.setting.source}"
        return (
            f"requests no GPU, yet {shown} makes the NVIDIA container toolkit give it GPUs "
            f"outside the scheduler's accounting and the GPU stack policy; {fix}"
        )


def exposure(candidate: Candidate, image_env: Mapping[str, str] | None) -> Exposure | None:
    """Whether ``candidate`` reaches GPUs; ``image_env`` is its image config's environment
    (None only when :func:`needs_image_env` said it is not needed)."""
    container = candidate.container
    devices = pod_setting(container, VARIABLE)
    if devices is None:
        if image_env is None:
            raise ValueError(f"{candidate.label}: the image's environment is needed")
        if VARIABLE in image_env:
            devices = Setting(image_env[VARIABLE], f"the image config of {candidate.image}")
    if devices is not None:
        if devices.value is not None and not grants_access(devices.value):
            return None
        return Exposure(candidate.label, devices)
    env = image_env or {}
    version = _effective(container, _CUDA_VERSION, candidate.image, env)
    require = _effective(container, _REQUIRE_CUDA, candidate.image, env)
    # Legacy unless CUDA_VERSION is surely empty or NVIDIA_REQUIRE_CUDA surely set.
    if version is None or version.value == "":
        return None
    if require is not None and require.value:
        return None
    return Exposure(candidate.label, version, legacy=True)


def findings_for(
    exposures: Sequence[Exposure],
    policies: Mapping[str, gpupolicies.GPUStackPolicySpec],
) -> list[findings.Finding]:
    """One finding per exposure, in the strictest mode of the governing policies."""
    return [
        findings.Finding(
            check=gpupods.CHECK,
            reason=REASON,
            subject=item.label,
            message=item.message(),
            mode=gpupods.strictest_mode(policies),
            policy=gpupods.deciding_policy(policies),
        )
        for item in exposures
    ]


def unreadable_finding(
    candidate: Candidate,
    error: str,
    policies: Mapping[str, gpupolicies.GPUStackPolicySpec],
) -> findings.Finding:
    """The image config could not be read, so whether it sets the variable is unknown: that
    fails closed in enforce mode (the pod spec can settle it without the image)."""
    return findings.Finding(
        check=gpupods.CHECK,
        reason="ImageConfigUnreadable",
        subject=candidate.label,
        message=f"{error}; whether its image sets {VARIABLE} cannot be checked (set "
        f"{VARIABLE}=void in the container's env, or request nvidia.com/gpu)",
        mode=gpupods.strictest_mode(policies),
        policy=gpupods.deciding_policy(policies),
    )
