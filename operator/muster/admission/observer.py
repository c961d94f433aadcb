"""The decision observer: every admission decision becomes metrics and (queued) Events."""

from __future__ import annotations

import dataclasses

from muster.kernel import findings, gates, observations, subjects
from muster.platform import events, metrics

__all__ = ["DecisionObserver"]


@dataclasses.dataclass
class DecisionObserver:
    """Cheap and non-blocking: counts in memory, hands Events to the recorder's queue."""

    metrics: metrics.Metrics
    recorder: events.EventRecorder | None = None

    def decided(
        self,
        subject: subjects.Subject,
        phase: gates.Phase,
        verdict: findings.Verdict,
        durations: dict[str, float],
    ) -> None:
        self.metrics.admission(subject, phase, verdict, durations)
        if self.recorder is None:
            return
        planned = observations.notices(subject, phase, verdict)
        if planned:
            self.recorder.start()  # idempotent; needs the running loop, which admission has
            for notice in planned:
                self.recorder.submit(notice)
