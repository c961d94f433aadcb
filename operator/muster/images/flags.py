"""The image area's ``muster run`` flags: what happens to an image no ImagePolicy covers."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from muster.admission import areas
from muster.images.rules import policies as imagepolicies

__all__ = ["FLAGS"]


def _add(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("image gate")
    group.add_argument(
        "--uncovered-images",
        type=imagepolicies.Uncovered,
        choices=list(imagepolicies.Uncovered),
        default=os.environ.get("MUSTER_UNCOVERED_IMAGES", str(imagepolicies.Uncovered.DENY)),
        help="what happens to an image no ImagePolicy covers in a judged namespace: deny "
        "(default), warn or allow; a namespace's "
        f"{imagepolicies.UNCOVERED_LABEL} label overrides it",
    )


def _settings(args: argparse.Namespace) -> Mapping[str, object]:
    return {"uncovered_images": imagepolicies.Uncovered(args.uncovered_images)}


FLAGS = areas.Flags(
    add=_add, settings=_settings, chart_values={"--uncovered-images": "images.uncovered"}
)
