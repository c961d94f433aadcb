"""What happens to an image no ImagePolicy covers: the mode and the namespace label that sets it.

Apart from :mod:`muster.images.rules.policies` because the command line's argument parser
names them (choices and defaults) on every start and must not import the policy rules.
"""

from __future__ import annotations

import enum

__all__ = ["UNCOVERED_LABEL", "Uncovered"]

# Per namespace: what happens to images no policy covers (deny, warn or allow). It lowers the
# operator's default too, so the namespace guard must keep tenants from changing it.
UNCOVERED_LABEL = "muster.dev/uncovered-images"


class Uncovered(enum.StrEnum):
    """What happens to an image that no ImagePolicy applying to its namespace covers."""

    DENY = "deny"
    WARN = "warn"
    ALLOW = "allow"
