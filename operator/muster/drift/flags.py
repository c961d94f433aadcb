"""The drift area's ``muster run`` flag: how often running pods are re-judged."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from muster.admission import areas
from muster.drift.rules import passes

__all__ = ["FLAGS"]


def _add(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("drift of running pods")
    group.add_argument(
        "--drift-interval",
        type=float,
        default=float(os.environ.get("MUSTER_DRIFT_INTERVAL", passes.DEFAULT_INTERVAL_SECONDS)),
        metavar="SECONDS",
        help="re-judge running pods in opted-in namespaces this often, and soon after a policy "
        "or Model changes (default 300; 0 turns drift detection off)",
    )


def _settings(args: argparse.Namespace) -> Mapping[str, object]:
    if args.drift_interval < 0:
        raise areas.FlagError("--drift-interval must not be negative (0 turns drift off)")
    return {"drift_interval": args.drift_interval}


FLAGS = areas.Flags(
    add=_add,
    settings=_settings,
    chart_values={"--drift-interval": "operator.drift.intervalSeconds"},
)
