"""How long the gates may take on one request, given how long the apiserver waits for it.

The apiserver gives a webhook ``timeoutSeconds`` (1 to 30) for the whole call: connecting, the
TLS handshake, sending the review, Muster's work and its answer coming back. Past it the
apiserver reports "failed calling webhook" (a denial only where the failurePolicy is Fail),
not Muster's reason. So the gates stop earlier, leaving a margin for everything around them:

    margin = max(1 s, 20 % of the timeout), but never more than half of it

A fixed second covers the round trip, a handshake on a new connection and an event loop that
is late to wake up under load; the 20 % grows with long timeouts, where a loaded node's delays
grow too. Half of the timeout is the floor so that a 1 s webhook still gets a deadline
(0.5 s). 10 s gives 8 s (the default), 5 s gives 4 s, 30 s gives 24 s.

The apiserver also tells each request how long it has: the ``timeout`` query parameter of the
webhook call (a Go duration, rounded up to whole seconds), which is the webhook's timeout unless
the request itself has less time left. :func:`parse_go_duration` reads it.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "DEFAULT_WEBHOOK_TIMEOUT_SECONDS",
    "MAX_WEBHOOK_TIMEOUT_SECONDS",
    "MIN_MARGIN_SECONDS",
    "MIN_WEBHOOK_TIMEOUT_SECONDS",
    "admission_deadline",
    "check",
    "check_timeout",
    "parse_go_duration",
]

DEFAULT_WEBHOOK_TIMEOUT_SECONDS = 10  # the chart's and `muster dev up`'s
MIN_WEBHOOK_TIMEOUT_SECONDS = 1  # what the apiserver accepts for timeoutSeconds
MAX_WEBHOOK_TIMEOUT_SECONDS = 30
MIN_MARGIN_SECONDS = 1.0


def admission_deadline(timeout_seconds: float) -> float:
    """The gates' deadline for a webhook the apiserver waits ``timeout_seconds`` for."""
    if not math.isfinite(timeout_seconds) or timeout_seconds <= 0:
        raise ValueError(f"a webhook timeout must be positive, not {timeout_seconds:g}s")
    margin = max(MIN_MARGIN_SECONDS, timeout_seconds / 5)
    return max(timeout_seconds / 2, timeout_seconds - margin)


def check_timeout(timeout_seconds: float) -> None:
    """Refuse a webhook timeout the apiserver refuses (ValueError, saying why)."""
    if not MIN_WEBHOOK_TIMEOUT_SECONDS <= timeout_seconds <= MAX_WEBHOOK_TIMEOUT_SECONDS:
        raise ValueError(
            f"the webhook timeout must be {MIN_WEBHOOK_TIMEOUT_SECONDS} to "
            f"{MAX_WEBHOOK_TIMEOUT_SECONDS} seconds (the apiserver's limits), "
            f"not {timeout_seconds:g}"
        )


def check(deadline: float, timeout_seconds: float) -> None:
    """Refuse a deadline the apiserver would never wait for (ValueError, saying why)."""
    check_timeout(timeout_seconds)
    if not math.isfinite(deadline) or deadline <= 0:
        raise ValueError(f"the admission deadline must be positive, not {deadline:g}s")
    if deadline >= timeout_seconds:
        raise ValueError(
            f"the admission deadline ({deadline:g}s) must be below the webhook timeout "
            f"({timeout_seconds:g}s): the apiserver would give up first and report a webhook "
            f"error instead of Muster's reason; {admission_deadline(timeout_seconds):g}s leaves "
            "room for the answer"
        )


_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # Go accepts both micro signs
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go duration string ("10s", "1m0s", "1.5s"); None when it is not one.

    Only positive durations count: a request with no time left has nothing to wait for."""
    position, total = 0, 0.0
    if not text or len(text) > 64:
        return None
    while position < len(text):
        match = _GO_DURATION.match(text, position)
        if match is None:
            return None
        total += float(match[1]) * _UNIT_SECONDS[match[2]]
        position = match.end()
    return total if total > 0 else None
