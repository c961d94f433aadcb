"""``muster dataset register``: a Dataset manifest for a directory of data.

A dataset is measured and signed exactly as a model is (OpenSSF Model Signing over the
directory), so this shares ``muster model register``'s measuring and signature checks; what it
adds is what only a Dataset carries: its sources, its SPDX licence and its lineage. Bytes on the
node are re-verified by the same ``muster model verify`` init container as model volumes.
"""

from __future__ import annotations

import argparse
from typing import Any

from muster.cli import common, progress
from muster.cli import model as modelcli
from muster.datasets.rules import registry as datasetregistry

__all__ = ["register"]


def register(subcommands: common.Subcommands) -> None:
    dataset = subcommands.add_parser(
        "dataset", help="approved datasets: measure a dataset and print its Dataset manifest"
    )
    actions = dataset.add_subparsers(dest="action", metavar="ACTION", required=True)
    manifest = actions.add_parser(
        "register",
        help="print a Dataset manifest for a data directory (reads model.sig beside it)",
        description="Measure the dataset (its OMS root digest, as model_signing signs it) and "
        "print a Dataset manifest (YAML) to review and apply. An OMS signature beside the data "
        "(PATH/../model.sig or PATH/model.sig, or --signature) is embedded after checking it "
        "signs this data; give --key or the keyless identity so the cluster can verify it.",
    )
    modelcli.add_register_options(manifest, "Dataset")
    manifest.add_argument(
        "--oci-reference", metavar="REF", help="OCI artifact holding the data, pinned by digest"
    )
    manifest.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="URI",
        help="where the data is downloaded from, e.g. hf://datasets/org/name@revision (repeatable)",
    )
    manifest.add_argument("--license", metavar="SPDX", help="SPDX licence expression")
    manifest.add_argument(
        "--parent",
        action="append",
        default=[],
        metavar="DATASET",
        help="a Dataset this one was derived from (repeatable)",
    )
    manifest.add_argument(
        "--transformation", metavar="TEXT", help="how it was derived from its parents"
    )
    manifest.add_argument(
        "--code-reference", metavar="URI", help="the code that derived it, e.g. git+https://...@sha"
    )
    manifest.add_argument("--description", metavar="TEXT", help="what the data is")
    modelcli.add_workers(manifest)
    progress.add_option(manifest)
    manifest.set_defaults(handler=_register)


def _register(args: argparse.Namespace) -> int:
    measured, signature_path = modelcli.measure_for_register(args)
    spec: dict[str, Any] = {"digest": measured.digest}
    if args.oci_reference:
        spec["ociReference"] = args.oci_reference
    if args.source:
        spec["sources"] = list(args.source)
    if args.license:
        spec["license"] = args.license
    if args.parent or args.transformation or args.code_reference:
        lineage: dict[str, Any] = {"parents": list(args.parent)}
        transformation = {
            key: value
            for key, value in (
                ("description", args.transformation),
                ("codeReference", args.code_reference),
            )
            if value
        }
        if transformation:
            lineage["transformation"] = transformation
        spec["lineage"] = lineage
    if args.description:
        spec["description"] = args.description
    if signature_path is not None:
        spec["signature"] = modelcli.registered_signature(args, signature_path, measured.digest)
    return modelcli.print_manifest("Dataset", datasetregistry.DatasetSpec, args.name, spec)
