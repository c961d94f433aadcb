"""Signature formats decided purely: keys, legacy cosign payloads, Sigstore bundles."""
