"""What every area shares in one process: its settings, long-lived clients, metrics and Events.

The composition root (``muster.app``) builds one :class:`Services` per process and hands it to
each area. An area states the settings it reads as a ``Protocol`` in its own package (for
example :class:`SharedSettings` extended with its own fields); the root's settings satisfy all
of them, which mypy checks, so no area imports the root or another area's settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from muster.kernel import scopes, selectors
from muster.platform import events as events_
from muster.platform import kubeapi, refreshahead, registries
from muster.platform import metrics as metrics_

__all__ = ["Services", "SharedSettings"]

SettingsT = TypeVar("SettingsT", covariant=True)
StateT = TypeVar("StateT")


class SharedSettings(Protocol):
    """The settings every controller agrees on: whose pods are judged, and Muster's own home."""

    @property
    def own_namespace(self) -> str: ...

    # Which namespaces are judged: opted-in ones or, in cluster scope, all.
    @property
    def enforcement(self) -> scopes.Enforcement: ...

    # The namespaces whose existing pods the controllers judge when the webhooks select other
    # than the default (None: opted in and not opted out).
    @property
    def namespace_selector(self) -> selectors.LabelSelector | None: ...


@dataclasses.dataclass
class Services(Generic[SettingsT]):
    """One process's shared clients; ``settings`` is whatever the composition root built."""

    settings: SettingsT
    kube: kubeapi.KubeApi
    registries: registries.RegistryClient
    # Per-area state shared by an area's controllers and gates in this process (keyed by area).
    areas: dict[str, object] = dataclasses.field(default_factory=dict)
    # Metrics every area reports to, and the queue Events go out through.
    metrics: metrics_.Metrics = dataclasses.field(default_factory=metrics_.Metrics)
    events: events_.EventRecorder | None = None

    def state(self, key: str, kind: type[StateT], create: Callable[[], StateT]) -> StateT:
        """The one ``kind`` kept under ``key`` in this process, created on first use."""
        found = self.areas.get(key)
        if found is None:
            found = self.areas[key] = create()
        if not isinstance(found, kind):
            raise TypeError(
                f"services.areas[{key!r}] is a {type(found).__name__}, not a {kind.__name__}"
            )
        return found

    async def close(self) -> None:
        if self.events is not None:
            await self.events.stop()
        await refreshahead.close_all()  # none left reading through the client closed next
        await self.kube.close()
        await self.registries.close()
