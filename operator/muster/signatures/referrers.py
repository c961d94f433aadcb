"""Sigstore bundles on a registry: OCI 1.1 referrers of the image digest (cosign v3).

Found through the referrers API or its ``sha256-<hex>`` tag fallback (the registry client
decides); each referrer that holds exactly one bundle layer is one piece of evidence, verified
by :mod:`muster.signatures.rules.bundles`. Other referrers (SBOMs, attestations) are skipped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from muster.kernel import references
from muster.platform import registries
from muster.signatures import fetching
from muster.signatures.rules import authorities, bundleformat, formats, proofs

__all__ = ["BUNDLE_ARTIFACT_PREFIX", "FORMAT"]

BUNDLE_ARTIFACT_PREFIX = "application/vnd.dev.sigstore.bundle"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"


async def _fetch(
    client: registries.RegistryClient, reference: references.ImageReference, digest: str
) -> tuple[tuple[bytes, ...], tuple[str, ...]]:
    descriptors = await client.referrers(reference.registry, reference.repository, digest)
    # Registries report a referrer's artifactType differently (ggcr gives the config media
    # type when cosign puts artifactType beside the empty config): also look at manifests
    # that may be bundles, and let their layer decide.
    wanted = [
        descriptor
        for descriptor in descriptors
        if isinstance(descriptor.get("digest"), str)
        and (
            _is_bundle_type(descriptor.get("artifactType"))
            or descriptor.get("artifactType") in (None, "", EMPTY_CONFIG)
        )
    ][: formats.MAX_PER_FORMAT]
    problems: list[str] = []

    async def fetch(descriptor: dict[str, Any]) -> bytes | None:
        what = f"bundle manifest {descriptor['digest']}"
        try:
            found = await fetching.read_referrer(
                client, reference, digest, descriptor["digest"], layer_type=_is_bundle_type
            )
            if isinstance(found, str):
                problems.append(f"{what} {found}")
                return None
            if found is None:
                if _is_bundle_type(descriptor.get("artifactType")):
                    problems.append(f"{what} does not hold exactly one bundle layer")
                return None  # another kind of referrer (an SBOM, an attestation, ...)
            return await client.blob(
                reference.registry,
                reference.repository,
                found.layer["digest"],
                max_bytes=bundleformat.MAX_BUNDLE_BYTES,
            )
        except (registries.NotFound, registries.BlobTooLarge, registries.DigestMismatch) as error:
            problems.append(str(error))
        except (ValueError, registries.RegistryError) as error:
            problems.append(fetching.unreadable(error, what))
        return None

    fetched = await asyncio.gather(*(fetch(descriptor) for descriptor in wanted))
    return tuple(bundle for bundle in fetched if bundle is not None), tuple(problems)


def _is_bundle_type(media_type: object) -> bool:
    return isinstance(media_type, str) and media_type.startswith(BUNDLE_ARTIFACT_PREFIX)


def _verify(bundle: bytes, *, digest: str, authority: authorities.Authority) -> proofs.Proof:
    # Imported on the first bundle: it loads the sigstore library, which an image signed the
    # legacy way (and ``muster image verify`` of one, on every start) does without.
    from muster.signatures.rules import bundles

    return bundles.verify_image(bundle, digest=digest, authority=authority)


FORMAT = fetching.RegistryFormat(format=bundleformat.BundleFormat(_verify), read=_fetch)
