"""Notation (Notary Project) signatures on a registry: OCI 1.1 referrers of the image digest.

``notation sign`` pushes each signature as a manifest whose artifactType is
``application/vnd.cncf.notary.signature``, whose subject is the signed manifest and whose one
layer is the JWS or COSE envelope. They are found through the referrers API (or its
``sha256-<hex>`` tag fallback, as the registry client decides); each such referrer is one piece
of evidence, verified by :mod:`muster.signatures.rules.notation`. Only policies with a Notation
authority ask for them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from muster.kernel import references
from muster.platform import registries
from muster.signatures import fetching
from muster.signatures.rules import formats, notation, notationformat

__all__ = ["FORMAT"]

_ENVELOPE_TYPES = (notation.JWS_MEDIA_TYPE, notation.COSE_MEDIA_TYPE)


async def _fetch(
    client: registries.RegistryClient, reference: references.ImageReference, digest: str
) -> tuple[tuple[notation.Envelope, ...], tuple[str, ...]]:
    descriptors = await client.referrers(
        reference.registry, reference.repository, digest, notation.SIGNATURE_ARTIFACT_TYPE
    )
    wanted = [
        descriptor
        for descriptor in descriptors
        if isinstance(descriptor.get("digest"), str)
        and descriptor.get("artifactType") == notation.SIGNATURE_ARTIFACT_TYPE
    ][: formats.MAX_PER_FORMAT]
    problems: list[str] = []

    async def fetch(descriptor: dict[str, Any]) -> notation.Envelope | None:
        what = f"Notation signature manifest {descriptor['digest']}"
        try:
            found = await fetching.read_referrer(
                client,
                reference,
                digest,
                descriptor["digest"],
                layer_type=lambda media_type: media_type in _ENVELOPE_TYPES,
            )
            if isinstance(found, str):
                problems.append(f"{what} {found}")
                return None
            if found is None:
                problems.append(f"{what} does not hold exactly one JWS or COSE envelope")
                return None
            blob = await client.blob(
                reference.registry,
                reference.repository,
                found.layer["digest"],
                max_bytes=notation.MAX_ENVELOPE_BYTES,
            )
            return notation.Envelope(found.layer["mediaType"], blob)
        except (ValueError, registries.RegistryError) as error:
            problems.append(fetching.unreadable(error, what))
        return None

    fetched = await asyncio.gather(*(fetch(descriptor) for descriptor in wanted))
    return tuple(found for found in fetched if found is not None), tuple(problems)


FORMAT = fetching.RegistryFormat(format=notationformat.FORMAT, read=_fetch, notation=True)
