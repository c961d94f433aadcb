"""Auditing break-glass exemptions: every honoured exemption becomes an ``ExemptionUsed`` Event
and a ``muster_exemptions_used`` increment. The rule itself is pure (``kernel/exemptions.py``)."""

from __future__ import annotations

from muster.kernel import exemptions, findings, gates, observations, subjects
from muster.platform import events, metrics

__all__ = ["Auditor", "notices"]


def notices(
    subject: subjects.Subject, exemption: exemptions.Exemption
) -> list[observations.Notice]:
    """The Event an exemption produces: on the object once it exists (else its owner or the
    Namespace), reason ``ExemptionUsed``; none for dry runs, which change nothing."""
    used = findings.Finding(
        check=exemptions.CHECK,
        reason="ExemptionUsed",
        subject=f"annotation {exemptions.ANNOTATION}",
        message=(
            f"exemption used by {exemption.user} (groups: {', '.join(exemption.groups)}); "
            f"reason: {exemption.reason}; waived: "
            + ("; ".join(str(f) for f in exemption.waived) or "nothing")
        ),
        mode=findings.Mode.WARN,
    )
    return observations.notices(subject, gates.Phase.VALIDATE, findings.Verdict(warnings=(used,)))


class Auditor:
    """Counts and reports each exemption; raising here makes the pipeline refuse it."""

    def __init__(self, metrics: metrics.Metrics, recorder: events.EventRecorder | None) -> None:
        self.metrics = metrics
        self.recorder = recorder

    def __call__(self, subject: subjects.Subject, exemption: exemptions.Exemption) -> None:
        planned = notices(subject, exemption)
        if planned:
            if self.recorder is None:
                raise RuntimeError("no Event recorder to audit the exemption with")
            self.recorder.start()
            for notice in planned:
                if not self.recorder.submit(notice):
                    raise RuntimeError("the Event queue refused the exemption's audit Event")
        for check in exemption.waived_checks or ("none",):
            self.metrics.exemption_used(check, subject.namespace)
