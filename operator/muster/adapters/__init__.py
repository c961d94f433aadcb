"""I/O adapters: processes, files, the Kubernetes API and registries, over the pure core."""
