"""Shared I/O every area uses: the Kubernetes API, registries, Events, metrics, processes."""
