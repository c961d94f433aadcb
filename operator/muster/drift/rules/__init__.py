"""Drift decided purely: which pods to re-judge and what to count."""
