"""``muster gpu``: the GPU stack gate, offline.

``muster gpu check --require 'cuda>=12.4' --node node.yaml --policy policy.yaml`` (or
``--image REF`` to read the requirement from an image's config) answers what admission would:
which of these nodes could run a workload with that CUDA requirement under that policy.
Exit 0 when at least one node can, 1 when none can, 2 on bad input.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic
import yaml

from muster.cli import common
from muster.gpu import imageenv as gpuimages
from muster.gpu.rules import cuda
from muster.gpu.rules import policies as gpupolicies
from muster.gpu.rules import stack as gpustack
from muster.platform import registries

__all__ = ["register"]


def register(subcommands: common.Subcommands) -> None:
    gpu = subcommands.add_parser("gpu", help="judge GPU nodes and CUDA requirements")
    commands = gpu.add_subparsers(dest="gpu_command", metavar="COMMAND")
    gpu.set_defaults(handler=lambda _args: _usage(gpu))
    check = commands.add_parser(
        "check",
        help="can any of these nodes run a workload with this CUDA requirement?",
        description="Judge each node's GPU stack against a policy and a workload's "
        "NVIDIA_REQUIRE_CUDA requirement, the way admission does.",
    )
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--require",
        action="append",
        metavar="STRING",
        help="an NVIDIA_REQUIRE_CUDA value; repeat for several NVIDIA_REQUIRE_* (all must hold)",
    )
    source.add_argument(
        "--image",
        metavar="REF",
        help="read the requirement from this image's config (NVIDIA_REQUIRE_*, else "
        "CUDA_VERSION; the linux/amd64 image of an index), as admission does",
    )
    check.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="a registry spoken to over plain HTTP (development only); repeatable",
    )
    check.add_argument(
        "--node",
        action="append",
        required=True,
        type=Path,
        metavar="FILE",
        help="a Node manifest (or a List of them) or a plain label map, YAML or JSON; repeatable",
    )
    check.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="a GPUStackPolicy manifest or its spec (YAML or JSON); without it only the "
        "requirement is judged",
    )
    common.add_format_option(check)
    check.set_defaults(handler=check_command)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return common.EXIT_ERROR


def _load(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise common.CommandError(f"cannot read {path}: {error}") from error
    try:
        return yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or "not YAML or JSON"
        raise common.CommandError(f"{path}: {problem}") from error


def _label_value(path: Path, key: str, value: object) -> str:
    """Label values are strings; YAML may have typed unquoted ones."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # 12.10 would read as 12.1: refuse rather than guess what was meant.
        raise common.CommandError(f"{path}: label {key} is the number {value}; quote it")
    raise common.CommandError(f"{path}: label {key} must be a string, not {value!r}")


def _labels(path: Path, raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise common.CommandError(f"{path}: labels must be a map")
    return {str(key): _label_value(path, str(key), value) for key, value in raw.items()}


def _annotation(path: Path, raw: object) -> gpustack.Attestation | None:
    if raw is None:
        return None
    try:
        return gpustack.parse_attestation(raw)
    except ValueError as error:
        raise common.CommandError(
            f"{path}: annotation {gpustack.ATTESTATION_ANNOTATION}: {error}"
        ) from error


def _nodes(path: Path) -> list[tuple[gpustack.NodeFacts, gpustack.Attestation | None]]:
    document = _load(path)
    if not isinstance(document, Mapping):
        raise common.CommandError(f"{path}: expected a Node, a List of Nodes or a label map")
    if isinstance(document.get("items"), list):
        items: Sequence[object] = document["items"]
    elif "metadata" in document or document.get("kind") == "Node":
        items = [document]
    else:
        return [(gpustack.node_facts(_labels(path, document), name=path.name), None)]
    result = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("metadata"), Mapping):
            raise common.CommandError(f"{path}: item {index} is not a Node with metadata")
        if item.get("kind", "Node") != "Node":
            raise common.CommandError(f"{path}: item {index} is a {item.get('kind')}, not a Node")
        metadata: Mapping[str, Any] = item["metadata"]
        name = metadata.get("name")
        fallback = path.name if len(items) == 1 else f"{path.name}[{index}]"
        facts = gpustack.node_facts(
            _labels(path, metadata.get("labels")),
            name=name if isinstance(name, str) and name else fallback,
        )
        annotations = metadata.get("annotations") or {}
        if not isinstance(annotations, Mapping):
            raise common.CommandError(f"{path}: metadata.annotations must be a map")
        result.append((facts, _annotation(path, annotations.get(gpustack.ATTESTATION_ANNOTATION))))
    return result


def _policy(path: Path) -> gpupolicies.GPUStackPolicySpec:
    document = _load(path)
    if isinstance(document, Mapping) and "spec" in document and "kind" in document:
        if document["kind"] != "GPUStackPolicy":
            raise common.CommandError(f"{path}: a {document['kind']} is not a GPUStackPolicy")
        document = document["spec"]
    try:
        return gpupolicies.parse_spec(document)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "spec"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise common.CommandError(f"{path}: {where}: {first['msg']}{more}") from error


def _reason(reason: gpustack.Reason) -> dict[str, Any]:
    return {
        "code": reason.code,
        "message": reason.message,
        "state": str(reason.state),
        "source": reason.source,
    }


async def _read_image_env(image: str, insecure: Sequence[str]) -> dict[str, str]:
    settings = registries.RegistrySettings(insecure_registries=frozenset(insecure))
    async with registries.RegistryClient(settings) as client:
        return await gpuimages.ImageEnvReader(client).env(image)


def _image_requirements(args: argparse.Namespace) -> tuple[list[str], list[gpustack.EnvFlag]]:
    try:
        env = asyncio.run(_read_image_env(args.image, args.insecure_registry))
    except gpuimages.ImageEnvError as error:
        raise common.CommandError(str(error)) from error
    try:
        requirements = list(cuda.image_requirements(env, honour_disable=False))
    except cuda.GrammarError as error:
        raise common.CommandError(f"image {args.image}: {error}") from error
    if not requirements:
        raise common.CommandError(
            f"image {args.image} declares no CUDA requirement (no NVIDIA_REQUIRE_CUDA or "
            "CUDA_VERSION in its config)"
        )
    return requirements, list(gpustack.env_flags(env))


def check_command(args: argparse.Namespace) -> int:
    flags: list[gpustack.EnvFlag] = []
    if args.image is not None:
        requirements, flags = _image_requirements(args)
    else:
        requirements = args.require
    for requirement in requirements:
        try:
            cuda.parse_requirement(requirement)
        except cuda.GrammarError as error:
            raise common.CommandError(str(error)) from error
    nodes = [node for path in args.node for node in _nodes(path)]
    policy = _policy(args.policy) if args.policy is not None else None
    warn_only = policy is not None and policy.mode == "warn"

    workload = gpustack.workload_cuda_allowed(requirements, policy) if policy else []
    workload_ok = (not workload and not flags) or warn_only
    lines: list[str] = []
    if args.image is not None:
        lines.append(f"image {args.image} requires: {' and '.join(requirements)}")
    for flag in flags:
        lines.append(f"image: {'warning' if warn_only else 'denied'}: {flag.message}")
    for reason in workload:
        lines.append(f"workload: {'warning' if warn_only else 'denied'}: {reason}")
    results: list[dict[str, Any]] = []
    passing = 0
    for facts, attestation in nodes:
        try:
            fit = gpustack.fit(requirements, facts, attestation)
        except cuda.GrammarError as error:
            raise common.CommandError(f"node {facts.name}: {error}") from error
        compliance = gpustack.assess(facts, policy, attestation) if policy else None
        policy_ok = compliance is None or compliance.compliant or warn_only
        passes = fit.satisfied is True and policy_ok and workload_ok
        driver = compliance.driver if compliance else facts.driver
        passing += passes
        fit_word = {True: "met", False: "not met", None: "unknown"}[fit.satisfied]
        lines.append(f"{facts.name}: {'PASS' if passes else 'FAIL'}")
        lines.append(f"  requirement {fit_word}")
        lines.extend(f"    - {note}" for note in fit.reasons)
        if compliance is not None:
            mode = " (warn mode: not enforced)" if warn_only and not compliance.compliant else ""
            lines.append(f"  GPU stack {compliance.state}{mode}")
            lines.extend(f"    - {reason}" for reason in compliance.reasons)
        results.append(
            {
                "node": facts.name,
                "passes": passes,
                "driver": str(driver) if driver is not None else None,
                "requirement": {"satisfied": fit.satisfied, "reasons": list(fit.reasons)},
                "policy": None
                if compliance is None
                else {
                    "state": str(compliance.state),
                    "reasons": [_reason(reason) for reason in compliance.reasons],
                },
            }
        )
    lines.append(f"{passing} of {len(nodes)} nodes can run it")
    common.emit(
        args,
        "\n".join(lines),
        {
            "requirements": requirements,
            "image": args.image,
            "imageFlags": [
                {"variable": flag.variable, "reason": flag.reason, "message": flag.message}
                for flag in flags
            ],
            "workload": [_reason(reason) for reason in workload],
            "nodes": results,
            "passes": passing > 0,
        },
    )
    return common.EXIT_OK if passing else common.EXIT_FAIL
