"""Where signing authorities come from, as policies write them: keys, keyless identities and
trusted roots, inline or in ConfigMaps and Secrets.

The spec types (pydantic, so the CRDs are generated from them) that ImagePolicy authorities and
attestations and a Model's provenance share; compiled into :mod:`authorities` types by the
policy that holds them, once its references are read.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic
from pydantic import alias_generators

from muster.signatures.rules import authorities

__all__ = [
    "DEFAULT_TRUSTED_ROOT_KEY",
    "DnsName",
    "IdentitySpec",
    "KeyName",
    "KeylessSpec",
    "PublicKeySource",
    "SecretKeyRef",
    "TrustedRootRef",
]

DEFAULT_TRUSTED_ROOT_KEY = "trusted_root.json"

_CONFIG = pydantic.ConfigDict(
    extra="forbid",
    frozen=True,
    alias_generator=alias_generators.to_camel,
    populate_by_name=True,
    # Validators are built on first use: a command builds only those it validates with.
    defer_build=True,
)
_DNS_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
_KEY_NAME = r"^[-._a-zA-Z0-9]{1,253}$"
DnsName = Annotated[str, pydantic.StringConstraints(pattern=_DNS_NAME)]
KeyName = Annotated[str, pydantic.StringConstraints(pattern=_KEY_NAME)]


class SecretKeyRef(pydantic.BaseModel):
    """One key of a Secret in a named namespace."""

    model_config = _CONFIG

    namespace: DnsName
    name: DnsName
    key: KeyName


class TrustedRootRef(pydantic.BaseModel):
    """A Sigstore ``trusted_root.json`` held by a ConfigMap or a Secret (air-gapped roots)."""

    model_config = _CONFIG

    kind: Literal["ConfigMap", "Secret"] = "ConfigMap"
    namespace: DnsName
    name: DnsName
    key: KeyName = DEFAULT_TRUSTED_ROOT_KEY


class PublicKeySource(pydantic.BaseModel):
    """A public key (PEM: ECDSA P-256/P-384, Ed25519, RSA), inline or from a Secret."""

    model_config = _CONFIG

    data: str | None = pydantic.Field(default=None, description="inline PEM public key")
    secret_ref: SecretKeyRef | None = None
    trusted_root: TrustedRootRef | None = pydantic.Field(
        default=None,
        description="when set, signatures must also carry a transparency-log entry it trusts",
    )

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> PublicKeySource:
        if (self.data is None) == (self.secret_ref is None):
            raise ValueError("give exactly one of data and secretRef")
        return self


class IdentitySpec(pydantic.BaseModel):
    """A keyless signer: OIDC issuer and certificate subject, each exact or a full-match regexp."""

    model_config = _CONFIG

    issuer: str | None = None
    issuer_reg_exp: str | None = None
    subject: str | None = None
    subject_reg_exp: str | None = None

    @pydantic.model_validator(mode="after")
    def _checked(self) -> IdentitySpec:
        try:
            self.identity()
        except authorities.InvalidPolicy as error:
            raise ValueError(str(error).replace("_regexp", "RegExp")) from None
        return self

    def identity(self) -> authorities.Identity:
        return authorities.Identity(
            issuer=self.issuer,
            subject=self.subject,
            issuer_regexp=self.issuer_reg_exp,
            subject_regexp=self.subject_reg_exp,
        )


class KeylessSpec(pydantic.BaseModel):
    model_config = _CONFIG

    identities: tuple[IdentitySpec, ...] = pydantic.Field(min_length=1)
    trusted_root: TrustedRootRef
