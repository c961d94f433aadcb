"""``muster check``'s arguments; the command is in :mod:`muster.cli.check`."""

from __future__ import annotations

import os
from pathlib import Path

from muster.cli import common
from muster.images.rules import uncovered
from muster.models.rules import defaults

__all__ = ["register"]


def register(subcommands: common.Subcommands) -> None:
    parser = subcommands.add_parser(
        "check",
        help="judge manifests offline, with the answers admission would give",
        description="Judge Pods, workloads and training jobs in YAML files (or - for stdin, "
        "e.g. helm template output) with the admission gates. Exit 0 when all would be "
        "admitted, 1 when one would be denied, 2 on bad input.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="manifest file, or - for stdin")
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML file or folder with ImagePolicy, GPUStackPolicy, ModelPolicy, Model, "
        "DatasetPolicy, Dataset, Namespace, Node, PersistentVolumeClaim, Secret or ConfigMap "
        "objects (repeatable)",
    )
    parser.add_argument(
        "--kubeconfig", metavar="PATH", help="read policies from this cluster instead of files"
    )
    parser.add_argument(
        "--mode",
        choices=("enforce", "warn"),
        help="mode of namespaces that carry no muster.dev/enforce label (default: enforce)",
    )
    parser.add_argument(
        "--uncovered-images",
        type=uncovered.Uncovered,
        choices=list(uncovered.Uncovered),
        default=uncovered.Uncovered.DENY,
        help="images no ImagePolicy covers: deny (default, as muster run), warn or allow, "
        f"as muster run --uncovered-images; a namespace's {uncovered.UNCOVERED_LABEL} "
        "label overrides it",
    )
    parser.add_argument(
        "--namespace",
        default="default",
        help="namespace of objects that name none (default: default)",
    )
    parser.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="registry spoken to over plain HTTP (repeatable)",
    )
    parser.add_argument("--registry-ca-file", type=Path, help="extra CA bundle for registries")
    parser.add_argument(
        "--verifier-image",
        default=os.environ.get("MUSTER_VERIFIER_IMAGE", defaults.DEFAULT_VERIFIER_IMAGE),
        metavar="REF",
        help="the model verifier init container image, as muster run --verifier-image",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds allowed per object (registry lookups included; default 30)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json", "sarif"),
        default="text",
        help="text for people (default), json for machines, sarif for code scanning",
    )
    parser.set_defaults(handler=common.lazy("muster.cli.check", "check"))
