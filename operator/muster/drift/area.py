"""The drift area's registration: it re-runs the drift checks the other areas declare."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from muster.admission import areas
from muster.drift import controller, flags
from muster.drift.rules import passes

__all__ = ["declare", "rules"]


def rules(watched: Sequence[areas.Area[Any]]) -> passes.DriftRules:
    """What a drift pass re-runs and ignores, from the areas it watches."""
    return passes.DriftRules(
        checks=tuple(check for area in watched for check in area.drift_checks),
        not_drift=passes.PIPELINE_NOT_DRIFT.union(*(area.not_drift for area in watched)),
    )


def declare(watched: Sequence[areas.Area[Any]]) -> areas.Area[controller.DriftSettings]:
    """The drift area over ``watched``: their drift checks, re-run when their policies change."""
    return areas.Area[controller.DriftSettings](
        name="drift",
        controllers=functools.partial(
            controller.register_controller,
            rules=rules(watched),
            watched=tuple(resource for area in watched for resource in area.drift_watches),
        ),
        flags=flags.FLAGS,
        reasons={
            # drift of running pods
            "PodDrifted": "a running pod would no longer be admitted (on the Pod; drift "
            "controller)",
        },
    )
