"""Fake host roots for the node agent, built from the real captures in the GPU fixtures.

The toolkit's ``--version`` output is served by a tiny executable shell script in the fake
root that prints the captured text verbatim (there is no toolkit binary here). The
fixtures hold no ``/proc/driver/nvidia/version`` capture, so that one line is written in the
format NVIDIA's driver prints it (as quoted in the brief), with the driver version of a real
``nvidia-smi`` capture.
"""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

import yaml

from tests import paths

__all__ = ["KERNEL", "MODULE", "host_root", "module_digest", "toolkit_output"]

GPU = paths.FIXTURES / "gpu"
KERNEL = "6.8.0-51-generic"
MODULE = f"lib/modules/{KERNEL}/updates/dkms/nvidia.ko.zst"
MODULE_BYTES = b"\x28\xb5\x2f\xfd nvidia kernel module stand-in"


def toolkit_output(version: str) -> str:
    """The captured ``nvidia-container-toolkit --version`` output of ``version``."""
    data = yaml.safe_load((GPU / "container-toolkit" / "toolkit-version-outputs.yaml").read_text())
    entry = next(e for e in data["entries"] if e["environment"] == f"v{version}")
    output: str = entry["output"]
    return output


def module_digest(content: bytes = MODULE_BYTES) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


def host_root(
    root: Path,
    *,
    driver: str,
    toolkit: str | None = "1.17.8",
    open_module: bool = True,
    module: bytes = MODULE_BYTES,
) -> Path:
    flavour = "Open Kernel Module for x86_64" if open_module else "x86_64 Kernel Module"
    files = {
        "proc/driver/nvidia/version": (
            f"NVRM version: NVIDIA UNIX {flavour}  {driver}  Release Build  "
            "(dvs-builder@U16-I3-B03-4-3)  Thu Oct 30 00:00:00 UTC 2025\n"
            "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n"
        ),
        "sys/module/nvidia/version": f"{driver}\n",
        "proc/sys/kernel/osrelease": f"{KERNEL}\n",
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    module_path = root / MODULE
    module_path.parent.mkdir(parents=True, exist_ok=True)
    module_path.write_bytes(module)
    other_kernel = root / "lib/modules/6.1.0-old/kernel/drivers/video/nvidia.ko"
    other_kernel.parent.mkdir(parents=True, exist_ok=True)
    other_kernel.write_bytes(b"a module of a kernel that is not running")
    libraries = root / "usr/lib/x86_64-linux-gnu"
    libraries.mkdir(parents=True, exist_ok=True)
    (libraries / f"libcuda.so.{driver}").write_bytes(b"libcuda stand-in " + driver.encode())
    (libraries / "libcuda.so.1").symlink_to(f"libcuda.so.{driver}")
    (libraries / f"libnvidia-ml.so.{driver}").write_bytes(b"libnvidia-ml stand-in")
    if toolkit is not None:
        script = root / "usr/bin/nvidia-container-toolkit"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(f"#!/bin/sh\nprintf '%s' {shlex.quote(toolkit_output(toolkit))}\n")
        script.chmod(0o755)
    return root
