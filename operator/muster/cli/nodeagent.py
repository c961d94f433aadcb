"""``muster node-agent``: measure this GPU node's stack and publish it on the Node.

``muster node-agent --once --format json --host-root /host`` prints the measurement and
publishes nothing (debugging, tests). Without ``--once`` it publishes the attestation as the
``muster.dev/gpu-attestation`` annotation of ``--node-name`` (``$NODE_NAME``) every
``--interval`` seconds. It only reads the host; the one write is that annotation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from pathlib import Path

from muster.cli import common
from muster.gpu import nodeagent
from muster.platform import kubeapi

__all__ = ["register"]


def register(subcommands: common.Subcommands) -> None:
    parser = subcommands.add_parser(
        "node-agent",
        help="measure this GPU node's driver, CUDA and toolkit and publish the attestation",
        description="Measure the NVIDIA driver, the CUDA version it supports, the container "
        "toolkit (its version, and whether it honours NVIDIA_VISIBLE_DEVICES from unprivileged "
        "containers) and the digests of the kernel modules and key libraries under a host root, "
        "and publish them as the Node's muster.dev/gpu-attestation annotation.",
    )
    parser.add_argument(
        "--host-root",
        type=Path,
        default=Path(os.environ.get("MUSTER_HOST_ROOT", "/")),
        help="where the host's / is mounted (read-only), default /",
    )
    parser.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME"),
        help="the Node to annotate (default $NODE_NAME)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=300.0,
        help="seconds between measurements (default 300)",
    )
    parser.add_argument(
        "--toolkit-config",
        action="append",
        default=None,
        metavar="PATH",
        help="host path of the container toolkit's config.toml, read under --host-root "
        "(repeatable; default: " + ", ".join(nodeagent.TOOLKIT_CONFIGS) + ")",
    )
    parser.add_argument(
        "--once", action="store_true", help="measure once, print it, publish nothing"
    )
    parser.add_argument(
        "--kubeconfig", default=None, help="kubeconfig to use (default: in-cluster or $KUBECONFIG)"
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    common.add_format_option(parser)
    parser.set_defaults(handler=node_agent_command)


def _text(measurement: nodeagent.Measurement) -> str:
    lines = [
        f"driver: {measurement.driver or 'unknown'}"
        + (" (open kernel module)" if measurement.open_kernel_module else ""),
        f"CUDA supported by the driver (NVML): {measurement.cuda_driver_version or 'unknown'}",
        f"container toolkit: {measurement.toolkit or 'unknown'}"
        + (f" ({measurement.toolkit_command})" if measurement.toolkit_command else ""),
    ]
    accepts = measurement.toolkit_accepts_envvar
    where = ", ".join(measurement.toolkit_configs) or "no config file: the toolkit's default"
    lines.append(
        "NVIDIA_VISIBLE_DEVICES honoured from unprivileged containers: "
        + ("unknown" if accepts is None else f"{'yes' if accepts else 'no'} ({where})")
    )
    lines.extend(f"module {path}: {digest}" for path, digest in measurement.module_digests.items())
    lines.extend(
        f"library {path}: {digest}" for path, digest in measurement.library_digests.items()
    )
    lines.extend(f"problem: {problem}" for problem in measurement.problems)
    return "\n".join(lines)


def node_agent_command(args: argparse.Namespace) -> int:
    root: Path = args.host_root
    if not root.is_dir():
        raise common.CommandError(f"--host-root {root} is not a directory")
    if args.interval <= 0:
        raise common.CommandError("--interval must be a positive number of seconds")
    configs: tuple[str, ...] = tuple(args.toolkit_config or nodeagent.TOOLKIT_CONFIGS)
    if not all(path.startswith("/") for path in configs):
        raise common.CommandError("--toolkit-config takes absolute host paths")
    if args.once:
        measurement = nodeagent.measure(root, toolkit_configs=configs)
        common.emit(args, _text(measurement), measurement.as_json())
        return common.EXIT_OK
    if not args.node_name:
        raise common.CommandError("give --node-name or set NODE_NAME to publish the attestation")
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        credentials = kubeapi.Credentials.resolve(args.kubeconfig)
    except Exception as error:  # kubernetes' ConfigException and file errors alike
        raise common.CommandError(f"no Kubernetes credentials: {error}") from None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(credentials, args.node_name, root, args.interval, configs))
    return common.EXIT_OK


async def _serve(
    credentials: kubeapi.Credentials,
    node: str,
    root: Path,
    interval: float,
    configs: tuple[str, ...],
) -> None:
    api = kubeapi.KubeApi(credentials)
    try:
        await nodeagent.run(api, node, root, interval, configs)
    finally:
        await api.close()
