"""The model area's ``muster run`` flags: the verifier init container's image, and eviction."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from muster.admission import areas
from muster.models import controllers

__all__ = ["FLAGS"]


def _add(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model gate")
    group.add_argument(
        "--verifier-image",
        default=os.environ.get("MUSTER_VERIFIER_IMAGE", controllers.DEFAULT_VERIFIER_IMAGE),
        metavar="IMAGE",
        help="image of the init container that re-verifies model volumes on the node "
        "(Muster's own image; pin it by digest)",
    )
    group.add_argument(
        "--evict-revoked-model-pods",
        action="store_true",
        help="evict running pods that use a revoked Model (default: Events and metrics only)",
    )


def _settings(args: argparse.Namespace) -> Mapping[str, object]:
    return {
        "model_verifier_image": args.verifier_image,
        "evict_revoked_model_pods": args.evict_revoked_model_pods,
    }


FLAGS = areas.Flags(
    add=_add,
    settings=_settings,
    # The verifier image is the chart's own image (muster.image), not a value of its own.
    chart_values={"--evict-revoked-model-pods": "operator.evictRevokedModelPods"},
)
