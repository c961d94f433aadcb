"""In-toto attestations on a registry, in both formats cosign writes them.

- cosign v2: the ``sha256-<hex>.att`` manifest beside the image; each layer is a DSSE
  envelope blob whose ``predicateType`` annotation names its predicate.
- cosign v3: Sigstore bundles as OCI 1.1 referrers of the digest (the referrers API or its
  ``sha256-<hex>`` tag fallback, as the registry client decides), their manifests annotated
  with ``dev.sigstore.bundle.predicateType``.

Both are read at once (two round trips in parallel, then the manifests and blobs). Only
artifacts whose annotation names a wanted predicate type (or names none) are read further;
the statement inside decides (:mod:`muster.signatures.rules.attestations`). Unreadable
artifacts are problems to report; registry trouble that makes the answer unknowable is a
``RegistryError`` for the caller to refuse on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import Any

from muster.kernel import references
from muster.platform import registries
from muster.signatures import fetching, referrers
from muster.signatures.rules import attestations, bundleformat, formats

__all__ = ["fetch"]

BUNDLE_PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
MAX_LAYERS = formats.MAX_PER_FORMAT


async def fetch(
    client: registries.RegistryClient,
    reference: references.ImageReference,
    digest: str,
    predicate_types: Collection[str],
) -> tuple[tuple[attestations.Item, ...], tuple[str, ...]]:
    """The attestations about ``digest`` of the wanted predicate types, and the problems."""
    (legacy, legacy_problems), (found, bundle_problems) = await asyncio.gather(
        _legacy(client, reference, digest, predicate_types),
        _bundles(client, reference, digest, predicate_types),
    )
    return found + legacy, bundle_problems + legacy_problems


def _wanted(predicate_type: object, predicate_types: Collection[str]) -> bool:
    return predicate_type is None or predicate_type in predicate_types


async def _legacy(
    client: registries.RegistryClient,
    reference: references.ImageReference,
    digest: str,
    predicate_types: Collection[str],
) -> tuple[tuple[attestations.Item, ...], tuple[str, ...]]:
    algorithm, _, hexdigest = digest.partition(":")
    try:
        manifest = await client.manifest(
            reference.registry, reference.repository, f"{algorithm}-{hexdigest}.att"
        )
    except registries.NotFound:
        return (), ()
    try:
        layers = manifest.json().get("layers")
    except (ValueError, registries.RegistryError):
        return (), ("attestation manifest (.att) is not a JSON object",)
    if not isinstance(layers, list):
        return (), ("attestation manifest (.att) has no layers",)
    chosen = [
        (index, layer)
        for index, layer in enumerate(layers[:MAX_LAYERS])
        if isinstance(layer, dict)
        and layer.get("mediaType") == attestations.DSSE_MEDIA_TYPE
        and isinstance(layer.get("digest"), str)
        and _wanted(_annotations(layer).get(attestations.PREDICATE_ANNOTATION), predicate_types)
    ]
    problems: list[str] = []

    async def read(index: int, layer: dict[str, Any]) -> attestations.Item | None:
        try:
            envelope = await client.blob(
                reference.registry,
                reference.repository,
                layer["digest"],
                max_bytes=attestations.MAX_ENVELOPE_BYTES,
            )
        except (registries.NotFound, registries.BlobTooLarge, registries.DigestMismatch) as error:
            problems.append(f"attestation layer {index + 1}: {error}")
            return None
        return attestations.LegacyAttestation(
            index=index, envelope=envelope, annotations=_annotations(layer)
        )

    read_ = await asyncio.gather(*(read(index, layer) for index, layer in chosen))
    return tuple(item for item in read_ if item is not None), tuple(problems)


def _annotations(document: Mapping[str, Any]) -> dict[str, str]:
    annotations = document.get("annotations")
    if not isinstance(annotations, dict):
        return {}
    return {k: v for k, v in annotations.items() if isinstance(k, str) and isinstance(v, str)}


async def _bundles(
    client: registries.RegistryClient,
    reference: references.ImageReference,
    digest: str,
    predicate_types: Collection[str],
) -> tuple[tuple[attestations.Item, ...], tuple[str, ...]]:
    descriptors = await client.referrers(reference.registry, reference.repository, digest)
    # Signature bundles name the cosign sign predicate: never an attestation a policy asks for.
    chosen = [
        descriptor
        for descriptor in descriptors
        if isinstance(descriptor.get("digest"), str)
        and _maybe_bundle(descriptor.get("artifactType"))
        and _wanted(_annotations(descriptor).get(BUNDLE_PREDICATE_ANNOTATION), predicate_types)
    ][:MAX_LAYERS]
    problems: list[str] = []

    async def read(descriptor: dict[str, Any]) -> attestations.Item | None:
        what = f"attestation bundle manifest {descriptor['digest']}"
        try:
            found = await fetching.read_referrer(
                client, reference, digest, descriptor["digest"], layer_type=_is_bundle
            )
            if isinstance(found, str):
                problems.append(f"{what} {found}")
                return None
            if found is None:
                return None  # another kind of referrer (an SBOM as a plain artifact, ...)
            predicate_type = _annotations(found.document).get(BUNDLE_PREDICATE_ANNOTATION)
            if not _wanted(predicate_type, predicate_types):
                return None
            bundle = await client.blob(
                reference.registry,
                reference.repository,
                found.layer["digest"],
                max_bytes=bundleformat.MAX_BUNDLE_BYTES,
            )
            return attestations.BundleAttestation(bundle, predicate_type)
        except (registries.NotFound, registries.BlobTooLarge, registries.DigestMismatch) as error:
            problems.append(str(error))
        except (ValueError, registries.RegistryError) as error:
            problems.append(fetching.unreadable(error, what))
        return None

    read_ = await asyncio.gather(*(read(descriptor) for descriptor in chosen))
    return tuple(item for item in read_ if item is not None), tuple(problems)


def _is_bundle(media_type: object) -> bool:
    return isinstance(media_type, str) and media_type.startswith(referrers.BUNDLE_ARTIFACT_PREFIX)


def _maybe_bundle(artifact_type: object) -> bool:
    # As for signature bundles: some registries report the empty config's media type.
    return _is_bundle(artifact_type) or artifact_type in (None, "", referrers.EMPTY_CONFIG)
