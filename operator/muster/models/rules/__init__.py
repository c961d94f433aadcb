"""The model gate decided purely: OMS manifests, the Model registry, approval, pickle scanning."""
