"""The record of namespace mode changes: ``POST /namespace-modes``, a mutating webhook on
Namespaces that never patches and never refuses.

The namespace guard (a ValidatingAdmissionPolicy, ``muster.guards.rules.namespaces``) decides; it
runs in validating admission, after every mutating webhook, so this webhook is called for the
attempts it refuses as well as for those it allows (its registration's match condition sends
only requests that touch a Muster or protected label; dry runs are skipped). Each is judged
again by the policy's Python twin and recorded: an Event (``NamespaceModeChanged`` or
``NamespaceModeChangeRefused``) and ``muster_namespace_mode_changes_total{from,to,outcome}``.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from muster.guards.rules import namespaces as namespaceguard
from muster.kernel import reviews
from muster.platform import events, metrics

__all__ = ["PATH", "NamespaceModes", "build_route"]

logger = logging.getLogger("muster.namespaces")

PATH = namespaceguard.RECORD_PATH


class NamespaceModes:
    """Judges and records each attempt; the answer is always "allowed, unchanged"."""

    def __init__(
        self,
        settings: namespaceguard.GuardSettings,
        metrics: metrics.Metrics,
        recorder: events.EventRecorder | None,
        own_namespace: str,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.recorder = recorder
        self.own_namespace = own_namespace

    def record(self, review: reviews.Review) -> namespaceguard.ModeChange | None:
        change = namespaceguard.from_review(review["request"], self.settings)
        if change is None:
            return None
        self.metrics.namespace_mode_change(change.before, change.after, change.outcome)
        logger.log(
            logging.WARNING if change.refused else logging.INFO,
            "namespace %s: %s %s from %s to %s (%s)",
            change.namespace,
            change.username,
            "was refused changing it" if change.refused else "changed it",
            change.before,
            change.after,
            "; ".join(change.issues) or "no guarded label",
        )
        if self.recorder is not None:
            self.recorder.start()
            self.recorder.submit(namespaceguard.notice(change, self.own_namespace))
        return change

    async def handle(self, request: web.Request) -> web.Response:
        try:
            review = reviews.validate(json.loads(await request.read()))
        except (json.JSONDecodeError, UnicodeDecodeError, reviews.MalformedReview) as error:
            raise web.HTTPBadRequest(text=f"not an AdmissionReview: {error}\n") from None
        try:
            self.record(review)
        except Exception:  # the record must never get in the way of the change itself
            logger.exception("could not record namespace change %s", review["request"]["uid"])
        return web.json_response(
            reviews.build_response(
                uid=review["request"]["uid"], allowed=True, api_version=review["apiVersion"]
            )
        )


def build_route(app: web.Application, modes: NamespaceModes) -> None:
    app.router.add_post(PATH, modes.handle)
