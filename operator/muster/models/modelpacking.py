"""Reading a Model's ModelPack artifact from its registry for ``status.modelPack``.

The manifest is fetched by the digest the Model pins and the config blob checked against the
manifest's descriptor (the registry client checks both digests), so what the status shows is
what the approved digest holds. It is description, not a decision: an artifact that cannot be
read leaves ``status.modelPack`` empty and says why in the log, and admission still decides by
digest.
"""

from __future__ import annotations

import logging
from typing import Any

from muster.kernel import references
from muster.models.rules import modelpack
from muster.models.rules import registry as modelregistry
from muster.platform import registries

__all__ = ["status_of"]

logger = logging.getLogger("muster.models")


async def status_of(
    spec: modelregistry.ModelSpec, client: registries.RegistryClient | None
) -> dict[str, Any] | None:
    """``status.modelPack`` for the Model (None: no ociReference, not a ModelPack, unreadable)."""
    if spec.oci_reference is None or client is None:
        return None
    reference = references.parse(spec.oci_reference)
    if reference.digest is None:  # pragma: no cover - the spec requires a pinned reference
        return None
    try:
        manifest = (
            await client.manifest(reference.registry, reference.repository, reference.digest)
        ).json()
        if not modelpack.is_modelpack(manifest):
            return None
        digest, _ = modelpack.config_descriptor(manifest)
        raw = await client.blob(
            reference.registry, reference.repository, digest, max_bytes=modelpack.MAX_CONFIG_BLOB
        )
        return modelpack.status(manifest, raw)
    except (registries.RegistryError, modelpack.ModelPackError, ValueError) as error:
        logger.warning("cannot read the ModelPack artifact %s: %s", spec.oci_reference, error)
        return None
