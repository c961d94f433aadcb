"""GPU nodes: their facts, whether their stack is allowed, and whether a workload fits them.

Facts come from GPU Feature Discovery labels (which anyone allowed to patch a Node can forge)
and, when present, from Muster's node agent, whose own measurements win and must agree with
the labels. Everything here is pure: the agent's raw outputs arrive as strings.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence

from muster.gpu.rules import cuda
from muster.gpu.rules import policies as gpupolicies

__all__ = [
    "ATTESTATION_ANNOTATION",
    "CUDA_CAPABILITY_LABEL",
    "CUDA_FULL",
    "CUDA_PARTS",
    "CUDA_PARTS_OLD",
    "DRIVER_FULL",
    "DRIVER_PARTS",
    "DRIVER_PARTS_OLD",
    "STATE_LABEL",
    "TOOLKIT_ENVVAR_KEY",
    "AgentOutputError",
    "Attestation",
    "Compliance",
    "EnvFlag",
    "Fit",
    "KernelModule",
    "NodeFacts",
    "Reason",
    "State",
    "ToolkitVersion",
    "assess",
    "capability",
    "env_flags",
    "fit",
    "from_capability",
    "node_facts",
    "node_from_manifest",
    "parse_attestation",
    "parse_module_version",
    "parse_proc_driver_version",
    "parse_toolkit_config",
    "parse_toolkit_version",
    "published_labels",
    "workload_cuda_allowed",
]

_NV = "nvidia.com/"
DRIVER_FULL = _NV + "cuda.driver-version.full"
DRIVER_PARTS = tuple(_NV + f"cuda.driver-version.{p}" for p in ("major", "minor", "revision"))
DRIVER_PARTS_OLD = tuple(_NV + f"cuda.driver.{p}" for p in ("major", "minor", "rev"))
CUDA_FULL = _NV + "cuda.runtime-version.full"
CUDA_PARTS = tuple(_NV + f"cuda.runtime-version.{p}" for p in ("major", "minor"))
CUDA_PARTS_OLD = tuple(_NV + f"cuda.runtime.{p}" for p in ("major", "minor"))

# Published by Muster on Nodes for scheduling: node affinity Gt/Lt compares integers only.
CUDA_CAPABILITY_LABEL = "muster.dev/cuda-capability"
STATE_LABEL = "muster.dev/gpu-stack"
# Where the node agent's measurement travels on the Node (JSON, see parse_attestation).
ATTESTATION_ANNOTATION = "muster.dev/gpu-attestation"

_MIG_PROFILE_RE = re.compile(r"nvidia\.com/mig-(?P<profile>[^/]+)\.count")
_MEMORY_BYTES_THRESHOLD = 10**7  # MiB; no GPU has ~10 TiB, so larger values are bytes


def capability(version: cuda.Version) -> int:
    """The integer NVML uses for a CUDA version (``12.4`` -> ``12040``)."""
    if version.minor >= 100:
        raise cuda.VersionError(f"CUDA {version} has no integer capability (minor >= 100)")
    return version.major * 1000 + version.minor * 10


def from_capability(value: int) -> cuda.Version:
    """``12040`` -> ``12.4`` (as ``cuDriverGetVersion``/NVML encode it)."""
    if value < 1000:
        raise cuda.VersionError(f"{value} is not a CUDA capability integer")
    major, minor = value // 1000, (value % 1000) // 10
    return cuda.Version(f"{major}.{minor}", (major, minor))


# --- facts from labels -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class NodeFacts:
    """What GPU Feature Discovery says about a node; ``problems`` lists labels that are
    malformed or contradict each other (GFD never writes those: someone else did)."""

    name: str
    gpu: bool
    driver: cuda.Version | None = None
    driver_label: str | None = None
    cuda_version: cuda.Version | None = None
    cuda_label: str | None = None
    product: str | None = None
    count: int | None = None
    memory_mib: int | None = None
    compute: str | None = None
    family: str | None = None
    mig_capable: bool | None = None
    mig_strategy: str | None = None
    mig_profiles: tuple[str, ...] = ()
    sharing_strategy: str | None = None
    replicas: int | None = None
    problems: tuple[str, ...] = ()


def _int(labels: Mapping[str, str], key: str, problems: list[str]) -> int | None:
    value = labels.get(key)
    if value is None or value == "":
        return None
    if not value.isascii() or not value.isdigit():
        problems.append(f"label {key}={value!r} is not a whole number")
        return None
    return int(value)


def _version_label(labels: Mapping[str, str], key: str, problems: list[str]) -> cuda.Version | None:
    value = labels.get(key)
    if value is None:
        return None
    try:
        return cuda.parse_version(value)
    except cuda.VersionError:
        problems.append(f"label {key}={value!r} is not a version")
        return None


def _joined(labels: Mapping[str, str], keys: Sequence[str]) -> str | None:
    """``major.minor[.rev]`` from part labels; an empty last part (``rev: ""``) is left out."""
    parts = [labels.get(key) for key in keys]
    if parts[0] is None or parts[1] is None:
        return None
    present = [part for part in parts if part]
    return ".".join(present)


def _version_from_labels(
    labels: Mapping[str, str],
    full_key: str,
    part_keys: Sequence[Sequence[str]],
    problems: list[str],
) -> tuple[cuda.Version | None, str | None]:
    """The version from ``full_key`` (it keeps the spelling, ``03`` included), else from the
    part labels; every spelling present must name the same version."""
    candidates: list[tuple[str, cuda.Version]] = []
    full = _version_label(labels, full_key, problems)
    if full is not None:
        candidates.append((full_key, full))
    for keys in part_keys:
        text = _joined(labels, keys)
        if text is None:
            continue
        family = keys[0].rsplit(".", 1)[0] + ".*"
        try:
            candidates.append((family, cuda.parse_version(text)))
        except cuda.VersionError:
            problems.append(f"labels {family} make {text!r}, not a version")
    if not candidates:
        return None, None
    first_label, first = candidates[0]
    for label, version in candidates[1:]:
        if version != first:  # GFD writes them all from one value: someone else wrote this
            problems.append(f"{label} says {version} but {first_label} says {first}")
    return first, first_label


def node_facts(labels: Mapping[str, str], *, name: str = "") -> NodeFacts:
    """Facts from a node's labels (values must already be strings)."""
    problems: list[str] = []
    driver, driver_label = _version_from_labels(
        labels, DRIVER_FULL, (DRIVER_PARTS, DRIVER_PARTS_OLD), problems
    )
    cuda_version, cuda_label = _version_from_labels(
        labels, CUDA_FULL, (CUDA_PARTS, CUDA_PARTS_OLD), problems
    )
    memory = _int(labels, _NV + "gpu.memory", problems)
    if memory is not None and memory >= _MEMORY_BYTES_THRESHOLD:
        memory //= 2**20  # the OpenShift time-slicing sample reports bytes
    compute_major = _int(labels, _NV + "gpu.compute.major", problems)
    compute_minor = _int(labels, _NV + "gpu.compute.minor", problems)
    compute = f"{compute_major}.{compute_minor or 0}" if compute_major is not None else None
    mig_capable = labels.get(_NV + "mig.capable")
    profiles = sorted(
        match["profile"] for key in labels if (match := _MIG_PROFILE_RE.fullmatch(key))
    )
    gpu = any(key.startswith(_NV) for key in labels) and (
        labels.get(_NV + "gpu.present", "true") == "true"
    )
    return NodeFacts(
        name=name,
        gpu=gpu,
        driver=driver,
        driver_label=driver_label,
        cuda_version=cuda_version,
        cuda_label=cuda_label,
        product=labels.get(_NV + "gpu.product") or None,
        count=_int(labels, _NV + "gpu.count", problems),
        memory_mib=memory,
        compute=compute,
        family=labels.get(_NV + "gpu.family") or None,
        mig_capable=None if mig_capable is None else mig_capable == "true",
        mig_strategy=labels.get(_NV + "mig.strategy") or None,
        mig_profiles=tuple(profiles),
        sharing_strategy=labels.get(_NV + "gpu.sharing-strategy") or None,
        replicas=_int(labels, _NV + "gpu.replicas", problems),
        problems=tuple(problems),
    )


def node_from_manifest(node: Mapping[str, object]) -> tuple[NodeFacts, Attestation | None]:
    """Facts and the agent's attestation (if annotated) from a decoded Node object."""
    metadata = node.get("metadata")
    if not isinstance(metadata, Mapping):
        raise ValueError("a Node needs metadata")
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    if not isinstance(labels, Mapping) or not isinstance(annotations, Mapping):
        raise ValueError("metadata.labels and metadata.annotations must be maps")
    name = metadata.get("name")
    facts = node_facts(_strings(labels, "label"), name=name if isinstance(name, str) else "")
    raw = annotations.get(ATTESTATION_ANNOTATION)
    return facts, (parse_attestation(raw) if raw is not None else None)


def _strings(values: Mapping[object, object], what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"{what} {key!r} must map a string to a string, not {value!r}")
        result[key] = value
    return result


# --- the node agent's raw inputs ---------------------------------------------------------


class AgentOutputError(ValueError):
    """An agent input that does not look like what the driver or toolkit prints."""


@dataclasses.dataclass(frozen=True, slots=True)
class KernelModule:
    """The loaded NVIDIA kernel module as ``/proc/driver/nvidia/version`` describes it."""

    version: cuda.Version
    open: bool  # the open GPU kernel modules, not the proprietary ones
    arch: str | None


_NVRM_RE = re.compile(
    r"NVRM version: NVIDIA UNIX (?:(?P<open>Open )?Kernel Module for (?P<arch>\S+)"
    r"|(?P<arch2>\S+) Kernel Module)\s+(?P<version>[0-9]+(?:\.[0-9]+)+)(?:\s|$)"
)


def parse_proc_driver_version(text: str) -> KernelModule:
    """The first line of ``/proc/driver/nvidia/version``."""
    first = text.lstrip("\n").split("\n", 1)[0].strip()
    match = _NVRM_RE.match(first)
    if match is None:
        raise AgentOutputError(f"not an NVRM version line: {first[:120]!r}")
    return KernelModule(
        version=cuda.parse_version(match["version"]),
        open=bool(match["open"]),
        arch=match["arch"] or match["arch2"],
    )


def parse_module_version(text: str) -> cuda.Version:
    """``/sys/module/nvidia/version``: the version and a newline."""
    try:
        return cuda.parse_version(text.strip())
    except cuda.VersionError as error:
        raise AgentOutputError(f"not a module version: {text.strip()[:60]!r}") from error


@dataclasses.dataclass(frozen=True, slots=True)
class ToolkitVersion:
    """A container toolkit version (``1.17.0-rc.2`` is before ``1.17.0``)."""

    version: cuda.Version
    prerelease: str = ""
    commit: str | None = None
    component: str = ""

    def __str__(self) -> str:
        return f"{self.version}-{self.prerelease}" if self.prerelease else str(self.version)

    def before(self, release: cuda.Version) -> bool:
        """Whether this comes before the release ``release``."""
        return self.version < release or (self.version == release and bool(self.prerelease))


_TOOLKIT_RE = re.compile(
    r"^(?:(?P<component>NVIDIA Container (?:Runtime Hook|Toolkit CLI|Runtime)) version"
    r"|(?P<cli>cli-version):)\s*v?(?P<version>[0-9]+(?:\.[0-9]+)+)(?:-(?P<pre>[0-9A-Za-z.-]+))?\s*$",
    re.MULTILINE,
)
_COMMIT_RE = re.compile(
    r"^(?:commit|build revision):\s*(?P<commit>[0-9a-f]{7,40})\s*$", re.MULTILINE
)


def parse_toolkit_version(text: str) -> ToolkitVersion:
    """``nvidia-ctk --version``, ``nvidia-container-runtime-hook --version`` (as the
    ``nvidia-container-toolkit`` binary prints it) or ``nvidia-container-cli --version``."""
    match = _TOOLKIT_RE.search(text)
    if match is None:
        raise AgentOutputError(f"no toolkit version in {text.strip()[:120]!r}")
    commit = _COMMIT_RE.search(text, match.end())
    return ToolkitVersion(
        version=cuda.parse_version(match["version"]),
        prerelease=match["pre"] or "",
        commit=commit["commit"] if commit else None,
        component=match["component"] or "nvidia-container-cli",
    )


# The container toolkit's config.toml key (top level) deciding whether an unprivileged
# container's NVIDIA_VISIBLE_DEVICES is honoured; absent means true.
TOOLKIT_ENVVAR_KEY = "accept-nvidia-visible-devices-envvar-when-unprivileged"


def parse_toolkit_config(text: str) -> bool:
    """Whether the toolkit ``config.toml`` text lets unprivileged containers pick GPUs with
    ``NVIDIA_VISIBLE_DEVICES`` (its default, when the key is absent or commented out)."""
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise AgentOutputError(f"toolkit config is not TOML: {error}") from error
    value = config.get(TOOLKIT_ENVVAR_KEY, True)
    if not isinstance(value, bool):
        # The toolkit refuses to load such a file; say what is wrong rather than guess.
        raise AgentOutputError(f"{TOOLKIT_ENVVAR_KEY} is {value!r}, not true or false")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class Attestation:
    """What Muster's node agent measured on the node itself."""

    driver: cuda.Version | None = None
    cuda_version: cuda.Version | None = None
    toolkit: ToolkitVersion | None = None
    module_digests: tuple[tuple[str, str], ...] = ()  # (module file, "sha256:<hex>")
    brand: str | None = None
    library_digests: tuple[tuple[str, str], ...] = ()  # (libcuda.so.*, ..., "sha256:<hex>")
    # The toolkit's TOOLKIT_ENVVAR_KEY as configured on the node (None: not reported).
    toolkit_accepts_envvar: bool | None = None


_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def parse_attestation(raw: object) -> Attestation:
    """The agent's JSON object (text or decoded): ``driverVersion``, ``cudaDriverVersion``
    (``12.4`` or ``12040``), ``toolkitVersion``, ``moduleDigests`` and ``libraryDigests`` (file
    -> ``sha256:<hex>``), ``brand``, ``toolkitAcceptsEnvvarUnprivileged`` (bool). Anything
    else raises ValueError."""
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as error:
        raise ValueError(f"attestation is not JSON: {error.msg}") from error
    if not isinstance(data, Mapping):
        raise ValueError("attestation must be a JSON object")
    unknown = set(data) - {
        "driverVersion", "cudaDriverVersion", "toolkitVersion", "moduleDigests", "brand",
        "libraryDigests", "toolkitAcceptsEnvvarUnprivileged",
    }  # fmt: skip
    if unknown:
        raise ValueError(f"attestation has unknown fields: {sorted(map(str, unknown))}")
    driver = data.get("driverVersion")
    cuda_raw = data.get("cudaDriverVersion")
    toolkit = data.get("toolkitVersion")
    digests = data.get("moduleDigests") or {}
    brand = data.get("brand")
    if driver is not None and not isinstance(driver, str):
        raise ValueError("attestation driverVersion must be a string")
    if toolkit is not None and not isinstance(toolkit, str):
        raise ValueError("attestation toolkitVersion must be a string")
    if brand is not None and not isinstance(brand, str):
        raise ValueError("attestation brand must be a string")
    accepts = data.get("toolkitAcceptsEnvvarUnprivileged")
    if accepts is not None and not isinstance(accepts, bool):
        raise ValueError("attestation toolkitAcceptsEnvvarUnprivileged must be true or false")
    if not isinstance(digests, Mapping):
        raise ValueError("attestation moduleDigests must map file names to digests")
    cuda_version: cuda.Version | None
    if cuda_raw is None:
        cuda_version = None
    elif isinstance(cuda_raw, int) and not isinstance(cuda_raw, bool):
        cuda_version = from_capability(cuda_raw)
    elif isinstance(cuda_raw, str):
        cuda_version = cuda.parse_version(cuda_raw)
    else:
        raise ValueError("attestation cudaDriverVersion must be 12.4 or 12040")
    libraries = data.get("libraryDigests") or {}
    if not isinstance(libraries, Mapping):
        raise ValueError("attestation libraryDigests must map file names to digests")
    pairs = sorted(_strings(digests, "module digest").items())
    library_pairs = sorted(_strings(libraries, "library digest").items())
    for module, digest in (*pairs, *library_pairs):
        if not _DIGEST_RE.fullmatch(digest):
            raise ValueError(f"file {module} digest {digest!r} is not sha256:<64 hex>")
    return Attestation(
        driver=cuda.parse_version(driver) if driver is not None else None,
        cuda_version=cuda_version,
        toolkit=parse_toolkit_version(f"cli-version: {toolkit}") if toolkit is not None else None,
        module_digests=tuple(pairs),
        brand=brand,
        library_digests=tuple(library_pairs),
        toolkit_accepts_envvar=accepts,
    )


# --- compliance --------------------------------------------------------------------------


class State(enum.StrEnum):
    COMPLIANT = "compliant"
    NON_COMPLIANT = "non-compliant"
    UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True, slots=True)
class Reason:
    """Why a node is not compliant (or cannot be judged): a stable code, a sentence, a source."""

    code: str
    message: str
    state: State = State.NON_COMPLIANT
    source: str | None = None

    def __str__(self) -> str:
        return f"{self.message} [{self.source}]" if self.source else self.message


@dataclasses.dataclass(frozen=True, slots=True)
class Compliance:
    node: str
    state: State
    reasons: tuple[Reason, ...]
    driver: cuda.Version | None
    cuda_version: cuda.Version | None
    toolkit: ToolkitVersion | None

    @property
    def compliant(self) -> bool:
        return self.state is State.COMPLIANT


def published_labels(compliance: Compliance) -> dict[str, str]:
    """The labels Muster sets on a Node: its state, and the highest CUDA version its (measured
    or claimed) driver supports as an integer, so pods can ask ``Gt 12039`` for ``cuda>=12.4``."""
    labels = {STATE_LABEL: str(compliance.state)}
    if compliance.cuda_version is not None:
        labels[CUDA_CAPABILITY_LABEL] = str(capability(compliance.cuda_version))
    return labels


def _driver_reasons(driver: cuda.Version, policy: gpupolicies.GPUStackPolicySpec) -> list[Reason]:
    reasons: list[Reason] = []
    for rule in policy.denied_drivers.ranges:
        if rule.contains(driver):
            reasons.append(
                Reason(
                    "DriverDenied",
                    f"driver {driver} is denied ({rule.describe()})",
                    source=rule.source,
                )
            )
    for exact in policy.denied_drivers.versions:
        if cuda.parse_version(exact) == driver:
            reasons.append(Reason("DriverDenied", f"driver {driver} is denied by name"))
    for branch in policy.end_of_life_branches:
        if driver.major == branch.branch:
            reasons.append(
                Reason(
                    "DriverEndOfLife",
                    f"driver {driver} is on branch R{branch.branch}, which is end of life",
                    source=branch.source,
                )
            )
    if not policy.allowed_drivers.empty and not policy.allowed_drivers.matches(driver):
        reasons.append(
            Reason("DriverNotAllowed", f"driver {driver} is not on the policy's allowed list")
        )
    return reasons


def _toolkit_reasons(
    toolkit: ToolkitVersion | None, policy: gpupolicies.GPUStackPolicySpec
) -> list[Reason]:
    constrained = policy.minimum_toolkit_version is not None or policy.denied_toolkit_versions
    if not constrained:
        return []
    if toolkit is None:
        return [
            Reason(
                "ToolkitUnknown",
                "container toolkit version unknown (no node agent attestation)",
                state=State.UNKNOWN,
            )
        ]
    reasons: list[Reason] = []
    for rule in policy.denied_toolkit_versions:
        low = rule.min is None or not toolkit.before(cuda.parse_version(rule.min))
        high = rule.max is None or toolkit.before(cuda.parse_version(rule.max))
        if low and high:
            reasons.append(
                Reason(
                    "ToolkitVulnerable",
                    f"container toolkit {toolkit} is affected ({rule.describe()})",
                    source=rule.source,
                )
            )
    minimum = policy.minimum_toolkit_version
    if minimum is not None and toolkit.before(cuda.parse_version(minimum)):
        reasons.append(
            Reason("ToolkitTooOld", f"container toolkit {toolkit} is older than {minimum}")
        )
    return reasons


_ENVVAR_HARDENING = (
    "NVIDIA GPU Operator, Security Considerations: Preventing Unprivileged Access to GPUs; "
    "https://docs.nvidia.com/datacenter/cloud-native/gpu-operator/latest/security.html"
)


def _envvar_reasons(
    attestation: Attestation | None, policy: gpupolicies.GPUStackPolicySpec
) -> list[Reason]:
    if not policy.require_envvar_devices_off:
        return []
    accepts = attestation.toolkit_accepts_envvar if attestation is not None else None
    if accepts is None:
        return [
            Reason(
                "ToolkitEnvvarSettingUnknown",
                f"the node agent did not report the container toolkit's {TOOLKIT_ENVVAR_KEY}",
                state=State.UNKNOWN,
            )
        ]
    if accepts:
        return [
            Reason(
                "ToolkitAcceptsEnvvarDevices",
                f"the container toolkit honours NVIDIA_VISIBLE_DEVICES from unprivileged "
                f"containers ({TOOLKIT_ENVVAR_KEY} is true or unset): a pod reaches GPUs "
                "without requesting them",
                source=_ENVVAR_HARDENING,
            )
        ]
    return []


def _attestation_reasons(
    facts: NodeFacts, attestation: Attestation, policy: gpupolicies.GPUStackPolicySpec
) -> list[Reason]:
    reasons: list[Reason] = []
    if (
        attestation.driver is not None
        and facts.driver is not None
        and attestation.driver != facts.driver
    ):
        reasons.append(
            Reason(
                "AttestationMismatch",
                f"labels claim driver {facts.driver} but the node agent measured "
                f"{attestation.driver}",
            )
        )
    if (
        attestation.cuda_version is not None
        and facts.cuda_version is not None
        and attestation.cuda_version != facts.cuda_version
    ):
        reasons.append(
            Reason(
                "AttestationMismatch",
                f"labels claim CUDA {facts.cuda_version} but the node agent measured "
                f"{attestation.cuda_version}",
            )
        )
    if policy.known_good_module_digests:
        good = set(policy.known_good_module_digests)
        if not attestation.module_digests:
            reasons.append(
                Reason(
                    "ModuleDigestsMissing",
                    "the node agent reported no kernel module digests",
                    state=State.UNKNOWN,
                )
            )
        for module, digest in attestation.module_digests:
            if digest not in good:
                reasons.append(
                    Reason(
                        "ModuleDigestUnknown",
                        f"kernel module {module} has digest {digest}, not a known-good one "
                        "(a changed module is a compromised driver)",
                    )
                )
    return reasons


def assess(
    facts: NodeFacts,
    policy: gpupolicies.GPUStackPolicySpec,
    attestation: Attestation | None = None,
) -> Compliance:
    """Whether a node's GPU stack is allowed by ``policy``: every reason is reported."""
    reasons: list[Reason] = []
    if not facts.gpu and attestation is None:
        reasons.append(
            Reason("NotAGPUNode", "no NVIDIA GPU Feature Discovery labels", state=State.UNKNOWN)
        )
    reasons.extend(Reason("LabelsInconsistent", problem) for problem in facts.problems)
    if attestation is not None:
        reasons.extend(_attestation_reasons(facts, attestation, policy))
    elif policy.require_attestation:
        reasons.append(
            Reason(
                "NotAttested",
                "the policy requires a node agent attestation and there is none",
                state=State.UNKNOWN,
            )
        )
    # The agent's measurement wins over what labels claim.
    driver = attestation.driver if attestation and attestation.driver else facts.driver
    cuda_version = (
        attestation.cuda_version if attestation and attestation.cuda_version else facts.cuda_version
    )
    toolkit = attestation.toolkit if attestation else None
    if driver is None:
        if facts.gpu or attestation is not None:
            reasons.append(Reason("DriverUnknown", "driver version unknown", state=State.UNKNOWN))
    else:
        reasons.extend(_driver_reasons(driver, policy))
    reasons.extend(_toolkit_reasons(toolkit, policy))
    reasons.extend(_envvar_reasons(attestation, policy))
    if any(reason.state is State.NON_COMPLIANT for reason in reasons):
        state = State.NON_COMPLIANT
    elif reasons:
        state = State.UNKNOWN
    else:
        state = State.COMPLIANT
    return Compliance(facts.name, state, tuple(reasons), driver, cuda_version, toolkit)


# --- workloads ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Fit:
    """Whether a workload's CUDA requirements hold on a node (None: cannot tell)."""

    node: str
    satisfied: bool | None
    reasons: tuple[str, ...]


def fit(
    requirements: Sequence[str], facts: NodeFacts, attestation: Attestation | None = None
) -> Fit:
    """The runtime's own check, predicted for this node.

    Missing facts make it unknown (the runtime would assume them true, but it sees the real
    device; admission must not guess); an unknown GPU brand is assumed, and said so.
    Malformed requirements raise ``cuda.RequirementError``.
    """
    driver = attestation.driver if attestation and attestation.driver else facts.driver
    cuda_version = (
        attestation.cuda_version if attestation and attestation.cuda_version else facts.cuda_version
    )
    brand = attestation.brand if attestation else None
    notes: list[str] = []
    if driver is None:
        return Fit(facts.name, None, ("driver version unknown",))
    if cuda_version is None:
        cuda_version = cuda.highest_cuda_for_driver(driver)
        if cuda_version is None:
            return Fit(facts.name, None, (f"CUDA version supported by driver {driver} unknown",))
        notes.append(f"CUDA {cuda_version} derived from driver {driver} (no CUDA label)")
    result = cuda.check(
        requirements,
        cuda.Facts(cuda=str(cuda_version), driver=str(driver), arch=facts.compute, brand=brand),
    )
    for evaluation in result.evaluations:
        if evaluation.satisfied and evaluation.matched:
            notes.append(
                f"{','.join(evaluation.matched)} holds for driver {driver} (CUDA {cuda_version})"
            )
        elif not evaluation.satisfied:
            notes.append(f"{evaluation.message} (driver {driver} supports CUDA {cuda_version})")
    notes.extend(
        f"assumed {term}: the node does not publish its GPU brand" for term in result.assumed
    )
    return Fit(facts.name, result.satisfied, tuple(notes))


def workload_cuda_allowed(
    requirements: Iterable[str], policy: gpupolicies.GPUStackPolicySpec
) -> list[Reason]:
    """Reasons the CUDA version a workload requires is outside the policy's allowed list."""
    if not policy.allowed_cuda_versions:
        return []
    wanted = cuda.required_cuda(requirements)
    if wanted is None:
        return [Reason("CudaVersionUnknown", "the workload declares no CUDA version")]
    if any(rule.contains(wanted) for rule in policy.allowed_cuda_versions):
        return []
    allowed = "; ".join(rule.describe() for rule in policy.allowed_cuda_versions)
    return [
        Reason(
            "CudaNotAllowed",
            f"CUDA {wanted} is not allowed (allowed: {allowed}); "
            "build on a base image with an allowed CUDA version",
        )
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class EnvFlag:
    variable: str
    reason: str
    message: str


def env_flags(env: Mapping[str, str]) -> tuple[EnvFlag, ...]:
    """Image environment that defeats the GPU stack's own safeguards (NVIDIAScape pattern).

    With the runtime's check switched off, admission is the only check left: judge such images
    by ``cuda.image_requirements(env, honour_disable=False)``.
    """
    flags: list[EnvFlag] = []
    if env.get("LD_PRELOAD", "").strip():
        flags.append(
            EnvFlag(
                "LD_PRELOAD",
                "LdPreloadInGPUImage",
                f"LD_PRELOAD={env['LD_PRELOAD']} in a GPU image: CVE-2025-23266 (NVIDIAScape) "
                "uses it to run code in the toolkit's privileged hook",
            )
        )
    if cuda.disable_require(env):
        flags.append(
            EnvFlag(
                "NVIDIA_DISABLE_REQUIRE",
                "RequirementCheckDisabled",
                f"NVIDIA_DISABLE_REQUIRE={env['NVIDIA_DISABLE_REQUIRE']} switches off the "
                "runtime's driver/CUDA check",
            )
        )
    return tuple(flags)
