"""Hostile OMS (model_signing) signatures: real signed bundles from the test fixtures with
fields mutated, truncated or replaced, and bundles of any shape. Verification answers with a
SignatureError naming the problem, never another exception and never a pass."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muster.signatures import oms as modelsigs
from tests.unit.models.conftest import transparency

pytestmark = pytest.mark.unit

KEY_BUNDLE = transparency("v1.1.0-elliptic-key", "model.sig")
CERT_BUNDLE = transparency("v1.1.0-certificate", "model.sig")
KEY_PEM = transparency("keys", "certificate", "signing-key-pub.pem").read_bytes()
CA_PEM = transparency("keys", "certificate", "ca-cert.pem").read_bytes()

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3)
    ),
    max_leaves=15,
)
PATHS = st.sampled_from(
    [
        ("dsseEnvelope", "payload"),
        ("dsseEnvelope", "payloadType"),
        ("dsseEnvelope", "signatures"),
        ("dsseEnvelope",),
        ("mediaType",),
        ("verificationMaterial",),
        ("verificationMaterial", "publicKey"),
        ("verificationMaterial", "certificate"),
        ("verificationMaterial", "x509CertificateChain"),
    ]
)


def _set(bundle: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node: Any = bundle
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


def _verify(bundle: Any, which: str) -> modelsigs.Signed:
    if which == "key":
        return modelsigs.verify_with_key(bundle, KEY_PEM)
    return modelsigs.verify_with_certificates(bundle, CA_PEM)


def test_the_unmodified_fixtures_verify() -> None:
    for bundle, which in ((KEY_BUNDLE, "key"), (CERT_BUNDLE, "cert")):
        signed = _verify(modelsigs.read_bundle(bundle), which)
        assert signed.signer, which
        assert signed.manifest.resources, which  # it signs the model's files


@settings(max_examples=150, deadline=1000)
@given(
    which=st.sampled_from(["key", "cert"]),
    path=PATHS,
    value=JSON,
)
def test_a_mutated_signature_never_verifies_and_never_crashes(
    which: str, path: tuple[str, ...], value: Any
) -> None:
    original = modelsigs.read_bundle(KEY_BUNDLE if which == "key" else CERT_BUNDLE)
    bundle = copy.deepcopy(original)
    _set(bundle, path, value)
    if bundle == original:
        return
    try:
        _verify(bundle, which)
    except modelsigs.SignatureError as error:
        assert str(error)
    else:
        # A genuine signature still verifies when only material verification does not rely on
        # changed: anything for a key signature (the key is given), an unused field for a
        # certificate signature. Never a change to what is signed or how.
        assert path[0] == "verificationMaterial", path
        if which == "cert":
            assert path in (
                ("verificationMaterial", "publicKey"),
                ("verificationMaterial", "certificate"),
            ), path


@settings(
    max_examples=100, deadline=1000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.one_of(st.binary(max_size=200), JSON.map(lambda v: json.dumps(v).encode())))
def test_any_signature_file_is_read_or_refused_clearly(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "model.sig"
    path.write_bytes(blob)
    try:
        bundle = modelsigs.read_bundle(path)
    except modelsigs.InputError as error:
        assert str(path) in str(error)
        return
    with pytest.raises(modelsigs.SignatureError):
        _verify(bundle, "key")
