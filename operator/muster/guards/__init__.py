"""Guards beside Muster: admission policies that keep tenants from lowering enforcement."""
