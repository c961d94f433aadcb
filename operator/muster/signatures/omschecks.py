"""Checking the OMS signature a Model or Dataset names, as its ``SignatureVerified`` condition.

Models and Datasets are signed the same way (a ``model.sig`` bundle over the OMS root digest)
and name their verifier with the same :class:`~muster.signatures.rules.omsspecs.SignatureSpec`:
a public key inline or in a Secret, or a Sigstore keyless identity. The answer is the
condition's status, reason and message, so both areas report a signature in the same words.
"""

from __future__ import annotations

import asyncio
import base64
import json

from muster.platform import kubeapi
from muster.signatures import oms as omssigs
from muster.signatures.rules import oms, omsspecs

__all__ = ["check"]


async def check(
    kube: kubeapi.KubeApi, signature: omsspecs.SignatureSpec | None, digest: str, *, kind: str
) -> tuple[str, str, str]:
    """("True"|"False", reason, message) for the signature of the ``kind`` ("Model",
    "Dataset") whose OMS root digest is ``digest``."""
    if signature is None:
        return "False", "NoSignature", f"the {kind} names no signature"
    if signature.bundle is None:
        return "False", "NoBundle", f"the {kind} carries no signature bundle (model.sig)"
    bundle = json.loads(signature.bundle)  # validated JSON object by the spec model
    try:
        if signature.keyless is not None:
            keyless = signature.keyless
            signed = await asyncio.to_thread(
                omssigs.verify_with_sigstore, bundle, keyless.identity, keyless.issuer
            )
        else:
            pem = await _public_key(kube, signature, kind)
            signed = omssigs.verify_with_key(bundle, pem)
    except (omssigs.SignatureError, kubeapi.ApiError, oms.OmsError) as error:
        return "False", "SignatureInvalid", str(error)[:900]
    if signed.manifest.digest != digest:
        return (
            "False",
            "DigestMismatch",
            f"the signature signs {signed.manifest.digest}, the {kind} says {digest}",
        )
    return "True", "Verified", f"signed by {signed.signer}"


async def _public_key(kube: kubeapi.KubeApi, signature: omsspecs.SignatureSpec, kind: str) -> bytes:
    if signature.public_key is not None:
        return signature.public_key.encode()
    ref = signature.public_key_secret_ref
    if ref is None:
        raise omssigs.InputError(f"the {kind} names no public key")
    secret = await kube.get(f"/api/v1/namespaces/{ref.namespace}/secrets/{ref.name}")
    data = (secret.get("data") or {}).get(ref.key)
    if not isinstance(data, str):
        raise omssigs.InputError(f"Secret {ref.namespace}/{ref.name} has no key {ref.key!r}")
    return base64.b64decode(data)
