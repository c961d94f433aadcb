"""Verifying a Model's provenance with the keys and trusted roots it names in the cluster.

One path for the operator (status), ``muster check`` (offline, the objects from files) and
``muster model verify --model``: each hands a reader of Secret and ConfigMap keys and a
registry client; the decision is :mod:`muster.models.rules.provenance`'s. The bundle is the
Model's own (``spec.provenance.bundle``), or else read from its ``ociReference``'s OCI
referrers, as cosign v3 attaches attestation bundles (the referrers API or its tag fallback).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from muster.kernel import references
from muster.models.rules import provenance as modelprovenance
from muster.models.rules import registry as modelregistry
from muster.platform import kubeapi, registries
from muster.signatures import attestationsigs
from muster.signatures.rules import attestations

__all__ = ["Outcome", "condition", "verify", "verify_objects"]

Reader = Callable[[modelprovenance.Source], Awaitable[bytes | None]]
Outcome = tuple[modelprovenance.Verified | None, str, str]  # (facts, reason, message)


def reader(kube: kubeapi.KubeApi) -> Reader:
    """Secret and ConfigMap keys read through ``kube`` (None: the object or key is absent)."""

    async def read(source: modelprovenance.Source) -> bytes | None:
        plural = "secrets" if source.kind == "Secret" else "configmaps"
        try:
            found = await kube.get(f"/api/v1/namespaces/{source.namespace}/{plural}/{source.name}")
        except kubeapi.ApiError as error:
            if error.status == 404:
                return None
            raise
        value = (found.get("data") or {}).get(source.key)
        if not isinstance(value, str):
            return None
        return base64.b64decode(value) if source.kind == "Secret" else value.encode()

    return read


UNAVAILABLE = "ProvenanceUnavailable"


async def _bundles(
    spec: modelregistry.ModelSpec,
    required: modelprovenance.ProvenanceSpec,
    client: registries.RegistryClient | None,
) -> tuple[list[bytes | str], str]:
    """The bundles to judge, and where they were looked for (for messages)."""
    if required.bundle is not None:
        return [required.bundle], ""
    reference = references.parse(spec.oci_reference) if spec.oci_reference else None
    # The spec requires a pinned ociReference without a bundle; a CLI may have no registry.
    if reference is None or reference.digest is None or client is None:
        raise modelprovenance.Unverified(
            modelprovenance.NOT_VERIFIED, "no provenance bundle given and no registry to read"
        )
    found, problems = await attestationsigs.fetch(
        client, reference, reference.digest, [required.wanted_type]
    )
    bundles: list[bytes | str] = [
        item.bundle for item in found if isinstance(item, attestations.BundleAttestation)
    ]
    where = f" among the OCI referrers of {spec.oci_reference}"
    if problems:
        where += f" ({'; '.join(problems[:2])})"
    return bundles, where


async def verify(
    spec: modelregistry.ModelSpec,
    read: Reader,
    client: registries.RegistryClient | None = None,
) -> Outcome:
    """The Model's provenance verified against its digest: the facts, or why not."""
    required = spec.provenance
    if required is None:
        return None, "NoProvenance", "the Model names no provenance"
    data: dict[modelprovenance.Source, bytes] = {}
    try:
        for source in modelprovenance.sources(required):
            found = await read(source)
            if found is not None:
                data[source] = found
        requirement = modelprovenance.requirement(required, data)
        bundles, where = await _bundles(spec, required, client)
        # Keyless bundles verify certificate chains and log proofs: off the event loop.
        verified = await asyncio.to_thread(
            modelprovenance.verify_any,
            requirement,
            bundles,
            digest=spec.digest,
            now=datetime.datetime.now(tz=datetime.UTC),
            where=where,
        )
    except modelprovenance.Unverified as error:
        return None, error.reason, error.message[:900]
    except kubeapi.ApiError as error:
        return None, UNAVAILABLE, f"cannot read a key or root: {error}"[:900]
    except registries.RegistryError as error:
        return None, UNAVAILABLE, f"cannot read the OCI referrers: {error}"[:900]
    return verified, "Verified", verified.summary()[:900]


def condition(outcome: Outcome, generation: object, now: str) -> dict[str, object]:
    """The ProvenanceVerified condition for ``outcome``, for the spec at ``generation``."""
    verified, reason, message = outcome
    return {
        "type": modelprovenance.PROVENANCE_VERIFIED,
        "status": "True" if verified is not None else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": now,
    }


async def verify_objects(
    models: list[Mapping[str, Any]],
    read: Reader,
    now: str,
    client: registries.RegistryClient | None = None,
) -> list[dict[str, Any]]:
    """Model objects (from files) with the provenance they name verified into their status,
    as the operator would write it; others, and invalid ones, unchanged."""
    result: list[dict[str, Any]] = []
    for model in models:
        body = dict(model)
        try:
            spec = modelregistry.ModelSpec.model_validate(body.get("spec") or {})
        except ValueError:
            result.append(body)
            continue
        if spec.provenance is None:
            result.append(body)
            continue
        metadata = dict(body.get("metadata") or {})
        # A manifest from a file has no generation yet: the apiserver would give it 1.
        generation = metadata.setdefault("generation", 1)
        outcome = await verify(spec, read, client)
        status = dict(body.get("status") or {})
        conditions = [
            c
            for c in status.get("conditions") or ()
            if not (isinstance(c, Mapping) and c.get("type") == modelprovenance.PROVENANCE_VERIFIED)
        ]
        status["conditions"] = [*conditions, condition(outcome, generation, now)]
        status["provenance"] = outcome[0].to_status() if outcome[0] is not None else None
        result.append({**body, "metadata": metadata, "status": status})
    return result
