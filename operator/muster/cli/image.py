"""``muster image verify``: the admission check on image signatures, from a terminal or CI.

::

    muster image verify REF --policy FILE [--policy FILE ...] [--insecure-registry HOST]
        [--material KIND/NAMESPACE/NAME/KEY=FILE ...] [--format json]

Policies are ImagePolicy YAML files (several documents per file are fine). Keys and trusted
roots that a policy takes from a Secret or ConfigMap are read from local files given with
``--material`` (e.g. ``--material ConfigMap/sigstore/root/trusted_root.json=root.json``), so
nothing needs a cluster. The messages are the ones admission gives. Exit 0 when every policy
that covers the image passes (warn-mode failures are printed as warnings), 1 when an enforcing
policy rejects it or when no policy covers it (as admission denies uncovered images by default;
``--uncovered-images warn|allow`` as ``muster run``), 2 on bad input or when the registry could
not be read.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from muster.cli import common
from muster.cli.parsers.image import register
from muster.images import verifier as imageverifier
from muster.images.rules import policies as imagepolicies
from muster.kernel import references
from muster.platform import registries

__all__ = ["register"]

MAX_POLICY_BYTES = 1024 * 1024
_LOOKUP_FAILURES = frozenset({"ImageNotResolved", "SignatureLookupFailed"})


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_POLICY_BYTES + 1)
    except OSError as error:
        raise common.CommandError(f"cannot read {what} {path}: {error.strerror}") from None
    if len(data) > MAX_POLICY_BYTES:
        raise common.CommandError(f"{what} {path} is larger than {MAX_POLICY_BYTES} bytes")
    return data


def _materials(specs: list[str]) -> dict[imagepolicies.Source, bytes]:
    found: dict[imagepolicies.Source, bytes] = {}
    for text in specs:
        target, sep, path = text.partition("=")
        parts = target.split("/")
        if not sep or len(parts) != 4 or parts[0] not in ("Secret", "ConfigMap"):
            raise common.CommandError(
                f"--material {text!r} is not KIND/NAMESPACE/NAME/KEY=FILE "
                "(KIND is Secret or ConfigMap)"
            )
        kind: Literal["ConfigMap", "Secret"] = "Secret" if parts[0] == "Secret" else "ConfigMap"
        source = imagepolicies.Source(kind=kind, namespace=parts[1], name=parts[2], key=parts[3])
        found[source] = _read(Path(path), "material")
    return found


def _policies(
    paths: list[Path], materials: Mapping[imagepolicies.Source, bytes]
) -> list[imagepolicies.CompiledPolicy]:
    compiled = []
    for path in paths:
        try:
            documents = [d for d in yaml.safe_load_all(_read(path, "policy file")) if d is not None]
        except yaml.YAMLError as error:
            raise common.CommandError(f"policy file {path} is not YAML: {error}") from None
        if not documents:
            raise common.CommandError(f"policy file {path} holds no ImagePolicy")
        for index, document in enumerate(documents):
            where = f"{path}" + (f" (document {index + 1})" if len(documents) > 1 else "")
            if not isinstance(document, dict) or document.get("kind") != "ImagePolicy":
                raise common.CommandError(f"{where} is not an ImagePolicy")
            metadata = document.get("metadata") or {}
            name = str(metadata.get("name") or path.stem)
            try:
                spec = imagepolicies.parse_spec(document.get("spec"))
                missing = [s for s in imagepolicies.sources_of(spec) if s not in materials]
                if missing:
                    raise imagepolicies.InvalidImagePolicy(
                        f"{missing[0]} is needed: pass it with --material "
                        f"{missing[0].kind}/{missing[0].namespace}/{missing[0].name}/"
                        f"{missing[0].key}=FILE"
                    )
                compiled.append(
                    imagepolicies.compile_policy(
                        name, int(metadata.get("generation") or 1), spec, materials
                    )
                )
            except imagepolicies.InvalidImagePolicy as error:
                raise common.CommandError(f"ImagePolicy {name!r} in {where}: {error}") from None
    return compiled


async def _verify(
    args: argparse.Namespace,
    reference: references.ImageReference,
    policies: list[imagepolicies.CompiledPolicy],
) -> imageverifier.ImageResult:
    settings = registries.RegistrySettings(
        insecure_registries=frozenset(args.insecure_registry),
        ca_file=args.registry_ca_file,
        credentials_file=args.registry_credentials,
    )
    async with registries.RegistryClient(settings) as client:
        verifier = imageverifier.Verifier(client)
        try:
            return await verifier.verify(reference, policies)
        finally:
            await verifier.close()


def verify_image(args: argparse.Namespace) -> int:
    try:
        reference = references.parse(args.reference)
    except references.InvalidReference as error:
        raise common.CommandError(f"image {args.reference!r}: {error}") from None
    policies = _policies(args.policy, _materials(args.material))
    covering = imagepolicies.matching(policies, reference, None)
    if not covering:
        return _uncovered(args, reference, policies)
    _check_registry_files(args)
    result = asyncio.run(_verify(args, reference, covering))
    lines: list[str] = []
    rows: list[dict[str, Any]] = []
    code = common.EXIT_OK
    for policy, decision in result.decisions:
        rows.append(
            {
                "policy": policy.name,
                "mode": policy.mode,
                "passed": decision.passed,
                "reason": decision.reason,
                "message": decision.message,
                "signers": list(decision.signers),
                "warnings": list(decision.warnings),
            }
        )
        if decision.passed:
            lines.append(
                f"OK: image {args.reference!r}: ImagePolicy {policy.name!r}: {decision.message}"
            )
            # Checks a Notation level only logs (audit): admitted, and said so.
            lines.extend(
                f"WARNING: image {args.reference!r}: ImagePolicy {policy.name!r}: {warning}"
                for warning in decision.warnings
            )
            continue
        line = f"image {args.reference!r} is rejected by ImagePolicy {policy.name!r}: " + (
            decision.message
        )
        if decision.reason in _LOOKUP_FAILURES:
            lines.append(f"ERROR: {line}")
            code = common.EXIT_ERROR
        elif policy.mode == "warn":
            lines.append(f"WARNING: {line}")
        else:
            lines.append(f"FAIL: {line}")
            code = max(code, common.EXIT_FAIL)
    common.emit(
        args,
        "\n".join(lines),
        {
            "image": args.reference,
            "digest": result.digest,
            "verified": code == common.EXIT_OK,
            "policies": rows,
        },
    )
    return code


def _uncovered(
    args: argparse.Namespace,
    reference: references.ImageReference,
    policies: list[imagepolicies.CompiledPolicy],
) -> int:
    """No policy covers the image: pinning alone admits nothing, so this fails by default."""
    patterns = ", ".join(f"{p} ({policy.name})" for policy in policies for p in policy.patterns)
    mode = imagepolicies.Uncovered(args.uncovered_images)
    status = {"deny": "FAIL", "warn": "WARNING", "allow": "OK"}[mode.value]
    common.emit(
        args,
        f"{status}: image {args.reference!r} ({reference.name}) is not covered by any "
        f"ImagePolicy given (patterns: {patterns}); uncovered images: {mode}",
        {
            "image": args.reference,
            "verified": False,
            "covered": False,
            "reason": "ImageNotCovered",
            "uncovered": str(mode),
            "policies": [],
        },
    )
    return common.EXIT_FAIL if mode is imagepolicies.Uncovered.DENY else common.EXIT_OK


def _check_registry_files(args: argparse.Namespace) -> None:
    try:
        registries.check_files(args.registry_ca_file, args.registry_credentials)
    except ValueError as error:
        raise common.CommandError(str(error)) from None
