"""Muster: every workload must pass muster before it runs.

Admission control and operator for AI supply-chain security on Kubernetes.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
