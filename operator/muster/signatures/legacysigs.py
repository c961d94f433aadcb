"""Legacy cosign signatures on a registry: the ``sha256-<hex>.sig`` tag beside the image.

One manifest per digest; each of its layers is a simple-signing payload blob whose annotations
carry a signature (verified by :mod:`muster.signatures.rules.cosign`). Missing payload blobs
are problems to report, not errors: the other layers may still count.
"""

from __future__ import annotations

import asyncio

from muster.kernel import references
from muster.platform import registries
from muster.signatures import fetching
from muster.signatures.rules import cosign

__all__ = ["FORMAT", "MAX_SIGNATURE_LAYERS"]

MAX_SIGNATURE_LAYERS = 32
MAX_PAYLOAD_BYTES = 1024 * 1024


async def _fetch(
    client: registries.RegistryClient, reference: references.ImageReference, digest: str
) -> tuple[tuple[cosign.LegacySignature, ...], tuple[str, ...]]:
    algorithm, _, hexdigest = digest.partition(":")
    try:
        manifest = await client.manifest(
            reference.registry, reference.repository, f"{algorithm}-{hexdigest}.sig"
        )
    except registries.NotFound:
        return (), ()
    try:
        layers = manifest.json().get("layers")
    except (ValueError, registries.RegistryError):
        return (), ("legacy signature manifest is not a JSON object",)
    if not isinstance(layers, list) or not layers:
        return (), ("legacy signature manifest has no layers",)
    wanted = {
        layer["digest"]
        for layer in layers[:MAX_SIGNATURE_LAYERS]
        if isinstance(layer, dict) and isinstance(layer.get("digest"), str)
    }
    blobs: dict[str, bytes] = {}
    problems: list[str] = []

    async def fetch(blob_digest: str) -> None:
        try:
            blobs[blob_digest] = await client.blob(
                reference.registry, reference.repository, blob_digest, max_bytes=MAX_PAYLOAD_BYTES
            )
        except (registries.NotFound, registries.BlobTooLarge, registries.DigestMismatch) as error:
            problems.append(f"legacy signature payload: {error}")

    await asyncio.gather(*(fetch(blob) for blob in sorted(wanted)))
    return (cosign.LegacySignature(manifest=manifest.raw, blobs=blobs),), tuple(problems)


FORMAT = fetching.RegistryFormat(format=cosign.FORMAT, read=_fetch)
