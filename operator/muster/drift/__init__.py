"""Drift: running pods re-judged by the admission gates when policies or facts change."""
