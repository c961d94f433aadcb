"""The image gate: signatures and digest pinning for every container image a pod runs."""
