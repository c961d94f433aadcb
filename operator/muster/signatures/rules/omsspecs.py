"""How a Model's or Dataset's OpenSSF Model Signing (OMS) signature is to be verified.

Models and Datasets are signed the same way (a ``model.sig`` bundle over the OMS root digest)
and name their verifier with the same spec, so it lives here, below both areas. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated

import pydantic
from pydantic import alias_generators

from muster.signatures.rules import oms

__all__ = [
    "SIGNATURE_VERIFIED",
    "DigestText",
    "Keyless",
    "SecretKeyRef",
    "SignatureSpec",
    "SourceText",
    "hashing_of",
    "signature_verified",
]

# The status condition the operator writes after checking the signature.
SIGNATURE_VERIFIED = "SignatureVerified"

_CONFIG = pydantic.ConfigDict(
    extra="forbid",
    frozen=True,
    alias_generator=alias_generators.to_camel,
    populate_by_name=True,
)
DigestText = Annotated[str, pydantic.StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
SourceText = Annotated[
    str, pydantic.StringConstraints(pattern=r"^(hf|s3|gs|az|oci|pvc|https?)://\S+$")
]


class SecretKeyRef(pydantic.BaseModel):
    """A key of a Secret holding a public key PEM."""

    model_config = _CONFIG

    name: str = pydantic.Field(min_length=1)
    namespace: str = pydantic.Field(min_length=1)
    key: str = "key.pub"


class Keyless(pydantic.BaseModel):
    """The Sigstore keyless signer: certificate identity and OIDC issuer, matched exactly."""

    model_config = _CONFIG

    identity: str = pydantic.Field(min_length=1)
    issuer: str = pydantic.Field(min_length=1)


class SignatureSpec(pydantic.BaseModel):
    """How the OMS signature must verify; ``bundle`` is the ``model.sig`` JSON."""

    model_config = _CONFIG

    bundle: str | None = pydantic.Field(default=None, description="the OMS signature (JSON)")
    public_key: str | None = pydantic.Field(default=None, description="EC public key, PEM")
    public_key_secret_ref: SecretKeyRef | None = None
    keyless: Keyless | None = None

    @pydantic.model_validator(mode="after")
    def _one_verifier(self) -> SignatureSpec:
        chosen = [self.public_key, self.public_key_secret_ref, self.keyless]
        if sum(item is not None for item in chosen) != 1:
            raise ValueError("give exactly one of publicKey, publicKeySecretRef or keyless")
        if self.bundle is not None:
            try:
                parsed = json.loads(self.bundle)
            except ValueError as error:
                raise ValueError(f"bundle is not JSON ({error})") from None
            if not isinstance(parsed, dict) or "dsseEnvelope" not in parsed:
                raise ValueError("bundle is not a Sigstore bundle with a DSSE envelope")
        return self


def hashing_of(signature: SignatureSpec | None) -> oms.Serialization:
    """How the signed digest was hashed (algorithm, files or shards): as the signature says,
    else model_signing's default (files, sha256). The node re-measures the same way; an
    unreadable signature falls back to the default, so the digest still decides."""
    if signature is None or signature.bundle is None:
        return oms.Serialization()
    try:
        bundle = json.loads(signature.bundle)
        signed = oms.serialization_of_bundle(bundle if isinstance(bundle, dict) else {})
    except ValueError:  # OmsError, JSON errors
        return oms.Serialization()
    return signed.hashing


def signature_verified(status: object, generation: object) -> bool:
    """Whether ``status`` says the signature of the spec at ``generation`` verified.

    The condition counts only with its own ``observedGeneration`` equal to the object's
    ``metadata.generation``: a status written for an earlier spec (stale, or forged before the
    spec was changed) approves nothing, and neither does one without a generation.
    """
    if not isinstance(status, Mapping) or not isinstance(generation, int) or generation < 1:
        return False
    return any(
        isinstance(c, Mapping)
        and c.get("type") == SIGNATURE_VERIFIED
        and c.get("status") == "True"
        and c.get("observedGeneration") == generation
        for c in status.get("conditions") or ()
    )
