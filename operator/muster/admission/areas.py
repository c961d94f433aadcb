"""What an area declares: the one registration that plugs a gate (or a reader of gates) in.

An area is a folder (``muster/images``, ``muster/gpu``, ...) plus one :class:`Area` in its
``area.py``, listed once in ``muster.app.areas``. Everything that used to keep its own list of
gate names reads the declarations instead: ``muster run`` and ``muster check`` build the
admission pipeline from :attr:`Area.gates`, the operator registers :attr:`Area.controllers`, the
drift pass re-runs :attr:`Area.drift_checks` and ignores :attr:`Area.not_drift`, metrics create
their series from :attr:`Area.checks` and :attr:`Area.caches`, and the chart's CRDs are
generated from :attr:`Area.resources`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from muster.admission import pipeline
from muster.kernel import gates, observations
from muster.platform import metrics
from muster.platform.services import Services

if TYPE_CHECKING:
    import kopf  # only controllers use it, registered by ``muster run``, never ``muster check``

__all__ = ["Area", "FlagError", "Flags", "metric_labels", "reasons", "resources"]

SettingsT = TypeVar("SettingsT", contravariant=True)

GateFactory = Callable[[Services[SettingsT]], Sequence[gates.Gate]]
ControllerRegistrar = Callable[["kopf.OperatorRegistry", Services[SettingsT]], None]
ObserverFactory = Callable[[Services[SettingsT]], Sequence[pipeline.Observer]]
ResourceDefinition = Callable[[], dict[str, Any]]


class FlagError(ValueError):
    """A flag's value cannot be used; the message names the flag and says why."""


@dataclasses.dataclass(frozen=True)
class Flags:
    """An area's ``muster run`` flags, the settings they set, and the chart values behind them."""

    # Adds the area's flags (in its own argument group) to ``muster run``.
    add: Callable[[argparse.ArgumentParser], None]
    # The settings fields (``muster.app.settings.OperatorSettings``) the parsed flags set;
    # raises FlagError for a value that cannot be used.
    settings: Callable[[argparse.Namespace], Mapping[str, object]]
    # Flag -> the chart value (a values.yaml path) the chart's Deployment passes it from.
    chart_values: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Area(Generic[SettingsT]):
    """One area of Muster, typed by the settings protocol its factories read."""

    name: str
    # The ``check`` its gates' findings carry (bounded metrics labels, created at zero).
    checks: tuple[str, ...] = ()
    # Checks whose answer changes with policies and facts: the drift pass re-runs them on
    # running pods. Digest pinning cannot drift; scans have their own asynchronous path.
    drift_checks: tuple[str, ...] = ()
    # Reasons that say the gate could not find out (or let a pod in as a policy says), not that
    # a running pod is wrong: never counted as drift.
    not_drift: frozenset[str] = frozenset()
    # Resources (group, version, plural) whose changes make the drift pass run soon.
    drift_watches: tuple[tuple[str, str, str], ...] = ()
    # Its caches' names in muster_cache_requests_total.
    caches: tuple[str, ...] = ()
    # Its custom resources (the chart's CRDs and docs/reference.md are generated from them).
    resources: tuple[ResourceDefinition, ...] = ()
    # Admission gates, kopf controllers and decision observers, built once per process.
    gates: GateFactory[SettingsT] | None = None
    controllers: ControllerRegistrar[SettingsT] | None = None
    observers: ObserverFactory[SettingsT] | None = None
    # Its ``muster run`` flags and chart values.
    flags: Flags | None = None
    # Every reason it reports (Events, the reason label of muster_violations) and what it means.
    reasons: Mapping[str, str] = dataclasses.field(default_factory=dict)


def metric_labels(areas: Iterable[Area[Any]], namespace_modes: Sequence[str]) -> metrics.Labels:
    """The label values metrics create their series with, from every area's declaration."""
    listed = tuple(areas)
    return metrics.Labels(
        checks=tuple(check for area in listed for check in area.checks),
        caches=tuple(cache for area in listed for cache in area.caches),
        drift_checks=tuple(check for area in listed for check in area.drift_checks),
        namespace_modes=tuple(namespace_modes),
    )


def resources(areas: Iterable[Area[Any]]) -> list[dict[str, Any]]:
    """Every custom resource the areas define, in declaration order."""
    return [build() for area in areas for build in area.resources]


def reasons(areas: Iterable[Area[Any]]) -> dict[str, str]:
    """Every reason Muster reports: the pipeline's own and each area's; a reason belongs to one."""
    found = dict(observations.PIPELINE_REASONS)
    for area in areas:
        for reason, meaning in area.reasons.items():
            if reason in found:
                raise ValueError(f"reason {reason} is declared twice (area {area.name})")
            found[reason] = meaning
    return found
