"""The AI-BOM area's ``muster run`` flag: whether WorkloadBOMs are kept."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from muster.admission import areas

__all__ = ["FLAGS"]


def _add(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("AI-BOM")
    group.add_argument(
        "--keep-boms",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("MUSTER_KEEP_BOMS", "true") != "false",
        help="keep a WorkloadBOM (CycloneDX 1.6 AI-BOM) current for every running workload in "
        "opted-in namespaces (default on; --no-keep-boms turns it off)",
    )


def _settings(args: argparse.Namespace) -> Mapping[str, object]:
    return {"keep_boms": args.keep_boms}


FLAGS = areas.Flags(add=_add, settings=_settings, chart_values={"--keep-boms": "operator.keepBoms"})
