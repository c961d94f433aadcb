"""``muster bom``: the AI-BOM (CycloneDX 1.6 JSON) of a pod, workload, namespace or the cluster.

The operator keeps one BOM per running workload in a namespaced ``WorkloadBOM`` (see
docs/bom.md); this command collects and merges them, so nothing is re-verified here.
Exit 0 with the document written, 2 when nothing could be collected or the input is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import muster
from muster.boms import keeper as stored
from muster.boms.rules import cyclonedx as boms
from muster.kernel import crds
from muster.platform import kubeapi

from . import common

__all__ = ["register"]

SCOPES = ("pod", "workload", "namespace", "cluster")


def register(subcommands: common.Subcommands) -> None:
    parser = subcommands.add_parser(
        "bom",
        help="the AI-BOM (CycloneDX 1.6) of a pod, workload, namespace or the cluster",
        description="Collect the BOMs the operator keeps for running workloads and write one "
        "CycloneDX 1.6 JSON document: images with digests and signers, models, datasets, "
        "training configuration, GPU nodes and known vulnerabilities.",
    )
    parser.add_argument("scope", choices=SCOPES, help="what the BOM is about")
    parser.add_argument(
        "target",
        nargs="?",
        help="pod: NAMESPACE/NAME; workload: NAMESPACE/KIND/NAME; namespace: NAME; cluster: none",
    )
    parser.add_argument("--kubeconfig", metavar="PATH", help="the cluster (default: $KUBECONFIG)")
    parser.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write here instead of stdout"
    )
    parser.set_defaults(handler=_run)


def _target(scope: str, target: str | None) -> tuple[str, ...]:
    expected = {"pod": 2, "workload": 3, "namespace": 1, "cluster": 0}[scope]
    parts = tuple(target.split("/")) if target else ()
    if len(parts) != expected or not all(parts):
        shapes = {
            "pod": "NAMESPACE/NAME",
            "workload": "NAMESPACE/KIND/NAME",
            "namespace": "NAME",
            "cluster": "no target",
        }
        raise common.CommandError(f"bom {scope} takes {shapes[scope]}, not {target!r}")
    return parts


async def _collect(kube: kubeapi.KubeApi, scope: str, parts: tuple[str, ...]) -> list[Any]:
    if scope in ("pod", "workload"):
        if scope == "pod":
            pod = await kube.get(f"/api/v1/namespaces/{parts[0]}/pods/{parts[1]}")
            namespace, kind, name = boms.workload_key(pod)
        else:
            namespace, kind, name = parts
        items = [await kube.get(stored.bom_path(namespace, stored.bom_name(kind, name)))]
    elif scope == "namespace":
        items = (await kube.get(stored.bom_path(parts[0])))["items"]
    else:
        items = (await kube.get(f"/apis/{crds.GROUP}/{crds.VERSION}/{stored.PLURAL}"))["items"]
    documents = []
    for item in items:
        raw = (item.get("spec") or {}).get("document")
        try:
            document = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            document = None
        if not isinstance(document, dict):
            where = (item.get("metadata") or {}).get("name")
            raise common.CommandError(f"WorkloadBOM {where} holds no readable BOM")
        documents.append(document)
    return documents


def _parts(document: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "components": document.get("components", []),
        "dependencies": [d for d in document.get("dependencies", []) if d.get("ref") != "subject"],
        "vulnerabilities": document.get("vulnerabilities", []),
        "formulation": document.get("formulation", []),
    }


def _run(args: argparse.Namespace) -> int:
    parts = _target(args.scope, args.target)
    try:
        kube = kubeapi.KubeApi(kubeapi.Credentials.resolve(args.kubeconfig))
    except Exception as error:  # the kubernetes client raises many kinds on a bad file
        raise common.CommandError(f"cannot use the kubeconfig: {error}") from None

    async def collect() -> list[Any]:
        try:
            return await _collect(kube, args.scope, parts)
        finally:
            await kube.close()

    try:
        documents = asyncio.run(collect())
    except kubeapi.ApiError as error:
        if error.status == 404:
            raise common.CommandError(
                f"no BOM stored for {args.scope} {args.target or ''}: {error} (the operator "
                "writes one per running workload)".replace("  ", " ")
            ) from None
        raise common.CommandError(f"cannot read the cluster: {error}") from None
    except OSError as error:
        raise common.CommandError(f"cannot reach the cluster: {error}") from None
    if not documents:
        raise common.CommandError(f"no BOMs stored for {args.scope} {args.target or ''}".strip())
    subject = args.scope if args.scope == "cluster" else f"{args.scope} {args.target}"
    bom = boms.document(
        subject,
        [_parts(document) for document in documents],
        timestamp=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        version=muster.__version__,
    )
    text = json.dumps(bom, indent=2, sort_keys=True) + "\n"
    if args.output is not None:
        try:
            args.output.write_text(text)
        except OSError as error:
            raise common.CommandError(f"cannot write {args.output}: {error}") from None
    else:
        sys.stdout.write(text)
    return common.EXIT_OK
