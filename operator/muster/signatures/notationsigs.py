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
from muster.signatures.rules import authorities, formats, notation, notationformat

__all__ = ["FORMAT"]

_ENVELOPE_TYPES = (notation.JWS_MEDIA_TYPE, notation.COSE_MEDIA_TYPE)


class _Notation:
    format: formats.Format = notationformat.FORMAT

    def serves(self, authority: authorities.Authority) -> bool:
        return isinstance(authority, authorities.NotationAuthority)

    async def fetch(
        self,
        client: registries.RegistryClient,
        reference: references.ImageReference,
        digest: str,
    ) -> fetching.Fetched:
        found, problems = await _fetch(client, reference, digest)
        return fetching.Fetched(formats.Found(notationformat.FORMAT, found), problems)


FORMAT = _Notation()


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
            manifest = await client.manifest(
                reference.registry, reference.repository, descriptor["digest"]
            )
            document = manifest.json()
            subject = document.get("subject")
            if not isinstance(subject, dict) or subject.get("digest") != digest:
                problems.append(f"{what} does not name the image as its subject")
                return None
            layers = document.get("layers")
            if (
                not isinstance(layers, list)
                or len(layers) != 1
                or not isinstance(layers[0], dict)
                or layers[0].get("mediaType") not in _ENVELOPE_TYPES
                or not isinstance(layers[0].get("digest"), str)
            ):
                problems.append(f"{what} does not hold exactly one JWS or COSE envelope")
                return None
            blob = await client.blob(
                reference.registry,
                reference.repository,
                layers[0]["digest"],
                max_bytes=notation.MAX_ENVELOPE_BYTES,
            )
            return notation.Envelope(layers[0]["mediaType"], blob)
        except (registries.NotFound, registries.BlobTooLarge, registries.DigestMismatch) as error:
            problems.append(f"{what}: {error}")
        except (ValueError, registries.RegistryError) as error:
            if isinstance(error, registries.Unavailable | registries.Unauthorized):
                raise
            problems.append(f"{what}: {error}")
        return None

    fetched = await asyncio.gather(*(fetch(descriptor) for descriptor in wanted))
    return tuple(found for found in fetched if found is not None), tuple(problems)
