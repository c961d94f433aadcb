"""The ``GPUStackPolicy`` spec: which drivers, CUDA versions and toolkits a cluster allows.

Validated once at the edge (pydantic, unknown fields rejected); the CRD's openAPIV3Schema is
generated from the same model by :func:`openapi_schema`, so the two cannot drift. The default
policy is seeded from NVIDIA's security bulletins and lifecycle pages; every entry says where
it comes from.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

import pydantic
from pydantic import alias_generators

from muster.gpu.rules import cuda
from muster.kernel import crds, denials, selectors

__all__ = [
    "DEFAULT_POLICY",
    "DEFAULT_POLICY_SOURCES",
    "Branch",
    "DigestText",
    "DriverRange",
    "DriverRules",
    "GPUStackPolicySpec",
    "ToolkitRange",
    "VersionRange",
    "VersionText",
    "default_policy",
    "openapi_schema",
    "parse_spec",
]

_CONFIG = pydantic.ConfigDict(
    extra="forbid",
    frozen=True,
    alias_generator=alias_generators.to_camel,
    populate_by_name=True,
    # Validators are built on first use: a command builds only those it validates with.
    defer_build=True,
)
_DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
# Patterns land in the CRD schema too, so the apiserver refuses a typo before Muster sees it.
VersionText = Annotated[str, pydantic.StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)*$")]
DigestText = Annotated[str, pydantic.StringConstraints(pattern=_DIGEST_PATTERN)]


def _version(value: str | None) -> str | None:
    if value is not None:
        cuda.parse_version(value)  # VersionError is a ValueError: pydantic reports it
    return value


def _versions(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        cuda.parse_version(value)
    return values


class VersionRange(pydantic.BaseModel):
    """Versions from ``min`` (inclusive) up to ``max`` (exclusive); either end may be open."""

    model_config = _CONFIG

    min: VersionText | None = None
    max: VersionText | None = None
    source: str | None = pydantic.Field(default=None, description="bulletin, CVE or ticket")

    _check_min = pydantic.field_validator("min", "max")(_version)

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> VersionRange:
        if (
            self.min is not None
            and self.max is not None
            and cuda.parse_version(self.min) >= cuda.parse_version(self.max)
        ):
            raise ValueError(f"range is empty: min {self.min} is not below max {self.max}")
        return self

    def contains(self, version: cuda.Version) -> bool:
        if self.min is not None and version < cuda.parse_version(self.min):
            return False
        return self.max is None or version < cuda.parse_version(self.max)

    def describe(self) -> str:
        if self.min and self.max:
            return f">= {self.min} and < {self.max}"
        if self.min:
            return f">= {self.min}"
        if self.max:
            return f"< {self.max}"
        return "any version"


class DriverRange(VersionRange):
    """A driver range, optionally within one branch (``535`` = R535: driver major 535)."""

    branch: int | None = pydantic.Field(default=None, ge=0)

    def contains(self, version: cuda.Version) -> bool:
        if self.branch is not None and version.major != self.branch:
            return False
        return super().contains(version)

    def describe(self) -> str:
        where = f"R{self.branch} " if self.branch is not None else ""
        return f"{where}{super().describe()}"


class Branch(pydantic.BaseModel):
    """A driver branch named as a whole, e.g. one that is end of life."""

    model_config = _CONFIG

    branch: int = pydantic.Field(ge=0)
    source: str | None = None


class DriverRules(pydantic.BaseModel):
    """Ranges per branch and exact versions. An empty allow list allows every driver."""

    model_config = _CONFIG

    ranges: tuple[DriverRange, ...] = ()
    versions: tuple[VersionText, ...] = ()

    _check_versions = pydantic.field_validator("versions")(_versions)

    @property
    def empty(self) -> bool:
        return not self.ranges and not self.versions

    def matches(self, version: cuda.Version) -> list[str]:
        """How ``version`` matches: one line per matching range or exact version."""
        hits = [
            f"{rule.describe()}" + (f" ({rule.source})" if rule.source else "")
            for rule in self.ranges
            if rule.contains(version)
        ]
        hits.extend(
            f"exactly {exact}" for exact in self.versions if cuda.parse_version(exact) == version
        )
        return hits


class ToolkitRange(VersionRange):
    """Container toolkit versions, e.g. the ones a CVE affects (``max`` = first fixed one)."""


class GPUStackPolicySpec(pydantic.BaseModel):
    """What a ``GPUStackPolicy`` object's ``spec`` holds."""

    model_config = _CONFIG

    mode: Literal["enforce", "warn"] = "enforce"
    unknown_nodes: Literal["deny", "warn", "allow"] = pydantic.Field(
        default="deny",
        description="what a GPU pod bound to a node whose GPU stack cannot be judged (no GPU "
        "Feature Discovery labels, no attestation where one is required) gets: deny (as a "
        "non-compliant node, in the policy's mode), warn (admitted with a warning) or allow",
    )
    namespace_selector: selectors.LabelSelector | None = pydantic.Field(
        default=None, description="a Kubernetes label selector for the namespaces it governs"
    )
    allowed_drivers: DriverRules = DriverRules()
    denied_drivers: DriverRules = DriverRules()
    end_of_life_branches: tuple[Branch, ...] = ()
    allowed_cuda_versions: tuple[VersionRange, ...] = pydantic.Field(
        default=(), description="CUDA versions workloads may require; empty allows any"
    )
    minimum_toolkit_version: VersionText | None = None
    denied_toolkit_versions: tuple[ToolkitRange, ...] = ()
    require_attestation: bool = False
    require_envvar_devices_off: bool = pydantic.Field(
        default=False,
        description="nodes' container toolkit must ignore NVIDIA_VISIBLE_DEVICES from "
        "unprivileged containers (accept-nvidia-visible-devices-envvar-when-unprivileged = "
        "false, as the node agent reports it)",
    )
    known_good_module_digests: tuple[DigestText, ...] = pydantic.Field(
        default=(), description="sha256:<hex> digests of approved NVIDIA kernel modules"
    )
    denial: denials.DenialSpec | None = pydantic.Field(
        default=None,
        description="the policy's own message, help page and owner, shown with its denials",
    )

    _check_toolkit = pydantic.field_validator("minimum_toolkit_version")(_version)


def parse_spec(data: object) -> GPUStackPolicySpec:
    """A spec from decoded YAML/JSON; a bad one raises pydantic's ValidationError."""
    return GPUStackPolicySpec.model_validate(data)


_BULLETIN_TOOLKIT_2025_07 = (
    "NVIDIA Security Bulletin: NVIDIA Container Toolkit - July 2025 "
    "(CVE-2025-23266 'NVIDIAScape', CVE-2025-23267; fixed in 1.17.8); "
    "https://nvd.nist.gov/vuln/detail/CVE-2025-23266"
)
_BULLETIN_TOOLKIT_2024_09 = (
    "NVIDIA Security Bulletin: NVIDIA Container Toolkit - September 2024 "
    "(CVE-2024-0132, CVE-2024-0133; fixed in 1.16.2); "
    "https://nvd.nist.gov/vuln/detail/CVE-2024-0132"
)
_BULLETIN_DRIVER = (
    "NVIDIA Security Bulletin: NVIDIA GPU Display Driver, Linux data center branches "
    "(first fixed {fixed}); https://www.nvidia.com/en-us/security/"
)
_LIFECYCLE = (
    "NVIDIA Data Center Driver lifecycle: R{branch} is end of life and gets no security "
    "fixes; https://docs.nvidia.com/datacenter/tesla/drivers/supported-drivers-and-cuda-toolkit-versions.html"
)

# The seed a platform team adopts or overrides; the chart ships it as a GPUStackPolicy.
DEFAULT_POLICY: dict[str, Any] = {
    "mode": "enforce",
    "deniedDrivers": {
        "ranges": [
            {
                "branch": branch,
                "max": fixed,
                "source": _BULLETIN_DRIVER.format(fixed=fixed),
            }
            for branch, fixed in ((535, "535.309.01"), (580, "580.159.03"), (595, "595.71.05"))
        ],
    },
    "endOfLifeBranches": [
        {"branch": branch, "source": _LIFECYCLE.format(branch=branch)}
        for branch in (550, 560, 565, 570, 575)
    ],
    "minimumToolkitVersion": "1.17.8",
    "deniedToolkitVersions": [
        {"max": "1.17.8", "source": _BULLETIN_TOOLKIT_2025_07},
        {"max": "1.16.2", "source": _BULLETIN_TOOLKIT_2024_09},
    ],
}


# Sources of DEFAULT_POLICY's plain values (list entries carry their own ``source`` field);
# the chart's copy states them as comments beside the values.
DEFAULT_POLICY_SOURCES: dict[str, str] = {
    "mode": "Muster: the default policy enforces once a platform team enables it",
    "minimumToolkitVersion": _BULLETIN_TOOLKIT_2025_07,
}


def default_policy() -> GPUStackPolicySpec:
    return parse_spec(copy.deepcopy(DEFAULT_POLICY))


def openapi_schema() -> dict[str, Any]:
    """The CRD version's ``openAPIV3Schema`` for ``GPUStackPolicy`` (spec from the model)."""
    spec = crds.spec_schema(
        GPUStackPolicySpec,
        "Which NVIDIA drivers, CUDA versions and container toolkits are allowed.",
    )
    return {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
        "required": ["spec"],
    }
