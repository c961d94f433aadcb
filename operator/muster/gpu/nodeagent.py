"""The node agent's measurement of a GPU node, read under a host root, and its publication.

What is read (all read-only; the DaemonSet mounts the host's paths under ``--host-root``):

* ``/proc/driver/nvidia/version`` (the loaded kernel module's version line) and
  ``/sys/module/nvidia/version``;
* NVML through ``nvidia-ml-py`` when it is importable (driver version and the CUDA version the
  driver supports); without it the agent carries on with the files;
* the container toolkit's version from ``nvidia-ctk --version``,
  ``nvidia-container-toolkit --version`` or ``nvidia-container-cli --version`` found under the
  host root's ``bin`` folders (or on ``PATH`` when the host root is ``/``);
* SHA-256 of the NVIDIA kernel modules (``lib/modules/<running kernel>/**/nvidia*.ko*``; every
  kernel's when the running one is unknown) and of ``libcuda.so*`` / ``libnvidia-ml.so*``;
* the toolkit's ``config.toml`` (``/etc/nvidia-container-runtime/``, or where the GPU Operator
  installs it): whether ``NVIDIA_VISIBLE_DEVICES`` of unprivileged containers is honoured.

The attestation (``muster.dev/gpu-attestation`` on the Node, see
:func:`muster.gpu.rules.stack.parse_attestation`) is what the operator compares with the node's
labels and the policy's known-good module digests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import importlib
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from muster.gpu.rules import stack as gpustack
from muster.platform import kubeapi

__all__ = ["TOOLKIT_CONFIGS", "Measurement", "attestation", "measure", "publish", "run"]

logger = logging.getLogger("muster.nodeagent")

_TOOLKIT_COMMANDS = ("nvidia-ctk", "nvidia-container-toolkit", "nvidia-container-cli")
_BIN_DIRS = ("usr/bin", "usr/local/bin", "bin", "usr/sbin", "sbin")
_LIBRARY_DIRS = (
    "usr/lib/x86_64-linux-gnu",
    "usr/lib64",
    "usr/lib",
    "lib/x86_64-linux-gnu",
    "lib64",
)
_LIBRARY_PATTERNS = ("libcuda.so*", "libnvidia-ml.so*")
_MODULE_PATTERNS = ("nvidia*.ko", "nvidia*.ko.xz", "nvidia*.ko.zst", "nvidia*.ko.gz")
_COMMAND_TIMEOUT_SECONDS = 10
# Where the toolkit reads its config: the packages' path, and the GPU Operator's
# (XDG_CONFIG_HOME=/usr/local/nvidia/toolkit/.config in its runtime wrappers).
TOOLKIT_CONFIGS = (
    "/etc/nvidia-container-runtime/config.toml",
    "/usr/local/nvidia/toolkit/.config/nvidia-container-runtime/config.toml",
)
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Measurement:
    """What the agent found; ``problems`` says what it could not read, and why."""

    driver: str | None = None
    open_kernel_module: bool | None = None
    module_version: str | None = None
    nvml_driver: str | None = None
    cuda_driver_version: int | None = None  # NVML's integer, e.g. 12040
    toolkit: str | None = None
    toolkit_command: str | None = None
    module_digests: dict[str, str] = dataclasses.field(default_factory=dict)
    library_digests: dict[str, str] = dataclasses.field(default_factory=dict)
    # accept-nvidia-visible-devices-envvar-when-unprivileged, and the files it was read from
    toolkit_accepts_envvar: bool | None = None
    toolkit_configs: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "driverVersion": self.driver,
            "openKernelModule": self.open_kernel_module,
            "moduleVersion": self.module_version,
            "nvmlDriverVersion": self.nvml_driver,
            "cudaDriverVersion": self.cuda_driver_version,
            "toolkitVersion": self.toolkit,
            "toolkitCommand": self.toolkit_command,
            "moduleDigests": self.module_digests,
            "libraryDigests": self.library_digests,
            "toolkitAcceptsEnvvarUnprivileged": self.toolkit_accepts_envvar,
            "toolkitConfigs": list(self.toolkit_configs),
            "problems": list(self.problems),
            "attestation": attestation(self),
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None


def _shown(root: Path, path: Path) -> str:
    """A path as it is on the host (relative to the host root)."""
    return "/" + str(path.relative_to(root))


def _toolkit(root: Path, problems: list[str]) -> tuple[str | None, str | None]:
    for command in _TOOLKIT_COMMANDS:
        candidates = [root / folder / command for folder in _BIN_DIRS]
        if root == Path("/") and (found := shutil.which(command)):
            candidates.insert(0, Path(found))
        executable = next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)
        if executable is None:
            continue
        try:
            done = subprocess.run(
                [str(executable), "--version"],
                capture_output=True,
                text=True,
                timeout=_COMMAND_TIMEOUT_SECONDS,
                check=False,
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            problems.append(f"{command} --version: {error}")
            continue
        try:
            version = gpustack.parse_toolkit_version(done.stdout)
        except gpustack.AgentOutputError as error:
            problems.append(f"{command} --version: {error}")
            continue
        return str(version), command
    problems.append("no NVIDIA container toolkit command found")
    return None, None


def _toolkit_config(
    root: Path, paths: tuple[str, ...], toolkit_found: bool, problems: list[str]
) -> tuple[bool | None, tuple[str, ...]]:
    """The toolkit's envvar setting: honoured if any config file present honours it (which one
    the runtime reads depends on how it was installed); the toolkit's default without one."""
    found: list[str] = []
    verdicts: list[bool] = []
    for shown in paths:
        text = _read(root / shown.lstrip("/"))
        if text is None:
            continue
        found.append(shown)
        try:
            verdicts.append(gpustack.parse_toolkit_config(text))
        except gpustack.AgentOutputError as error:
            problems.append(f"{shown}: {error}")
            return None, tuple(found)
    if verdicts:
        return any(verdicts), tuple(found)
    if toolkit_found:  # without a config file the toolkit runs on its default: honoured
        return True, ()
    return None, ()


def _modules(root: Path, problems: list[str]) -> dict[str, str]:
    base = root / "lib" / "modules"
    release = (_read(root / "proc" / "sys" / "kernel" / "osrelease") or "").strip()
    kernels = [base / release] if release and (base / release).is_dir() else [base]
    found: dict[str, str] = {}
    for kernel in kernels:
        for pattern in _MODULE_PATTERNS:
            for path in sorted(kernel.rglob(pattern)):
                if path.is_file() and not path.is_symlink():
                    found[_shown(root, path)] = _sha256(path)
    if not found:
        problems.append(f"no NVIDIA kernel module files under {_shown(root, base)}")
    return dict(sorted(found.items()))


def _libraries(root: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for folder in _LIBRARY_DIRS:
        directory = root / folder
        if not directory.is_dir():
            continue
        for pattern in _LIBRARY_PATTERNS:
            for path in sorted(directory.glob(pattern)):
                if path.is_file() and not path.is_symlink():
                    found[_shown(root, path)] = _sha256(path)
    return dict(sorted(found.items()))


def _nvml(problems: list[str]) -> tuple[str | None, int | None]:
    try:
        pynvml: Any = importlib.import_module("pynvml")
    except ImportError:
        return None, None  # nvidia-ml-py is optional
    try:
        pynvml.nvmlInit()
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
            cuda = int(pynvml.nvmlSystemGetCudaDriverVersion())
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError as error:
        problems.append(f"NVML: {error}")
        return None, None
    return (driver.decode() if isinstance(driver, bytes) else str(driver)), cuda


def measure(
    root: Path, *, use_nvml: bool = True, toolkit_configs: tuple[str, ...] = TOOLKIT_CONFIGS
) -> Measurement:
    """Measure the node under ``root`` (the host's ``/``); ``toolkit_configs`` are host paths
    of the container toolkit's config file."""
    problems: list[str] = []
    driver: str | None = None
    open_module: bool | None = None
    proc = _read(root / "proc" / "driver" / "nvidia" / "version")
    if proc is None:
        problems.append("no NVIDIA driver loaded (/proc/driver/nvidia/version is missing)")
    else:
        try:
            module = gpustack.parse_proc_driver_version(proc)
            driver, open_module = str(module.version), module.open
        except gpustack.AgentOutputError as error:
            problems.append(f"/proc/driver/nvidia/version: {error}")
    module_version: str | None = None
    sys_text = _read(root / "sys" / "module" / "nvidia" / "version")
    if sys_text is not None:
        try:
            module_version = str(gpustack.parse_module_version(sys_text))
        except gpustack.AgentOutputError as error:
            problems.append(f"/sys/module/nvidia/version: {error}")
    if driver and module_version and driver != module_version:
        problems.append(f"/proc says driver {driver} but /sys/module/nvidia says {module_version}")
    nvml_driver, cuda = _nvml(problems) if use_nvml else (None, None)
    toolkit, command = _toolkit(root, problems)
    accepts, configs = _toolkit_config(root, toolkit_configs, command is not None, problems)
    return Measurement(
        driver=driver or module_version or nvml_driver,
        open_kernel_module=open_module,
        module_version=module_version,
        nvml_driver=nvml_driver,
        cuda_driver_version=cuda,
        toolkit=toolkit,
        toolkit_command=command,
        module_digests=_modules(root, problems),
        library_digests=_libraries(root),
        toolkit_accepts_envvar=accepts,
        toolkit_configs=configs,
        problems=tuple(problems),
    )


def attestation(measurement: Measurement) -> dict[str, Any]:
    """The annotation's JSON (only what was measured; see ``gpustack.parse_attestation``)."""
    data: dict[str, Any] = {}
    if measurement.driver is not None:
        data["driverVersion"] = measurement.driver
    if measurement.cuda_driver_version is not None:
        data["cudaDriverVersion"] = measurement.cuda_driver_version
    if measurement.toolkit is not None:
        data["toolkitVersion"] = measurement.toolkit
    if measurement.module_digests:
        data["moduleDigests"] = measurement.module_digests
    if measurement.library_digests:
        data["libraryDigests"] = measurement.library_digests
    if measurement.toolkit_accepts_envvar is not None:
        data["toolkitAcceptsEnvvarUnprivileged"] = measurement.toolkit_accepts_envvar
    return data


async def publish(kube: kubeapi.KubeApi, node: str, measurement: Measurement) -> None:
    """Write the attestation on the Node (a merge patch of one annotation)."""
    value = json.dumps(attestation(measurement), sort_keys=True, separators=(",", ":"))
    await kube.patch(
        f"/api/v1/nodes/{node}",
        {"metadata": {"annotations": {gpustack.ATTESTATION_ANNOTATION: value}}},
    )


async def run(
    kube: kubeapi.KubeApi,
    node: str,
    root: Path,
    interval: float,
    toolkit_configs: tuple[str, ...] = TOOLKIT_CONFIGS,
) -> None:
    """Measure and publish every ``interval`` seconds until cancelled."""
    while True:
        measurement = await asyncio.to_thread(
            functools.partial(measure, root, toolkit_configs=toolkit_configs)
        )
        for problem in measurement.problems:
            logger.warning("%s", problem)
        try:
            await publish(kube, node, measurement)
            logger.info("published the attestation of node %s", node)
        except (TimeoutError, kubeapi.ApiError, OSError) as error:
            logger.error("cannot publish the attestation of node %s: %s", node, error)
        await asyncio.sleep(interval)
